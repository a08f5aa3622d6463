/**
 * A thread's event loop as another thread sees it, through a shared buffer: when the loop last
 * turned, the dispatch number of the step whose handler runs synchronously now (0: none), when
 * it started (`Date.now()`, which every thread shares) and its time limit. A worker's watchdog
 * thread reads it (`watchdog.ts`), and so does a worker's main thread for each handler sandbox
 * (`sandbox.ts`).
 *
 * @module
 */

/** Slots of the shared buffer. */
export const SLOT = Object.freeze({ BEAT: 0, STEP: 1, SINCE: 2, LIMIT: 3 } as const);

/**
 * How often the watched thread marks that its loop turned, for a watcher that reports a stall
 * after `stallAfter` ms: a tenth of it, from 20 ms to 250 ms (an idle thread wakes 4 times a
 * second for it by default).
 */
export function loopBeatMs(stallAfter: number): number {
  return Math.max(20, Math.min(250, Math.floor(stallAfter / 10)));
}

/** The watched thread's side: marks loop turns and the step whose handler runs now. */
export class LoopMonitor {
  readonly buffer: SharedArrayBuffer;
  readonly #slots: Float64Array;
  readonly #now: () => number;
  readonly #timer: ReturnType<typeof setInterval>;

  /**
   * Marks a loop turn every `beatMs` ms. A handler sandbox gives the buffer, clock and timer it
   * took before handler code ran (`sandbox_guard.ts`).
   */
  constructor(
    beatMs: number,
    own?: {
      readonly buffer: SharedArrayBuffer;
      readonly slots: Float64Array;
      readonly now: () => number;
      readonly timer: { set: typeof setInterval; unref: typeof Deno.unrefTimer };
    },
  ) {
    this.buffer = own?.buffer ?? new SharedArrayBuffer(4 * 8);
    const slots = this.#slots = own?.slots ?? new Float64Array(this.buffer);
    const now = this.#now = own?.now ?? Date.now;
    slots[SLOT.BEAT] = now();
    this.#timer = (own?.timer.set ?? setInterval)(() => slots[SLOT.BEAT] = now(), beatMs);
    (own?.timer.unref ?? Deno.unrefTimer)(this.#timer);
  }

  /** A handler for step `d` starts running synchronously; it may run `limitMs` (0: not said). */
  enter(d: number, limitMs = 0): void {
    this.#slots[SLOT.STEP] = d;
    this.#slots[SLOT.SINCE] = this.#now();
    this.#slots[SLOT.LIMIT] = limitMs;
  }

  /** The handler returned (or returned a promise). */
  leave(): void {
    this.#slots[SLOT.STEP] = 0;
  }

  /** Stops marking. */
  stop(): void {
    clearInterval(this.#timer);
  }
}
