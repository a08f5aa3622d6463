/**
 * The Integration Manager's byte bound on a subscriber that stops reading. libzmq queues a
 * subscriber's publications in the IM up to a high-water mark counted in messages, so 16,384
 * publications of 100 KB would hold 1.6 GB for one stalled subscriber. The guard bounds it in
 * bytes instead: every {@linkcode GUARD_INTERVAL_MS} it asks the kernel about each subscriber
 * connection. One whose send buffer is full and whose queued bytes have not moved since the last
 * look has a reader that reads nothing (stopped, hung, or not reading its socket), and while it
 * stays so libzmq's queue for it can only grow by what the IM publishes. Once the IM has
 * published more than the budget (`subscriber_buffer`) since that connection was last seen
 * reading, the guard names it, and the IM disconnects it: libzmq then frees its queue. The
 * subscriber's socket connects again by itself and misses what was published meanwhile.
 *
 * A reader that reads, however slowly, moves its queue and is not cut: a full buffer alone is no
 * sign of a backlog (a healthy client with many large finals on their way keeps it full, and was
 * cut when the rule looked at fullness alone). Its queue is bounded by the publish socket's
 * high-water mark in messages instead.
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
 * const stalled = (ids: readonly number[]) => ids.map(() => ({ full: true, queued: 212_992 }));
 * guard.sample(stalled); // [] (its queue was not seen before)
 * guard.published(1200);
 * guard.sample(stalled); // [{ id: 7, behind: 1200 }]
 * ```
 */
export class SubscriberGuard {
  /** Bytes a connection may fall behind before it is named. */
  readonly budget: number;
  #published = 0;
  /** Each connection's mark: the publication count when it was last seen reading. */
  readonly #marks = new Map<number, number>();
  /** Each connection's queued bytes at the last look. */
  readonly #queued = new Map<number, number>();

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
    this.#queued.delete(id);
  }

  /**
   * Looks at every connection: `state(ids)` gives each one's send queue (full, and bytes queued),
   * or `undefined` for one that is gone (it is forgotten). Returns those to disconnect,
   * forgetting them.
   */
  sample(
    state: (ids: readonly number[]) => readonly ({ full: boolean; queued: number } | undefined)[],
  ): SlowSubscriber[] {
    const ids = [...this.#marks.keys()];
    const states = state(ids);
    const slow: SlowSubscriber[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const mark = this.#marks.get(id)!;
      const st = states[i];
      if (st === undefined) {
        this.disconnected(id);
        continue;
      }
      const before = this.#queued.get(id);
      this.#queued.set(id, st.queued);
      if (!st.full || st.queued !== before) {
        this.#marks.set(id, this.#published);
        continue;
      }
      const behind = this.#published - mark;
      if (behind > this.budget) {
        this.disconnected(id);
        slow.push({ id, behind });
      }
    }
    return slow;
  }
}
