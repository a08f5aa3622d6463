/**
 * What the gateway's HTTP server admits: a cap on the connections open at once, all addresses
 * together and per remote address, and the cap's bound by the process's file-descriptor limit.
 * Pure: the server (`http_server.ts`) asks and tells; nothing here touches a socket.
 *
 * @module
 */

/** Why a connection was not admitted, or `ok`. */
export type Admission = "ok" | "full" | "address";

/** The connection counters the gateway reports (`/metrics`, `stats`). */
export interface ConnectionCounters {
  /** Connections open now. */
  open: number;
  /** Connections closed at accept because `http_max_connections` were open. */
  refusedFull: number;
  /** Connections closed at accept because their address had `http_max_connections_per_ip` open. */
  refusedAddress: number;
  /** Connections closed for not sending a request's headers in time (header or idle timeout). */
  timedOut: number;
  /** Requests answered 408 for not sending their body in time. */
  bodyTimedOut: number;
  /** Accepts that failed (the process out of file descriptors, say); the server waits and goes on. */
  acceptErrors: number;
  /**
   * Connections reset (or aborted) by their client before the server took them: their accept
   * fails, and the server goes on at once (not an error of the server's).
   */
  resetBeforeAccept: number;
  /** Whether the limits apply (`http_connection_limits`); if not, only `bodyTimedOut` is counted. */
  limited?: boolean;
}

/** Counts open connections and admits or refuses new ones. */
export class ConnectionGuard {
  readonly #byAddress = new Map<string, number>();
  readonly counters: ConnectionCounters = {
    open: 0,
    refusedFull: 0,
    refusedAddress: 0,
    timedOut: 0,
    bodyTimedOut: 0,
    acceptErrors: 0,
    resetBeforeAccept: 0,
  };

  /**
   * `max`: connections open at once; `perAddress`: of them from one remote address (0: no cap
   * per address).
   */
  constructor(readonly max: number, readonly perAddress: number) {}

  /** Admits a connection from `address` (and counts it) or says why not (and counts that). */
  admit(address: string): Admission {
    if (this.counters.open >= this.max) {
      this.counters.refusedFull++;
      return "full";
    }
    const n = this.#byAddress.get(address) ?? 0;
    if (this.perAddress > 0 && n >= this.perAddress) {
      this.counters.refusedAddress++;
      return "address";
    }
    this.#byAddress.set(address, n + 1);
    this.counters.open++;
    return "ok";
  }

  /** A connection admitted from `address` closed. */
  release(address: string): void {
    const n = this.#byAddress.get(address);
    if (n === undefined) return;
    if (n <= 1) this.#byAddress.delete(address);
    else this.#byAddress.set(address, n - 1);
    this.counters.open--;
  }
}

/**
 * The soft "Max open files" limit in the text of `/proc/self/limits`; `undefined` when the text
 * has none or it is `unlimited`.
 *
 * @example
 * ```ts
 * import { softFileLimit } from "./connections.ts";
 * softFileLimit("Max open files            20000                20000                files"); // 20000
 * ```
 */
export function softFileLimit(limits: string): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!m || m[1] === "unlimited") return undefined;
  return Number(m[1]);
}

/**
 * File descriptors kept for everything but HTTP connections (libzmq's sockets and their
 * reconnects, the paused store, module files): an accept that took the last of them could
 * leave libzmq unable to make one, which ends the process.
 */
export const RESERVED_FILES = 512;

/**
 * The connection cap the server applies (WebSockets and event streams included): the setting, or
 * less when the process's open-file limit would not hold it with {@linkcode RESERVED_FILES}
 * beside it.
 */
export function connectionCap(
  setting: number,
  fileLimit: number | undefined,
): { cap: number; clamped: boolean } {
  if (fileLimit === undefined) return { cap: setting, clamped: false };
  const room = Math.max(1, fileLimit - RESERVED_FILES);
  return room < setting ? { cap: room, clamped: true } : { cap: setting, clamped: false };
}

/** Connections closed, or requests answered, after which freed memory is handed back. */
export const TRIM_AFTER = 1000;

