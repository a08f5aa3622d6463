/**
 * Copies of one request id answered differently. A service may send a request id more than once
 * (a retry while the first copy waits for its answer, two callers with one id, a request sent
 * again to a restarted Subject), and the Subject answers each copy on its own: over a
 * connection's cap one is refused `overloaded` (a `NACK` marked `answered`), and the next, once
 * there is room, is accepted (`ACK`) and runs. The id's callers are told what became of the
 * request, not of one copy:
 *
 * - a refusal stands only once every send of the id (copies and resends alike: `unacked.ts`) has
 *   its answer and none was accepted, and no copy accepted earlier is still running for a caller;
 * - otherwise it is moot: the request runs (or may still), and its own final comes.
 *
 * The client answers a refusal that stands from the refusal itself (`NACK`), never from the error
 * publication that also answers it: publications come by another path, in another order, and to
 * every subscriber (another client's copy of the id, refused, is published too).
 *
 * Pure bookkeeping: the client passes in how many of the id's sends still wait for an answer.
 *
 * @module
 */

/** The answers to copies of request ids, by id. */
export class CopyAnswers {
  /** Ids with copies still waiting for their answer after one was answered: whether one was accepted. */
  readonly #answering = new Map<string, boolean>();
  /**
   * Ids accepted while a caller waited for their final, until it comes (or nobody waits): when
   * the acceptance was read, the id's latest send number (`Header.t`, 0 if unknown) and the
   * client's last send number before the Subject's incarnation last changed.
   */
  readonly #running = new Map<string, { latest: number; restart: number }>();

  /** Ids remembered (for tests and leak checks). */
  get size(): number {
    return this.#answering.size + this.#running.size;
  }

  /** Whether a copy of `id` was accepted and its final has not come: a refusal of `id` is moot. */
  running(id: string): boolean {
    return this.#running.has(id);
  }

  /**
   * Whether a refusal of send number `t` of `id`, running, is moot: a refusal of a send made
   * before the one accepted, by the same Subject. That is so when `t` is below the id's latest
   * send when the acceptance was read and was sent after the Subject's incarnation last changed
   * before it: that Subject answers a connection's sends in order, so it refused `t` before it
   * accepted a later send (in the same flush: the `ACK` list goes before the `NACK` list). A
   * refusal without a number, of that latest send or a later one, or of a send made before the
   * incarnation changed, is not moot: it may be a restarted Subject's, the acceptance being its
   * predecessor's, read late (an `ACK` names no send).
   */
  refusedEarlier(id: string, t: number | undefined): boolean {
    const r = this.#running.get(id);
    return t !== undefined && r !== undefined && t > r.restart && t < r.latest;
  }

  /**
   * A copy of `id` was acknowledged; `waiting`: its copies still without an answer; `waited`: a
   * caller waits for its final (remembered until {@linkcode CopyAnswers.ended}); `latest`: the
   * id's latest send number then, and `restart` the client's last send number before the
   * Subject's incarnation last changed (see {@linkcode CopyAnswers.refusedEarlier}).
   */
  ack(id: string, waiting: number, waited: boolean, latest = 0, restart = 0): void {
    if (waited) {
      const r = this.#running.get(id);
      // Of two acceptances read, the one that knew of the later send decides.
      if (!r || latest >= r.latest) this.#running.set(id, { latest, restart });
    }
    if (waiting > 0) this.#answering.set(id, true);
    else this.#answering.delete(id);
  }

  /**
   * A copy of `id` was refused; `waiting`: its copies still without an answer. Returns whether
   * the refusal stands (the callers are told), or is moot.
   */
  refuse(id: string, waiting: number): boolean {
    const accepted = this.#answering.get(id) === true;
    if (waiting > 0) {
      this.#answering.set(id, accepted);
      return false;
    }
    this.#answering.delete(id);
    return !accepted && !this.#running.has(id);
  }

  /** The request's final came, or nobody waits for its answers: forget `id`. */
  ended(id: string): void {
    this.#answering.delete(id);
    this.#running.delete(id);
  }
}
