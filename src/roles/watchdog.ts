/**
 * A worker process's watchdog: a Web Worker (its own thread) that watches the worker's event
 * loop through a shared buffer. A handler that blocks the loop (`while (true) {}`, a long
 * synchronous computation) stops the worker's heartbeats, its other steps and every other
 * handler. When the loop has not turned for `stallAfter` ms while a handler was running, the
 * watchdog tells the Subject which step it was (`STUCK`, on a socket of its own), so the
 * Subject counts a failed delivery against that step alone and gives the worker's other steps
 * to other workers at once. When the loop stays blocked past `killAfter` ms (the handler
 * timeout), the watchdog kills the process, so its supervisor replaces it instead of leaving
 * a process spinning at 100% CPU forever.
 *
 * The shared buffer holds three numbers, written by the worker's thread
 * ({@linkcode LoopMonitor}): when the loop last turned, the dispatch number of the step whose
 * handler is running synchronously now (0: none) and when it started (`Date.now()`, which
 * both threads share).
 *
 * @module
 */

import { Context, type SocketOptions } from "../zmq/socket.ts";
import { stuckReport } from "../wire/control.ts";

/** What the watchdog thread is started with. */
export interface WatchdogSetup {
  /** The monitor's shared buffer. */
  readonly buffer: SharedArrayBuffer;
  /** The Subject's worker endpoint. */
  readonly subjectAddress: string;
  /** The CURVE client options for that endpoint (none on ipc or without keys). */
  readonly curve?: SocketOptions;
  /** The worker's routing id, as the Subject knows it. */
  readonly worker: string;
  /** The secret the worker gave the Subject (`watch` in its `READY` and `HB`), sent with each report. */
  readonly token: string;
  /** Milliseconds of a blocked loop before the Subject is told which step blocks it. */
  readonly stallAfter: number;
  /** Milliseconds of a blocked loop before the process is killed. */
  readonly killAfter: number;
}

const BEAT = 0;
const STEP = 1;
const SINCE = 2;

/**
 * How often the worker's thread marks that its loop turned, for a watchdog that reports a stall
 * after `stallAfter` ms: a tenth of it, from 20 ms to 250 ms (an idle worker wakes 4 times a
 * second for it by default).
 */
export function loopBeatMs(stallAfter: number): number {
  return Math.max(20, Math.min(250, Math.floor(stallAfter / 10)));
}

/** The worker thread's side: marks loop turns and the step whose handler runs now. */
export class LoopMonitor {
  readonly buffer = new SharedArrayBuffer(3 * 8);
  readonly #slots = new Float64Array(this.buffer);
  readonly #timer: ReturnType<typeof setInterval>;

  /** Marks a loop turn every `beatMs` ms. */
  constructor(beatMs: number) {
    this.#slots[BEAT] = Date.now();
    this.#timer = setInterval(() => this.#slots[BEAT] = Date.now(), beatMs);
    Deno.unrefTimer(this.#timer);
  }

  /** A handler for step `d` starts running synchronously. */
  enter(d: number): void {
    this.#slots[STEP] = d;
    this.#slots[SINCE] = Date.now();
  }

  /** The handler returned (or returned a promise). */
  leave(): void {
    this.#slots[STEP] = 0;
  }

  /** Stops marking. */
  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Starts the watchdog thread for this process; returns a function that stops it. */
export function startWatchdog(setup: WatchdogSetup): () => void {
  const w = new Worker(new URL("./watchdog.ts", import.meta.url).href, { type: "module" });
  w.postMessage(setup);
  return () => w.terminate();
}

/** The watchdog thread's loop. */
function watch(setup: WatchdogSetup): void {
  const slots = new Float64Array(setup.buffer);
  let reported = 0; // the step reported for the current stall
  setInterval(() => {
    const now = Date.now();
    const blocked = now - slots[BEAT];
    if (blocked < setup.stallAfter) {
      reported = 0;
      return;
    }
    const d = slots[STEP];
    if (d && d !== reported && now - slots[SINCE] >= setup.stallAfter) {
      reported = d;
      report(setup, d, Math.round(now - slots[SINCE]));
    }
    if (blocked >= setup.killAfter) {
      console.error(
        `[watchdog] worker ${setup.worker}: its event loop has been blocked for ${Math.round(blocked)} ms ` +
          `(a handler that never returns${d ? `, step ${d}` : ""}); killing the process so it is replaced`,
      );
      Deno.kill(Deno.pid, "SIGKILL");
    }
  }, 2 * loopBeatMs(setup.stallAfter));
}

/** Tells the Subject which step blocks the worker, on a socket of the watchdog's own. */
function report(setup: WatchdogSetup, d: number, ms: number): void {
  try {
    const ctx = new Context();
    const s = ctx.socket("DEALER", { ...setup.curve, routingId: `${setup.worker}!watchdog`, linger: 1000 });
    s.connect(setup.subjectAddress);
    s.trySend(stuckReport({ worker: setup.worker, d, ms, token: setup.token }));
    s.close();
    void ctx.terminate(1000);
  } catch (e) {
    console.error(`[watchdog] could not tell the Subject: ${(e as Error).message}`);
  }
}

// Inside the Web Worker: wait for the setup, then watch.
if (typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  self.addEventListener("message", (e) => watch((e as MessageEvent<WatchdogSetup>).data), { once: true });
}