/**
 * Further trims after one that {@linkcode TRIM_AFTER} asked for, ms after it: every 5 s for a
 * minute (see TrimPolicy). One with little to free takes 0.2–0.4 ms (20 ms for the first after
 * 5,000 requests of 50 KB).
 */
export const FOLLOW_UP_TRIMS: readonly number[] = Array.from({ length: 12 }, (_, i) => (i + 1) * 5000);

/**
 * When the server hands freed memory back to the system (glibc's `malloc_trim`): glibc keeps what
 * Deno's HTTP server frees for reuse, so a gateway that had 8,000 connections each send half a
 * header held 268 MiB once they were gone (74 before), and one that answered 15,000 requests of
 * 50 KB 132 MiB after 30 s idle; a `malloc_trim` took them to 86 and 83 MiB. A trim stalls the
 * thread (34–47 ms measured after 2,000 connections), so it comes only after
 * {@linkcode TRIM_AFTER} connections closed or requests answered, once neither happened for a
 * second; and while connections keep closing (a flood of them), every 10 s. Requests that keep
 * coming do not trim: their stall would land on their answers.
 *
 * Once quiet, the server runs a full V8 collection before the trim (`collectGarbage`): V8 lets go
 * of much of what those requests held (their buffers, Deno's resources) only when it collects
 * them, which its memory reducer does some 8 to 25 s into the quiet (5,000 requests of 50 KB left
 * 100 MiB, 73 before, after one trim without it; with it, 74–88 MiB a second after the load). A
 * flood's trims do without it: a full collection would add its pause to theirs while connections
 * still come. After a trim come {@linkcode FOLLOW_UP_TRIMS}, each once quiet for a second: a trim
 * may come in a quiet second in the middle of a wave, and what the rest of the wave leaves is
 * fewer than {@linkcode TRIM_AFTER} (without them, 131 MiB, 74 before, 15 s after four waves of
 * 2,000 half-headers in one CI run). Times are in milliseconds.
 */
export class TrimPolicy {
  #closed = 0;
  #answered = 0;
  #lastActivity: number;
  #lastTrim: number;
  /** When the follow-up trims of the last trim are due, soonest first. */
  #followUps: number[] = [];

  constructor(now: number) {
    this.#lastActivity = now;
    this.#lastTrim = now;
  }

  /** A connection closed at `now`. Returns whether a trim may come (look with `due`). */
  closed(now: number): boolean {
    this.#lastActivity = now;
    return ++this.#closed >= TRIM_AFTER;
  }

  /** A request answered at `now`. Returns whether a trim may come (look with `due`). */
  answered(now: number): boolean {
    this.#lastActivity = now;
    return ++this.#answered >= TRIM_AFTER;
  }

  /** Whether anything asks for a trim at all. */
  get wanted(): boolean {
    return this.#closed >= TRIM_AFTER || this.#answered >= TRIM_AFTER;
  }

  /** Whether a trim is wanted or a follow-up trim is still to come (else stop looking). */
  get pending(): boolean {
    return this.wanted || this.#followUps.length > 0;
  }

  /**
   * Whether to trim at `now`: `"quiet"` once nothing happened for a second (a follow-up trim
   * too), `"flood"` every 10 s while connections keep closing, else `false`.
   */
  due(now: number): "quiet" | "flood" | false {
    const quiet = now - this.#lastActivity >= 1000;
    if (!this.wanted) {
      return quiet && this.#followUps.length > 0 && now >= this.#followUps[0] ? "quiet" : false;
    }
    if (quiet) return "quiet";
    return this.#closed >= TRIM_AFTER && now - this.#lastTrim >= 10_000 ? "flood" : false;
  }

  /** A trim was made at `now`. */
  trimmed(now: number): void {
    if (!this.wanted) {
      // This one, and any others that came due while the server was not quiet.
      while (this.#followUps.length > 0 && this.#followUps[0] <= now) this.#followUps.shift();
      return;
    }
    this.#closed = 0;
    this.#answered = 0;
    this.#lastTrim = now;
    this.#followUps = FOLLOW_UP_TRIMS.map((after) => now + after);
  }
}
