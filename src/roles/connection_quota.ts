/**
 * The requests each service connection has in flight at the Subject, and the cap on them
 * (`max_in_flight_per_connection`): a request counts from its acceptance until its final
 * publication leaves for the Integration Manager, or until it pauses at an `@ASYNC` step (a
 * paused flow is kept on disk, not in the Subject's memory); a resumed flow counts again, against
 * the connection its resume came from. A new request over the cap is answered `overloaded`
 * (PROTOCOL.md), so that one connection cannot take the whole of the Subject's queue
 * (`max_pending`) from the others. Pure: the Subject calls {@linkcode ConnectionQuota.room},
 * {@linkcode ConnectionQuota.admit} and {@linkcode ConnectionQuota.release}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConnectionQuota } from "./connection_quota.ts";
 * const q = new ConnectionQuota({ limit: 2 });
 * assert.ok(q.admit("service-a", "r1"));
 * assert.ok(q.admit("service-a", "r2"));
 * assert.equal(q.admit("service-a", "r3"), false); // over the cap: answered `overloaded`
 * assert.ok(q.admit("service-b", "s1")); // another connection is still served
 * q.release("r1"); // r1's final publication left
 * assert.ok(q.admit("service-a", "r3"));
 * assert.equal(q.inFlight("service-a"), 2);
 * ```
 *
 * @module
 */

import { type ConnectionCount, RequestTable } from "./request_table.ts";

/** Options of {@linkcode ConnectionQuota}. */
export interface ConnectionQuotaOptions {
  /** Requests one connection may have in flight (`max_in_flight_per_connection`). */
  readonly limit: number;
  /**
   * Requests followed at once, all connections together; past it the oldest is forgotten (its
   * connection's count goes down): the memory stays bounded (about 50 bytes a request besides its id) and a
   * request that never ends cannot hold a place for ever. The Subject's own queue and its workers'
   * credit keep far fewer than this in flight; the same bound as `RequestMetrics`' timings.
   * Ignored with `table` (the table's bound applies).
   * @default {200000}
   */
  readonly maxTracked?: number;
  /**
   * Where each request's count is kept: the Subject's table, shared with its request metrics and
   * configuration versions (one entry per request). @default {a table of its own}
   */
  readonly table?: RequestTable;
}

/** Counts the requests in flight per service connection, and refuses a new one over the cap. */
export class ConnectionQuota {
  readonly #limit: number;
  /** Each request in flight's entry holds its connection's count (`RequestEntry.count`), oldest first. */
  readonly #table: RequestTable;
  /** Requests in flight per connection (a connection with none is not kept). */
  readonly #counts = new Map<string, ConnectionCount>();
  #tracked = 0;
  #refused = 0;

  /** A quota of `options.limit` requests per connection. */
  constructor(options: ConnectionQuotaOptions) {
    this.#limit = options.limit;
    this.#table = options.table ?? new RequestTable(options.maxTracked);
    this.#table.onEvict((e) => {
      if (e.count !== undefined) this.#uncount(e.count);
      e.count = undefined;
    });
  }

  /** The cap. */
  get limit(): number {
    return this.#limit;
  }

  /** New requests refused so far. */
  get refused(): number {
    return this.#refused;
  }

  /** Requests in flight, all connections together. */
  get tracked(): number {
    return this.#tracked;
  }

  /** Requests `connection` has in flight. */
  inFlight(connection: string): number {
    return this.#counts.get(connection)?.n ?? 0;
  }

  /**
   * Whether `connection` is under the cap, so that one more request of it would be admitted; if
   * not, counted in {@linkcode refused}. For a request whose id is known only once it is taken (a
   * resume names a token, not the request): ask first, then {@linkcode admit} it.
   */
  room(connection: string): boolean {
    if ((this.#counts.get(connection)?.n ?? 0) < this.#limit) return true;
    this.#refused++;
    return false;
  }

  /**
   * New request `id` from `connection`: `true` (now counted) if the connection is under the cap,
   * `false` (counted in {@linkcode refused}) if not. A request already in flight counts once.
   */
  admit(connection: string, id: string): boolean {
    if (this.#table.get(id)?.count !== undefined) return true;
    let c = this.#counts.get(connection);
    if ((c?.n ?? 0) >= this.#limit) {
      this.#refused++;
      return false;
    }
    if (!c) this.#counts.set(connection, c = { connection, n: 0 });
    c.n++;
    this.#tracked++;
    this.#table.open(id).count = c;
    return true;
  }

  /** Request `id` ended (its final publication left) or paused; an id not in flight is ignored. */
  release(id: string): void {
    const e = this.#table.get(id);
    if (e?.count === undefined) return;
    this.#uncount(e.count);
    e.count = undefined;
    this.#table.close(id, e);
  }

  #uncount(c: ConnectionCount): void {
    this.#tracked--;
    if (--c.n === 0) this.#counts.delete(c.connection);
  }
}
