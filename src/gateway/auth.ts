/**
 * The gateway's bearer tokens (setting `http_tokens`): a JSON file that holds each token's
 * SHA-256, never the token, with the flow-name prefixes it may use and its rate limit. Pure
 * apart from hashing; the clock is injected.
 *
 * ```json
 * { "tokens": [
 *   { "name": "web", "sha256": "<hex of sha256(token)>", "flows": ["Hello", "Order"], "rate": 20 },
 *   { "name": "ops", "sha256": "<hex>" }
 * ] }
 * ```
 *
 * `flows` absent: every flow; `rate` absent: no limit (requests per second, bursts of as many).
 *
 * @module
 */

/** One token of the token file. */
export interface TokenEntry {
  /** A name for logs and metrics. */
  readonly name: string;
  /** The SHA-256 of the token, lowercase hex. */
  readonly sha256: string;
  /** Flow-name prefixes this token may use; absent: all. */
  readonly flows?: readonly string[];
  /** Requests per second (and burst); absent: unlimited. */
  readonly rate?: number;
  /** Event streams and WebSockets it may keep open at once; absent: up to the gateway's cap. */
  readonly streams?: number;
}

/** Reads a token file's text; throws a `SyntaxError` naming the file and the entry at fault. */
export function parseTokenFile(text: string, file: string): TokenEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${file}: not JSON: ${(e as Error).message}`);
  }
  const list = (doc as { tokens?: unknown })?.tokens;
  if (!Array.isArray(list)) throw new SyntaxError(`${file}: expected {"tokens": [...]}`);
  const entries = list.map((t, i) => {
    const at = `${file}: tokens[${i}]`;
    if (t === null || typeof t !== "object") throw new SyntaxError(`${at}: not an object`);
    const { name, sha256, flows, rate, streams } = t as Record<string, unknown>;
    if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) {
      throw new SyntaxError(`${at}: "sha256" must be 64 lowercase hex digits (sha256sum of the token)`);
    }
    if (flows !== undefined && (!Array.isArray(flows) || flows.some((f) => typeof f !== "string"))) {
      throw new SyntaxError(`${at}: "flows" must be a list of flow-name prefixes`);
    }
    if (rate !== undefined && (typeof rate !== "number" || !(rate > 0))) {
      throw new SyntaxError(`${at}: "rate" must be a positive number of requests per second`);
    }
    if (streams !== undefined && (typeof streams !== "number" || !Number.isInteger(streams) || streams < 1)) {
      throw new SyntaxError(`${at}: "streams" must be a whole number of open event streams, at least 1`);
    }
    return {
      name: typeof name === "string" ? name : `token ${i}`,
      sha256,
      ...(flows === undefined ? {} : { flows: flows as string[] }),
      ...(rate === undefined ? {} : { rate: rate as number }),
      ...(streams === undefined ? {} : { streams: streams as number }),
    };
  });
  // A name scopes what the gateway keeps for a caller (idempotency keys, the request ids they
  // make, rate buckets in logs), and a hash finds one entry: neither may be shared.
  for (const field of ["name", "sha256"] as const) {
    const first = new Map<string, number>();
    entries.forEach((e, i) => {
      const j = first.get(e[field]);
      if (j !== undefined) {
        throw new SyntaxError(
          `${file}: tokens[${i}]: its ${field} is tokens[${j}]'s too: give each token its own ${
            field === "name" ? "name" : "token"
          }`,
        );
      }
      first.set(e[field], i);
    });
  }
  return entries;
}

/** The lowercase hex SHA-256 of a token, as the token file stores it. */
export async function hashToken(token: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A token that authenticated: what it may do, and its rate bucket. */
export interface Caller {
  /** The token's entry. */
  readonly entry: TokenEntry;
}

/** Why a request was refused: the HTTP status and a message. */
export interface Refusal {
  /** 401, 403, 429, or 503 (the gateway is full). */
  readonly status: number;
  /** A sentence for the client. */
  readonly message: string;
  /** Seconds to wait (429, 503). */
  readonly retryAfter?: number;
}

/**
 * Checks bearer tokens against the entries of a token file, the flows each may use, and each
 * one's rate (a token bucket of `rate` requests refilled at `rate` per second).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Auth, hashToken } from "./auth.ts";
 * let now = 0;
 * const auth = new Auth([{ name: "a", sha256: await hashToken("s3cret"), flows: ["Hello"], rate: 1 }], () => now);
 * const c = await auth.authenticate("Bearer s3cret");
 * assert.ok(!("status" in c));
 * assert.equal(auth.allow(c, "Order"), false);
 * assert.equal(auth.take(c), 0);
 * assert.ok(auth.take(c) > 0); // over the rate: seconds to wait
 * now = 1000;
 * assert.equal(auth.take(c), 0);
 * ```
 */
export class Auth {
  readonly #byHash = new Map<string, TokenEntry>();
  readonly #buckets = new Map<TokenEntry, { tokens: number; at: number }>();
  readonly #now: () => number;

  /** `now` is in milliseconds. */
  constructor(entries: readonly TokenEntry[], now: () => number = () => performance.now()) {
    for (const e of entries) this.#byHash.set(e.sha256, e);
    this.#now = now;
  }

  /** The caller of an `Authorization` header value, or why it is refused (401). */
  async authenticate(header: string | null | undefined): Promise<Caller | Refusal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (!m) return { status: 401, message: "a bearer token is required (Authorization: Bearer <token>)" };
    const entry = this.#byHash.get(await hashToken(m[1]));
    if (!entry) return { status: 401, message: "unknown bearer token" };
    return { entry };
  }

  /** True if the caller may use `flow` (one of its prefixes starts the flow's name). */
  allow(caller: Caller, flow: string): boolean {
    const flows = caller.entry.flows;
    return flows === undefined || flows.some((p) => flow.startsWith(p));
  }

  /** True if the caller may subscribe to topics starting with `prefix`. */
  allowPrefix(caller: Caller, prefix: string): boolean {
    const flows = caller.entry.flows;
    return flows === undefined || flows.some((p) => p !== "" && prefix.startsWith(p)) || flows.includes("");
  }

  /** Takes one request from the caller's bucket: 0 if allowed, else the seconds to wait. */
  take(caller: Caller): number {
    const rate = caller.entry.rate;
    if (rate === undefined) return 0;
    const now = this.#now();
    let b = this.#buckets.get(caller.entry);
    if (!b) this.#buckets.set(caller.entry, b = { tokens: rate, at: now });
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / rate;
  }
}
