/**
 * The Integration Manager's byte bound on a subscriber that stops reading. libzmq queues a
 * subscriber's publications in the IM up to a high-water mark counted in messages, so 16,384
 * publications of 100 KB would hold 1.6 GB for one stalled subscriber. The guard bounds it in
 * bytes instead: every {@linkcode GUARD_INTERVAL_MS} it asks the kernel about each subscriber
 * connection. One whose send buffer is not full, or whose queued bytes fell since the last look,
 * is reading; what it is behind counts from then (its mark). (More bytes queued proves nothing:
 * libzmq filling the buffer of a reader that stopped raises the figure too.)
 *
 * A full buffer whose figure did not fall is no proof that nothing was read. With publications
 * larger than a quarter of the kernel's buffer, a reader that reads but is behind shows the same
 * figure at every look (one publication queued: libzmq writes the next as soon as the reader takes
 * one), exactly like a stopped one; cutting on that figure alone disconnected live clients and
 * lost their finals. So once such a connection is a quarter of the budget (`subscriber_buffer`)
 * behind, the guard asks the caller to watch it for {@linkcode WATCH_MS} (did its reader take any
 * bytes? `subscriber_watch.ts` tells for certain) and to report {@linkcode SubscriberGuard.reading}
 * or {@linkcode SubscriberGuard.unread}. A connection is cut once it is more than the budget
 * behind and {@linkcode WATCHES_TO_CUT} watches since it was last seen reading saw it take
 * nothing (one can fall between two takes of a reader that takes a batch at a time); libzmq then
 * frees its queue, and the subscriber's socket connects again by itself and misses what was
 * published meanwhile.
 *
 * What a connection is behind is also bounded by its queue's limit in publications (the publish
 * socket's high-water mark) times the largest publication since it was last seen reading: libzmq
 * holds no more for it. With small publications that bound is under the budget, so such readers
 * are never cut (cutting them would bound nothing), however seldom the kernel sees them read.
 *
 * A reader that takes bytes during a watch is not cut: its queue is bounded by the publish
 * socket's high-water mark in messages instead.
 *
 * A tcp connection also tells how many bytes have left libzmq's queue for it (what its peer
 * acknowledged plus what the kernel still holds: {@linkcode ConnectionLook.sent}). That is not
 * proof of a reader: a stopped subscriber's kernel keeps acknowledging into its receive buffer
 * until that is full. So a full tcp connection keeps a second mark, moved on by the bytes that
 * left, never to the latest publication: what libzmq can still hold for it. A connection that
 * took nothing in {@linkcode WATCHES_TO_CUT_LONG} watches in a row while that is more than the
 * budget is cut too, even if nothing was published since: a subscriber stopped while a burst was
 * queued for it (marking it caught up when its kernel acknowledged left that burst in the IM's
 * memory for good). The second mark counts every publication, also those of topics the
 * subscriber does not take, so it is only trusted after that longer stall: a subscriber of a
 * narrow prefix that pauses a few hundred ms is judged by the first mark alone.
 *
 * Pure: the caller counts publications, supplies each connection's state and does the watching.
 *
 * @module
 */

/** Milliseconds between two looks at the subscriber connections. */
export const GUARD_INTERVAL_MS = 100;

/**
 * Milliseconds a watch lasts at least: it ends at the first look this long after the one that
 * began it (at most load, the next look).
 */
export const WATCH_MS = 90;

/** Watches in a row that must see a connection take nothing before it is cut. */
export const WATCHES_TO_CUT = 3;

/**
 * Watches in a row that must see a tcp connection take nothing before it is cut on what libzmq
 * can still hold for it (its second mark), though little was published since it last read.
 */
export const WATCHES_TO_CUT_LONG = 10;

/** Bytes libzmq keeps per frame queued for a subscriber besides its content (a `zmq_msg_t`). */
export const FRAME_OVERHEAD = 64;

