/**
 * The client's side of acknowledgements (PROTOCOL.md, _Acknowledgements_): every message sent to
 * the Subject (pings aside) is kept, by request id, until the Subject acknowledges it; a message
 * whose acknowledgement is late is sent again with the same id (the Subject drops duplicates).
 * Several messages may share an id (a request and its resumes): the Subject acknowledges them
 * in order. Pure bookkeeping with the time passed in; no sockets.
 *
 * @module
 */

/** A message as sent: topic, header and values frames. */
export type MessageFrames = readonly Uint8Array[];

interface Entry {
  readonly frames: MessageFrames[];
  /** The send numbers (`Header.t`) of the id's first and latest sends counted here; 0 before the first. */
  first: number;
  last: number;
  /** When the messages were last sent (ms). */
  at: number;
  /** The sends of the id counted here, in runs by the Subject incarnation they named. */
  readonly sends: SendRun[];
  /**
   * Sends of the id's messages not yet answered: a message sent again ({@linkcode Unacked.due})
   * is answered again (the Subject answers every message it reads), and each answer counts.
   */
  sent: number;
  /** The last refusal of a send, while sends of the id sent again still wait for their answers. */
  refused?: Refusal;
}

/**
 * A Subject incarnation's place among those the client heard of: the order it first heard of it
 * in (from 1; 0 before any), and when it started, as it announced (ms since the epoch), if it did.
 * Compared by `compareRanks` (copies.ts).
 */
export interface IncarnationRank {
  readonly heard: number;
  readonly started?: number;
}

/** The rank of messages named for no incarnation (none announced yet). */
export const NO_INCARNATION: IncarnationRank = { heard: 0 };

/**
 * Sends of an id in a row that named one Subject incarnation (`Header.s`): the first and last of
 * their numbers (`Header.t`), and the incarnation's rank.
 */
export interface SendRun {
  readonly first: number;
  last: number;
  readonly rank: IncarnationRank;
}

/** A refusal (`NACK`) of one message, as the client keeps it while other sends of its id wait. */
export interface Refusal {
  readonly reason: unknown;
  readonly message: unknown;
  /** An error publication answers it too (a request refused before it ran). */
  readonly answered: boolean;
  /** The message refused, as sent, if it was known. */
  readonly copy: MessageFrames | undefined;
  /** The send number the Subject echoed (`Header.t`), if it did. */
  readonly t?: number;
}

/**
 * For a refusal that does not say which send it was for (no send number echoed: a Subject older
 * than `Header.t`): how long after the last answer of its id the answers still awaited for the
 * id's other sends are taken for lost. Some never come: a message over the Subject's
 * `max_message_size` may be dropped with its connection, unread and unanswered, and only a send
 * of it made after that is refused (`oversize`). A Subject stalled longer than this in the middle
 * of answering a backlog may then answer a send of the id that was waited for no longer.
 */
export const LOST_ANSWER_MS = 5000;

/**
 * Messages not yet acknowledged, oldest id first.
 *
 * Each send is numbered (`Header.t`, from {@linkcode Unacked.nextSend}), and the Subject echoes
 * the number in a refusal. The Subject reads a connection's messages in order and answers them
 * in order, so when it refuses the id's latest send, every earlier send of the id has had its
 * answer already, or never will (lost with a connection, or sent to a Subject that died): the
 * refusal stands. A refusal of an earlier send waits for the latest's answer, and the message is
 * sent again after `after` ms like any other not yet acknowledged: a send lost unread is then
 * replaced by one that is answered.
 */
export class Unacked {
  readonly #byId = new Map<string, Entry>();
  readonly #stamp: (frames: MessageFrames, t: number) => MessageFrames;
  readonly #rank: () => IncarnationRank;
  #t = 0;
  #waiters: (() => void)[] = [];
  readonly #idWaiters = new Map<string, (() => void)[]>();

  /**
   * `stamp` writes a send number into a message's header (a message sent again gets a new one);
   * `rank` is the rank of the Subject incarnation messages are named for now (see {@linkcode SendRun}).
   */
  constructor(
    stamp: (frames: MessageFrames, t: number) => MessageFrames = (f) => f,
    rank: () => IncarnationRank = () => NO_INCARNATION,
  ) {
    this.#stamp = stamp;
    this.#rank = rank;
  }

  /** The number of the next send (`Header.t`), counting up from 1. */
  nextSend(): number {
    return ++this.#t;
  }

