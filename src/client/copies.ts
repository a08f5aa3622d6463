/**
 * Copies of one request id answered differently. A service may send a request id more than once
 * (a retry while the first copy waits for its answer, two callers with one id), and the Subject
 * answers each copy on its own: over a connection's cap one is refused `overloaded` (a `NACK`
 * marked `answered`, and an error publication marked `refused`), and the next, once there is room,
 * is accepted and runs. The id's callers are told what became of the request, not of one copy:
 *
 * - it was accepted as soon as any copy was (`ACK`);
 * - it was refused only once every copy sent has its answer and none was accepted; a refusal's
 *   error publication is then its final publication (before that, it is held);
 * - once a copy was accepted, refusals of other copies and their error publications are moot: the
 *   request runs, and its own final publication comes.
 *
 * Only ids that had a refusal, or more than one copy waiting, have an entry. Pure bookkeeping:
 * the client passes in how many copies of the id still wait for their answer.
 *
 * @module
 */

import type { Publication } from "../wire/protocol.ts";

/** What a refusal, or a refused copy's error publication, comes to for the id's callers. */
export type Verdict<T> =
  /** No copy accepted, none waiting: the callers are told, with the error publication held, if one was. */
  | { readonly stands: true; readonly final?: T }
  /** A copy was accepted (the request runs), or copies still wait for their answers. */
  | { readonly stands: false };

interface Entry<P> {
  /** A copy was accepted. */
  accepted: boolean;
  /** The latest error publication of a refused copy, held until the refusal stands or is moot. */
  held?: P;
  /** Refusals marked `answered` whose error publication has not come yet. */
  finalsDue: number;
  /** Error publications that came before their refusal. */
  finalsEarly: number;
}

const MOOT = { stands: false } as const;

/**
 * The answers to copies of request ids, by id. Both the refusals (on the service's connection)
 * and the error publications (through the Integration Manager) of one id come in the order the
 * Subject made them, so the k-th refusal marked `answered` and the k-th refused publication are
 * the same copy's.
 */
export class CopyAnswers<P = Publication> {
  readonly #byId = new Map<string, Entry<P>>();

  /** Ids with an entry (for tests and leak checks). */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether a copy of `id` was accepted (known only where copies or refusals made an entry). */
  accepted(id: string): boolean {
    return this.#byId.get(id)?.accepted === true;
  }

  /** A copy of `id` was acknowledged; `waiting`: its copies still without an answer. */
  ack(id: string, waiting: number): void {
    const e = this.#byId.get(id);
    if (e) {
      e.accepted = true;
      e.held = undefined;
    } else if (waiting > 0) this.#byId.set(id, { accepted: true, finalsDue: 0, finalsEarly: 0 });
  }

  /**
   * A copy of `id` was refused (`NACK`); `answered`: an error publication answers it too;
   * `waiting`: its copies still without an answer.
   */
  refuse(id: string, answered: boolean, waiting: number): Verdict<P> {
    let e = this.#byId.get(id);
    if (!e) {
      if (waiting === 0 && !answered) return { stands: true };
      this.#byId.set(id, e = { accepted: false, finalsDue: 0, finalsEarly: 0 });
    }
    if (answered) {
      if (e.finalsEarly > 0) e.finalsEarly--;
      else e.finalsDue++;
    }
    if (e.accepted || waiting > 0) return MOOT;
    const final = e.held;
    e.held = undefined;
    this.#drop(id, e);
    return final === undefined ? { stands: true } : { stands: true, final };
  }

  /**
   * The error publication of a refused copy of `id` came (marked `refused`); `waiting`: its
   * copies still without an answer. It stands (ends the callers' waits) only if no copy was
   * accepted and no other copy waits.
   */
  refusedFinal(id: string, p: P, waiting: number): Verdict<P> {
    let e = this.#byId.get(id);
    if (!e) this.#byId.set(id, e = { accepted: false, finalsDue: 0, finalsEarly: 0 });
    const early = e.finalsDue === 0;
    if (early) e.finalsEarly++;
    else e.finalsDue--;
    if (e.accepted) {
      if (waiting === 0) this.#drop(id, e);
      return MOOT;
    }
    // Before its refusal, with one copy waiting (its own): it answers that copy.
    if (waiting > (early ? 1 : 0)) {
      e.held = p;
      return MOOT;
    }
    e.held = undefined;
    this.#drop(id, e);
    return { stands: true, final: p };
  }

  /** The request's own final publication came, or nobody waits for it any more: forget `id`. */
  forget(id: string): void {
    this.#byId.delete(id);
  }

  /** Forgets `id` once nothing of it is still to come. */
  #drop(id: string, e: Entry<P>): void {
    if (e.finalsDue === 0 && e.finalsEarly === 0) this.#byId.delete(id);
  }
}
