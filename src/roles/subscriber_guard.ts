/**
 * The Integration Manager's byte bound on a subscriber that does not keep up. libzmq queues a
 * subscriber's publications in the IM up to a high-water mark counted in messages, so 16,384
 * publications of 100 KB would hold 1.6 GB for one stalled subscriber. The guard bounds it in
 * bytes instead: every {@linkcode GUARD_INTERVAL_MS} it asks the kernel whether each subscriber
 * connection would take more bytes; one that would not (its send buffer is full) has a reader
 * that is not keeping up, and while it stays so libzmq's queue for it can only grow by what the
 * IM publishes. Once the IM has published more than the budget (`subscriber_buffer`)
 * since that connection was last seen keeping up, the guard names it, and the IM disconnects it:
 * libzmq then frees its queue. The subscriber's socket connects again by itself and misses what
 * was published meanwhile.
 *
 * Pure: the caller counts publications and supplies each connection's state.
 *
 * @module
 */

/** Milliseconds between two looks at the subscriber connections. */
export const GUARD_INTERVAL_MS = 100;

/** Bytes libzmq keeps per frame queued for a subscriber besides its content (a `zmq_msg_t`). */
export const FRAME_OVERHEAD = 64;

/** A connection the guard says to disconnect. */
export interface SlowSubscriber {
  /** The connection (the IM uses its file descriptor). */
  readonly id: number;
  /** Bytes published since it was last seen keeping up. */
  readonly behind: number;
}

/** The bytes a publication of these frames costs a subscriber's queue. */
export function publicationBytes(frames: readonly Uint8Array[]): number {
  let n = frames.length * FRAME_OVERHEAD;
  for (const f of frames) n += f.length;
  return n;
}

/**
 * Tracks subscriber connections against a byte budget.
 *
 * @example
 * ```ts
 * import { SubscriberGuard } from "./subscriber_guard.ts";
 * const guard = new SubscriberGuard(1000);
 * guard.connected(7);
 * guard.published(600);
 * const allFull = (ids: readonly number[]) => ids.map(() => true);
 * guard.sample(allFull); // [] (600 bytes behind)
 * guard.published(600);
 * guard.sample(allFull); // [{ id: 7, behind: 1200 }]
 * ```
 */
export class SubscriberGuard {
  /** Bytes a connection may fall behind before it is named. */
  readonly budget: number;
  #published = 0;
  /** Each connection's mark: the publication count when it was last seen keeping up. */
  readonly #marks = new Map<number, number>();

  /** A guard allowing `budget` bytes behind. */
  constructor(budget: number) {
    this.budget = budget;
  }

  /** Connections tracked. */
  get size(): number {
    return this.#marks.size;
  }

  /** Bytes handed to the publish socket so far. */
  get total(): number {
    return this.#published;
  }

  /** Counts `bytes` handed to the publish socket. */
  published(bytes: number): void {
    this.#published += bytes;
  }

  /** A subscriber connected. */
  connected(id: number): void {
    this.#marks.set(id, this.#published);
  }

  /** A subscriber connection is gone. */
  disconnected(id: number): void {
    this.#marks.delete(id);
  }

  /**
   * Looks at every connection: `full(ids)` says for each whether its send buffer is full, or
   * `undefined` for one that is gone (it is forgotten). Returns those to disconnect, forgetting
   * them.
   */
  sample(full: (ids: readonly number[]) => readonly (boolean | undefined)[]): SlowSubscriber[] {
    const ids = [...this.#marks.keys()];
    const states = full(ids);
    const slow: SlowSubscriber[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const mark = this.#marks.get(id)!;
      if (states[i] === undefined) {
        this.#marks.delete(id);
        continue;
      }
      if (!states[i]) {
        this.#marks.set(id, this.#published);
        continue;
      }
      const behind = this.#published - mark;
      if (behind > this.budget) {
        this.#marks.delete(id);
        slow.push({ id, behind });
      }
    }
    return slow;
  }
}
