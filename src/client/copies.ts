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

import type { IncarnationRank, SendRun } from "./unacked.ts";

/**
 * Orders two Subject incarnations (negative: `a` is the earlier): by when they started, when both
 * announced it and it differs; else by the order the client first heard of them in. So a Subject
 * from before `started` (a rollback, say) and the ones beside it are ordered as heard of, and a
 * dead Subject whose last announcement is heard of only after its successor's still comes first
 * when both announce their start (from the hosts' clocks: a successor on a host whose clock is
 * behind by more than the time between the two starts comes first instead).
 *
 * @example
 * ```ts
 * import { compareRanks } from "./copies.ts";
 * compareRanks({ heard: 3, started: 1_000 }, { heard: 2, started: 2_000 }) < 0; // true: it started first
 * compareRanks({ heard: 3 }, { heard: 2, started: 2_000 }) > 0; // true: heard of later
 * ```
 */
export function compareRanks(a: IncarnationRank, b: IncarnationRank): number {
  if (a.started !== undefined && b.started !== undefined && a.started !== b.started) {
    return a.started - b.started;
  }
  return a.heard - b.heard;
}

/** The answers to copies of request ids, by id. */
export class CopyAnswers {
  /** Ids with copies still waiting for their answer after one was answered: whether one was accepted. */
  readonly #answering = new Map<string, boolean>();
  /**
   * Ids accepted while a caller waited for their final, until it comes (or nobody waits): the
   * id's sends known when the acceptance was read, in runs by the incarnation they named.
   */
  readonly #running = new Map<string, SendRun[]>();

  /** Ids remembered (for tests and leak checks). */
  get size(): number {
    return this.#answering.size + this.#running.size;
  }

  /** Whether a copy of `id` was accepted and its final has not come: a refusal of `id` is moot. */
  running(id: string): boolean {
    return this.#running.has(id);
  }

  /**
   * Whether a refusal of send number `t` of `id`, running, is moot: a later send of the id, known
   * when the acceptance was read, named the same Subject incarnation as `t` or a later one (a
   * successor: {@linkcode compareRanks}). That send is answered, by the Subject that refused `t`
   * after it refused `t` (it answers a connection's sends in order), or by a successor, and its
   * answer decides: an acceptance (perhaps the one read), or a refusal, of a send this is then asked
   * about. A refusal without a number, or of a send with no such later one, is not moot: it may be
   * a restarted Subject's, the acceptance being its predecessor's, read late (an `ACK` names no
   * send). A later send named for an earlier incarnation (a dead Subject's announcement read
   * late) is dropped unanswered by a live Subject, and decides nothing.
   */
  refusedEarlier(id: string, t: number | undefined): boolean {
    const runs = this.#running.get(id);
    if (t === undefined || !runs) return false;
    const run = runs.find((r) => r.first <= t && t <= r.last);
    if (!run) return false;
    return t < run.last || runs.some((r) => r.first > t && compareRanks(r.rank, run.rank) >= 0);
  }

  /**
   * A copy of `id` was acknowledged; `waiting`: its copies still without an answer; `waited`: a
   * caller waits for its final (remembered until {@linkcode CopyAnswers.ended}); `sends`: the id's
   * sends then (see {@linkcode CopyAnswers.refusedEarlier}), kept as they are: the caller hands
   * them over (`Unacked.sends` makes a copy).
   */
  ack(id: string, waiting: number, waited: boolean, sends: SendRun[] = []): void {
    if (waited) {
      const known = this.#running.get(id);
      if (!known) this.#running.set(id, sends);
      else {
        // Two acceptances read: what each knew of, together (a later one knows of later sends).
        for (const r of sends) {
          const same = known.find((k) => k.first === r.first);
          if (same) same.last = Math.max(same.last, r.last);
          else known.push({ ...r });
        }
        known.sort((a, b) => a.first - b.first);
      }
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