/** A connection's kernel send queue at one look (`undefined` for one that is gone). */
export interface ConnectionLook {
  /** Its send buffer takes no more bytes now. */
  readonly full: boolean;
  /** Bytes it holds that its peer has not taken (for tcp: not acknowledged). */
  readonly queued: number;
  /**
   * Bytes that have left libzmq's queue for it in all (tcp: acknowledged plus `queued`); only
   * grows. Absent where the kernel does not tell (a Unix socket).
   */
  readonly sent?: number;
}

/** A connection the guard names: to disconnect, or to watch. */
export interface SlowSubscriber {
  /** The connection (the IM uses its file descriptor). */
  readonly id: number;
  /** Bytes published since it was last seen reading. */
  readonly behind: number;
}

/** A connection to watch (hand `seen` back with the result). */
export interface Watch extends SlowSubscriber {
  /** Which time it was last seen reading: a watch's result counts only until it is seen again. */
  readonly seen: number;
}

/** What one look found. */
export interface GuardLook {
  /** Connections to disconnect now (forgotten). */
  readonly cut: readonly SlowSubscriber[];
  /** Connections to watch, if no watch is under way. */
  readonly watch: readonly Watch[];
}

/** The bytes a publication of these frames costs a subscriber's queue. */
export function publicationBytes(frames: readonly Uint8Array[]): number {
  let n = frames.length * FRAME_OVERHEAD;
  for (const f of frames) n += f.length;
  return n;
}

interface Tracked {
  /** The publication count when it was last seen reading. */
  mark: number;
  /**
   * Where the bytes that left libzmq's queue for it have reached, counted against publications
   * (tcp; see {@linkcode ConnectionLook.sent}); the publication count when its buffer had room.
   */
  sentMark: number;
  /** Queued bytes at the last look. */
  queued?: number;
  /** {@linkcode ConnectionLook.sent} at the last look. */
  sent?: number;
  /** When it was last seen reading (unique across connections: a reused id never matches). */
  seen: number;
  /** The largest publication since it was last seen reading, up to the last look. */
  largest: number;
  /** Watches since it was last seen reading that saw it take nothing. */
  unread: number;
}

/**
 * Tracks subscriber connections against a byte budget.
 *
 * @example
 * ```ts
 * import { SubscriberGuard } from "./subscriber_guard.ts";
 * const guard = new SubscriberGuard(1000);
 * guard.connected(7);
 * const stalled = (ids: readonly number[]) => ids.map(() => ({ full: true, queued: 212_992 }));
 * guard.sample(stalled); // nothing (its queue was not seen before)
 * guard.published(600);
 * const { watch } = guard.sample(stalled); // watch [{ id: 7, behind: 600, seen: 2 }]
 * guard.unread(7, watch[0].seen); // it took nothing in WATCH_MS
 * guard.unread(7, watch[0].seen); // nor in the next watch
 * guard.published(600);
 * guard.sample(stalled); // cut [{ id: 7, behind: 1200 }]
 * ```
 */
export class SubscriberGuard {
  /** Bytes a connection may fall behind before it is cut. */
  readonly budget: number;
  /** The most publications libzmq queues for one connection. */
  readonly queueLimit: number;
  #published = 0;
  /** The largest publication since the last look. */
  #largest = 0;
  #sightings = 0;
  readonly #conns = new Map<number, Tracked>();

  /**
   * A guard allowing `budget` bytes behind, for connections whose queue holds at most
   * `queueLimit` publications.
   */
  constructor(budget: number, queueLimit = Infinity) {
    this.budget = budget;
    this.queueLimit = queueLimit;
  }

  /** Connections tracked. */
  get size(): number {
    return this.#conns.size;
  }

  /** Bytes handed to the publish socket so far. */
  get total(): number {
    return this.#published;
  }

