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
  /** Ids accepted while a caller waited for their final, until it comes (or nobody waits). */
  readonly #running = new Set<string>();

  /** Ids remembered (for tests and leak checks). */
  get size(): number {
    return this.#answering.size + this.#running.size;
  }

  /** Whether a copy of `id` was accepted and its final has not come: a refusal of `id` is moot. */
  running(id: string): boolean {
    return this.#running.has(id);
  }

  /**
   * A copy of `id` was acknowledged; `waiting`: its copies still without an answer; `waited`: a
   * caller waits for its final (remembered until {@linkcode CopyAnswers.ended}).
   */
  ack(id: string, waiting: number, waited: boolean): void {
    if (waited) this.#running.add(id);
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
