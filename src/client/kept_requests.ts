/**
 * The client's side of surviving a Subject restart (PROTOCOL.md, _Subject restarts_): the
 * requests a client waits a final publication for, kept as sent until that publication
 * arrives, and the Subject incarnations seen so far. When a Subject incarnation the client
 * has not seen before announces itself (after at least one other), every kept request that
 * has not paused at an `@ASYNC` step is to be sent again, unchanged: the new Subject never
 * saw it, or dropped it with its in-flight state when it died. Pure bookkeeping, no sockets.
 *
 * Memory: one entry per request a caller is waiting for, dropped when the wait ends (final
 * publication, timeout or abort), so it is bounded by the waits in progress.
 *
 * @module
 */

/** A request as it was sent: topic, header and values frames. */
export type RequestFrames = readonly Uint8Array[];

interface Kept {
  frames: RequestFrames;
  paused: boolean;
}

/** Requests waiting for their final publication, and the Subject incarnations seen. */
export class KeptRequests {
  readonly #byId = new Map<string, Kept>();
  readonly #seen = new Set<string>();
  #current?: string;

  /** Requests kept now. */
  get size(): number {
    return this.#byId.size;
  }

  /** The incarnation the last announcement named, if any was seen. */
  get incarnation(): string | undefined {
    return this.#current;
  }

  /** Keeps a request sent with id `id` until {@linkcode KeptRequests.forget}. */
  keep(id: string, frames: RequestFrames): void {
    this.#byId.set(id, { frames, paused: false });
  }

  /** True if a request with this id is kept. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** The request kept under `id`, unless it paused (a paused request is never sent again from its start). */
  frames(id: string): RequestFrames | undefined {
    const k = this.#byId.get(id);
    return k && !k.paused ? k.frames : undefined;
  }

  /** The request's final publication arrived, or its caller stopped waiting. */
  forget(id: string): void {
    this.#byId.delete(id);
  }

  /**
   * The request paused at an `@ASYNC` step: its state is in the Subject's paused store and
   * whoever resumes it drives it on, so it is never sent again from its start.
   */
  paused(id: string): void {
    const k = this.#byId.get(id);
    if (k) k.paused = true;
  }

  /** Rewrites every kept request (a new Subject incarnation to name: see `Header.s`). */
  restamp(fn: (frames: RequestFrames) => RequestFrames): void {
    for (const k of this.#byId.values()) k.frames = fn(k.frames);
  }

  /**
   * A Subject announced its incarnation. For a new one after another (a restart), returns the
   * requests to send again, by id: every kept request not paused. For the first incarnation
   * seen, or one seen before (a Subject announces itself periodically), `undefined`.
   */
  hello(incarnation: string): [string, RequestFrames][] | undefined {
    const known = this.#seen.has(incarnation);
    const first = this.#seen.size === 0;
    this.#seen.add(incarnation);
    this.#current = incarnation;
    if (known || first) return undefined;
    const out: [string, RequestFrames][] = [];
    for (const [id, k] of this.#byId) if (!k.paused) out.push([id, k.frames]);
    return out;
  }
}