  /** Counts `bytes` handed to the publish socket. */
  published(bytes: number): void {
    this.#published += bytes;
    if (bytes > this.#largest) this.#largest = bytes;
  }

  /** A subscriber connected. */
  connected(id: number): void {
    const p = this.#published;
    this.#conns.set(id, { mark: p, sentMark: p, seen: ++this.#sightings, largest: 0, unread: 0 });
  }

  /**
   * A watch saw connection `id` take bytes: it reads, and what it is behind counts from now (for a
   * tcp connection, its second mark moves by the bytes that left, at the next look).
   */
  reading(id: number): void {
    const c = this.#conns.get(id);
    if (c?.sent !== undefined) this.#sawBytesLeave(c);
    else if (c) this.#seenReading(c);
  }

  /** Bytes left its queue (tcp): it reads; its second mark stays where those bytes took it. */
  #sawBytesLeave(c: Tracked): void {
    c.mark = this.#published;
    c.seen = ++this.#sightings;
    c.unread = 0;
  }

  /** Room in its buffer, or its figure fell (a Unix socket): it reads, and is caught up. */
  #seenReading(c: Tracked): void {
    c.mark = c.sentMark = this.#published;
    c.seen = ++this.#sightings;
    c.largest = 0;
    c.unread = 0;
  }

  /**
   * A watch of connection `id` (its {@linkcode Watch.seen}) saw it take nothing. Ignored if it
   * was seen reading since the watch was asked for.
   */
  unread(id: number, seen: number): void {
    const c = this.#conns.get(id);
    if (c?.seen === seen) c.unread++;
  }

  /** A subscriber connection is gone (or was cut). */
  disconnected(id: number): void {
    this.#conns.delete(id);
  }

  /**
   * Looks at every connection: `state(ids)` gives each one's send queue (full, and bytes queued),
   * or `undefined` for one that is gone (it is forgotten). Returns those to cut (forgotten) and
   * those to watch.
   */
  sample(state: (ids: readonly number[]) => readonly (ConnectionLook | undefined)[]): GuardLook {
    const ids = [...this.#conns.keys()];
    const states = state(ids);
    const largest = this.#largest;
    this.#largest = 0;
    const cut: SlowSubscriber[] = [];
    const watch: Watch[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const c = this.#conns.get(id)!;
      const st = states[i];
      if (st === undefined) {
        this.disconnected(id);
        continue;
      }
      const before = c.queued, sentBefore = c.sent;
      c.queued = st.queued;
      // The most seen: a figure read low (bytes acknowledged between its two calls) is made up later.
      if (st.sent !== undefined && !(st.sent <= (sentBefore ?? -1))) c.sent = st.sent;
      if (!st.full) {
        // Room in its kernel buffer: libzmq holds nothing for it (it would have written it).
        this.#seenReading(c);
        continue;
      }
      if (st.sent === undefined) {
        // Fewer bytes queued: its reader took some. More is no proof: libzmq filling the buffer of
        // a reader that stopped raises the figure too (with a burst that ends before the buffer
        // stays full, taking that for reading left the stopped subscriber caught up for good).
        if (before !== undefined && st.queued < before) {
          this.#seenReading(c);
          continue;
        }
      } else if (sentBefore !== undefined && st.sent > sentBefore) {
        c.sentMark = Math.min(this.#published, c.sentMark + (st.sent - sentBefore));
        this.#sawBytesLeave(c);
      }
      if (largest > c.largest) c.largest = largest;
      // libzmq holds at most queueLimit publications for it, none larger than the largest.
      const cap = c.largest && this.queueLimit * c.largest;
      const behind = Math.min(this.#published - c.mark, cap);
      const held = Math.max(behind, Math.min(this.#published - c.sentMark, cap));
      if (
        (behind > this.budget && c.unread >= WATCHES_TO_CUT) ||
        (held > this.budget && c.unread >= WATCHES_TO_CUT_LONG)
      ) {
        this.disconnected(id);
        cut.push({ id, behind: held });
      } else if (held > this.budget / 4) {
        watch.push({ id, behind: held, seen: c.seen });
      }
    }
    return { cut, watch };
  }
}
