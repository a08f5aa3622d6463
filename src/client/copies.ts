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
   * Ids accepted while a caller waited for their final, until it comes (or nobody waits): the
   * id's latest send number (`Header.t`) when the acceptance was read, 0 if unknown.
   */
  readonly #running = new Map<string, number>();

  /** Ids remembered (for tests and leak checks). */
  get size(): number {
    return this.#answering.size + this.#running.size;
  }

  /** Whether a copy of `id` was accepted and its final has not come: a refusal of `id` is moot. */
  running(id: string): boolean {
    return this.#running.has(id);
  }

  /**
   * Whether a refusal of send number `t` of `id`, running, is moot as a send made before the one
   * accepted: the Subject answers a connection's sends in order, so a refusal of a send earlier
   * than the latest when the acceptance was read, read after that acceptance, came with it (the
   * `ACK` list goes before the `NACK` list of one flush). A refusal without a number, or of that
   * latest send or a later one, is not (a restarted Subject's, the acceptance being its
   * predecessor's, read late).
   */
  refusedEarlier(id: string, t: number | undefined): boolean {
    return t !== undefined && t < (this.#running.get(id) ?? 0);
  }

  /**
   * A copy of `id` was acknowledged; `waiting`: its copies still without an answer; `waited`: a
   * caller waits for its final (remembered until {@linkcode CopyAnswers.ended}); `latest`: the
   * id's latest send number then (see {@linkcode CopyAnswers.refusedEarlier}).
   */
  ack(id: string, waiting: number, waited: boolean, latest = 0): void {
    if (waited) this.#running.set(id, Math.max(latest, this.#running.get(id) ?? 0));
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