  /** Ids with a message not yet acknowledged. */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether a message of `id` waits for its acknowledgement. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /**
   * Whether a send of `id`'s messages waits for its answer: not when they wait to be sent again
   * (after a Subject restart, or a refusal by a restarted Subject), when an answer is one to a
   * send made before, to a Subject that has since died.
   */
  awaits(id: string): boolean {
    return (this.#byId.get(id)?.sent ?? 0) > 0;
  }

  /** The sends of `id` counted so far, a copy (see {@linkcode Unacked.add}); empty when none is kept. */
  sends(id: string): SendRun[] {
    return this.#byId.get(id)?.sends.map((r) => ({ ...r })) ?? [];
  }

  /**
   * A message of `id`, sent at `now` as send number `t` (by default the next,
   * {@linkcode Unacked.nextSend}), or (`false`) to be sent by the next {@linkcode Unacked.due}
   * that takes it.
   */
  add(id: string, frames: MessageFrames, now: number, t: number | false = this.nextSend()): void {
    const e = this.#byId.get(id);
    if (e) {
      e.frames.push(frames);
      if (t !== false) {
        e.sent++;
        e.first ||= t;
        e.last = t;
        this.#counted(e.sends, t);
      }
      return;
    }
    const n = t || 0;
    const sends: SendRun[] = [];
    if (t !== false) this.#counted(sends, t);
    this.#byId.set(id, { frames: [frames], at: now, sent: t === false ? 0 : 1, first: n, last: n, sends });
  }

  /** The oldest message of `id` waiting for its answer (the one the next answer of `id` is for). */
  oldest(id: string): MessageFrames | undefined {
    return this.#byId.get(id)?.frames[0];
  }

  /** How many sends of `id`'s messages wait for their answer. */
  count(id: string): number {
    return this.#byId.get(id)?.sent ?? 0;
  }

  /**
   * The Subject answered one send of `id` at `now`: accepted it (no `refusal`: the oldest message
   * of that id leaves), or refused it (the oldest leaves unless sends of it sent again still wait:
   * one of those may yet be accepted). Returns how many sends of `id` still wait for an answer.
   * The id is forgotten at 0, or once every message of it was accepted: then the answers still
   * owed (counted in the return) are those of sends made again, and decide nothing. An answer for
   * an id not kept is that of a message sent again; so is a refusal of a send made before the
   * id's first send kept here (an earlier copy's, forgotten): it is ignored.
   */
  answer(id: string, now: number, refusal?: Refusal): number {
    const e = this.#byId.get(id);
    if (!e) return 0;
    if (refusal?.t !== undefined && refusal.t < e.first) return e.sent;
    // The latest send refused: the earlier ones were answered before it, or never will be.
    if (refusal?.t !== undefined && refusal.t === e.last) e.sent = 1;
    e.sent = Math.max(0, e.sent - 1);
    e.at = now;
    if (!refusal) {
      e.frames.shift();
      e.refused = undefined;
    } else {
      if (e.frames.length > e.sent) e.frames.shift();
      e.refused = refusal;
    }
    if (e.sent > 0 && (e.frames.length > 0 || refusal)) return e.sent;
    this.#byId.delete(id);
    this.#wake(id);
    return refusal ? 0 : e.sent;
  }

  /**
   * The Subject restarted: sends to its predecessor will never be answered. Each id keeps its
   * messages, to send again ({@linkcode Unacked.due}); one with none left is forgotten, and
   * returned with its refusal if it had one (its refusal is then the answer).
   */
  restarted(): [string, Refusal][] {
    const out: [string, Refusal][] = [];
    for (const [id, e] of this.#byId) {
      e.sent = 0;
      e.first = e.last = 0;
      if (e.frames.length > 0) {
        e.refused = undefined;
        continue;
      }
      if (e.refused) out.push([id, e.refused]);
      this.#byId.delete(id);
      this.#wake(id);
    }
    return out;
  }

  /** Rewrites every message kept (a new Subject incarnation: see `Header.s`). */
  restamp(fn: (frames: MessageFrames) => MessageFrames): void {
    for (const e of this.#byId.values()) {
      for (let i = 0; i < e.frames.length; i++) e.frames[i] = fn(e.frames[i]);
    }
  }

  /** Forgets every message of `id` (refused, or its request finished); whether there was one. */
  delete(id: string): boolean {
    const had = this.#byId.delete(id);
    if (had) this.#wake(id);
    return had;
  }

  /**
   * The messages whose acknowledgement is more than `after` ms late at `now` (every one without
   * `after`), marked as sent again at `now`, each with a new send number.
   */
  due(now: number, after?: number): MessageFrames[] {
    const out: MessageFrames[] = [];
    for (const e of this.#byId.values()) {
      // Refused, with answers to other sends of it still to come, by a Subject that does not say
      // which send it refused: those answers decide (`lost`).
      if (after !== undefined && (now - e.at < after || (e.refused && e.refused.t === undefined))) continue;
      e.at = now;
      e.sent += e.frames.length;
      for (let i = 0; i < e.frames.length; i++) {
        e.last = this.nextSend();
        e.first ||= e.last;
        this.#counted(e.sends, e.last);
        out.push(e.frames[i] = this.#stamp(e.frames[i], e.last));
      }
    }
    return out;
  }

  /**
   * Ids refused, by a Subject that did not say which send it refused, whose other sends have had no
   * answer for {@linkcode LOST_ANSWER_MS} (or `after`, if longer) at `now`, with the last
   * refusal: forgotten, their refusal is the answer.
   */
  lost(now: number, after = 0): [string, Refusal][] {
    const out: [string, Refusal][] = [];
    for (const [id, e] of this.#byId) {
      if (!e.refused || e.refused.t !== undefined || now - e.at < Math.max(after, LOST_ANSWER_MS)) continue;
      out.push([id, e.refused]);
      this.#byId.delete(id);
      this.#wake(id);
    }
    return out;
  }

  /**
   * Resolves once every message of `id` is answered (or forgotten); without `id`, once every
   * message is. (A caller waiting for its own message does not wait for the others': under a
   * steady load some are always waiting.)
   */
  settled(id?: string): Promise<void> {
    if (id === undefined ? this.#byId.size === 0 : !this.#byId.has(id)) return Promise.resolve();
    return new Promise((r) => {
      if (id === undefined) this.#waiters.push(r);
      else {
        const ws = this.#idWaiters.get(id);
        if (ws) ws.push(r);
        else this.#idWaiters.set(id, [r]);
      }
    });
  }

  #counted(sends: SendRun[], t: number): void {
    const rank = this.#rank();
    const run = sends.at(-1);
    if (run?.rank === rank) run.last = t;
    else sends.push({ first: t, last: t, rank });
  }

  #wake(id: string): void {
    const ws = this.#idWaiters.get(id);
    if (ws) {
      this.#idWaiters.delete(id);
      for (const w of ws) w();
    }
    if (this.#byId.size === 0 && this.#waiters.length) {
      const all = this.#waiters;
      this.#waiters = [];
      for (const w of all) w();
    }
  }
}
