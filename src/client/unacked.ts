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
  /** When the messages were last sent (ms). */
  at: number;
}

/** Messages not yet acknowledged, oldest id first. */
export class Unacked {
  readonly #byId = new Map<string, Entry>();
  #waiters: (() => void)[] = [];
  readonly #idWaiters = new Map<string, (() => void)[]>();

  /** Ids with a message not yet acknowledged. */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether a message of `id` waits for its acknowledgement. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** A message of `id` was sent at `now`. */
  add(id: string, frames: MessageFrames, now: number): void {
    const e = this.#byId.get(id);
    if (e) e.frames.push(frames);
    else this.#byId.set(id, { frames: [frames], at: now });
  }

  /** The oldest message of `id` waiting for its answer (the one the next answer of `id` is for). */
  oldest(id: string): MessageFrames | undefined {
    return this.#byId.get(id)?.frames[0];
  }

  /** How many messages of `id` wait for their answer. */
  count(id: string): number {
    return this.#byId.get(id)?.frames.length ?? 0;
  }

  /** The Subject acknowledged one message of each id in `ids` (the oldest of that id). */
  ack(ids: readonly unknown[]): void {
    for (const id of ids) if (typeof id === "string") this.answer(id);
  }

  /**
   * The Subject answered one message of `id` (an acknowledgement or a refusal: the oldest of that
   * id leaves); returns how many of `id` still wait. An answer for an id with none waiting is
   * that of a message sent again.
   */
  answer(id: string): number {
    const e = this.#byId.get(id);
    if (!e) return 0;
    e.frames.shift();
    if (e.frames.length > 0) return e.frames.length;
    this.#byId.delete(id);
    this.#wake(id);
    return 0;
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
   * `after`), marked as sent again at `now`.
   */
  due(now: number, after?: number): MessageFrames[] {
    const out: MessageFrames[] = [];
    for (const e of this.#byId.values()) {
      if (after !== undefined && now - e.at < after) continue;
      e.at = now;
      out.push(...e.frames);
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
