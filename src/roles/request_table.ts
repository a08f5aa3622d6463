/**
 * What the Subject keeps of each request in flight, one `Map` entry per request for every part
 * that needs it: its connection's count (`ConnectionQuota`), when it was accepted
 * (`RequestMetrics`) and its configuration version (`VersionBook`). Each part had a `Map` of its
 * own, keyed by request id: three entries made and deleted per request. A `Map` that keeps
 * taking new keys and deleting old ones copies its whole table every few thousand keys (V8
 * compacts away the deleted entries), and each copy, alive, lives on into the old generation: a
 * third of what the Subject's young generation promoted at peak was such tables (a sampling heap
 * profile, docs/performance.md round 13). One table makes one copy where three made three. A
 * request that pauses leaves the table (the metrics keep its acceptance time apart:
 * {@linkcode ParkHook}), so that the table's bound counts requests in flight only. Pure: no
 * sockets, no clock.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RequestTable } from "./request_table.ts";
 * const t = new RequestTable();
 * const e = t.open("r1");
 * e.version = 3;
 * assert.equal(t.get("r1")?.version, 3);
 * e.version = 0;
 * t.close("r1", e); // no part holds anything of r1: it is forgotten
 * assert.equal(t.get("r1"), undefined);
 * ```
 *
 * @module
 */

/** Default bound of the requests the table keeps: past it the oldest is forgotten. */
export const MAX_TRACKED_REQUESTS = 200_000;

/** A connection's requests in flight (`ConnectionQuota`). */
export interface ConnectionCount {
  /** The connection. */
  readonly connection: string;
  /** Its requests in flight. */
  n: number;
}

/** One request's entry: a field per part, empty when that part holds nothing of it. */
export class RequestEntry {
  /** Its connection's count, while `ConnectionQuota` counts it. */
  count: ConnectionCount | undefined = undefined;
  /** When it was accepted (ms), while `RequestMetrics` times it; `NaN` when not timed. */
  started = NaN;
  /** Its configuration version while `VersionBook` holds one; 0 when none (versions start at 1). */
  version = 0;
}

/**
 * A part's hook for an entry the table forgets past its bound: let go of what the part held of
 * it (a connection's count, a version's reference), as its own release would.
 */
export type EvictHook = (entry: RequestEntry) => void;

/**
 * Where a request's acceptance time goes when only the metrics still hold it (the cap and the
 * version let go: the request paused at an `@ASYNC` step): out of the table, so that paused
 * requests, which may wait for an hour, neither count against the table's bound nor push requests
 * in flight out of it; a resumed request comes back with a new entry, at the end.
 */
export type ParkHook = (id: string, started: number) => void;

/** The requests in flight, by id, oldest first; at most `maxTracked` of them. */
export class RequestTable {
  readonly #entries = new Map<string, RequestEntry>();
  readonly #maxTracked: number;
  readonly #hooks: EvictHook[] = [];
  #park: ParkHook | undefined;

  /** A table of at most `maxTracked` requests (at least 1). */
  constructor(maxTracked: number = MAX_TRACKED_REQUESTS) {
    this.#maxTracked = Math.max(1, Math.floor(maxTracked));
  }

  /** Requests with an entry. */
  get size(): number {
    return this.#entries.size;
  }

  /** Calls `hook` for each entry forgotten past the bound, before it goes. */
  onEvict(hook: EvictHook): void {
    this.#hooks.push(hook);
  }

  /**
   * Calls `hook` for each entry left holding only its acceptance time, which then goes (see
   * {@linkcode ParkHook}). One hook per table: the metrics' (a second is refused).
   */
  onPark(hook: ParkHook): void {
    if (this.#park) throw new Error("a request table takes one park hook");
    this.#park = hook;
  }

  /** The entry of request `id`, if a part holds anything of it. */
  get(id: string): RequestEntry | undefined {
    return this.#entries.get(id);
  }

  /**
   * The entry of request `id`, made when there is none; then, past `maxTracked` entries, the
   * oldest other one is forgotten (every part's hook is called with it first).
   */
  open(id: string): RequestEntry {
    let e = this.#entries.get(id);
    if (e !== undefined) return e;
    this.#entries.set(id, e = new RequestEntry());
    if (this.#entries.size > this.#maxTracked) {
      const [oldId, old] = this.#entries.entries().next().value!;
      this.#entries.delete(oldId);
      for (const hook of this.#hooks) hook(old);
    }
    return e;
  }

  /**
   * A part let go of its field of `entry` (request `id`'s): forgets the request if no part holds
   * any, and hands an entry left with its acceptance time alone to the park hook (if any).
   */
  close(id: string, entry: RequestEntry): void {
    if (entry.count !== undefined || entry.version !== 0 || this.#entries.get(id) !== entry) return;
    if (entry.started === entry.started) { // (not NaN: timed)
      if (!this.#park) return;
      this.#park(id, entry.started);
      entry.started = NaN;
    }
    this.#entries.delete(id);
  }
}
