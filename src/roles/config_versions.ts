/**
 * Configuration versions, as the Subject keeps them (issue 22, PROTOCOL.md _Reloading_): version 1
 * is what the Subject started with; each reload that every worker loads becomes the next. A
 * request starts on the current version and keeps it to its final publication; a version that is
 * no longer current is retired once no request in flight uses it (a reference count per version,
 * a version per request id). A rollout waits for every worker's answer, with a deadline. Pure: no
 * sockets, the clock injected.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VersionBook } from "./config_versions.ts";
 * const book = new VersionBook({ flows: new Map(), sources: [], hash: "a" });
 * assert.equal(book.begin("r1"), 1);
 * const v2 = book.propose({ flows: new Map(), sources: [], hash: "b" });
 * assert.deepEqual(book.commit(v2), []); // r1 still runs on version 1
 * assert.equal(book.begin("r2"), 2);
 * assert.deepEqual(book.end("r1"), [1]); // its last request ended: version 1 is retired
 * ```
 *
 * @module
 */

import type { SourceFile } from "../topic/catalog.ts";
import type { Flow } from "../topic/flow_file.ts";
import { MAX_TRACKED_REQUESTS, type RequestEntry, RequestTable } from "./request_table.ts";

/** What a configuration version is made of. */
export interface VersionContent {
  /** Its flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Its flow and mapping files (absolute names and texts), as workers are sent them. */
  readonly sources: readonly SourceFile[];
  /** {@linkcode sourcesHash} of `sources`. */
  readonly hash: string;
}

/** A version and what it is made of. */
export interface ConfigVersion extends VersionContent {
  /** Its number: 1 for what the Subject started with. */
  readonly version: number;
}

/**
 * A hash of a file set (names and texts, in order): a worker says which set it loaded from its
 * command line, and the Subject does not send it that set again.
 */
export async function sourcesHash(sources: readonly SourceFile[]): Promise<string> {
  const bytes = new TextEncoder().encode(JSON.stringify(sources.map((s) => [s.file, s.text])));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The slot of a version in a `STEPS` record's kind byte: 1 to 255, round and round (0: the
 * worker's own files). Two versions alive at once never share a slot: a rollout is refused while
 * the version 255 before it is still alive.
 */
export function versionSlot(version: number): number {
  return ((version - 1) % 255) + 1;
}

/** The live configuration versions, and the version of each request in flight. */
export class VersionBook {
  readonly #versions = new Map<number, ConfigVersion>();
  readonly #refs = new Map<number, number>();
  /** Each request in flight's entry holds its version (`RequestEntry.version`), oldest first (bounded). */
  readonly #table: RequestTable;
  #tracked = 0;
  #current = 1;
  #next = 2;
  #pending: number | undefined;

  /**
   * A book whose version 1 is `first`; at most `maxTracked` requests are remembered. With `table`
   * (the Subject's, shared with its connection quota and request metrics), the table's bound
   * applies instead.
   */
  constructor(first: VersionContent, maxTracked = MAX_TRACKED_REQUESTS, table?: RequestTable) {
    this.#versions.set(1, { ...first, version: 1 });
    this.#table = table ?? new RequestTable(maxTracked);
    // A request forgotten past the bound: a later message of it is routed on the current version
    // (a version it held is retired by the next sweep).
    this.#table.onEvict((e) => this.#release(e));
  }

  /** The version new requests start on. */
  get current(): number {
    return this.#current;
  }

  /** The version being rolled out, if one is. */
  get pending(): number | undefined {
    return this.#pending;
  }

  /** A live (or pending) version. */
  get(version: number): ConfigVersion | undefined {
    return this.#versions.get(version);
  }

  /** The live versions (the pending one included), oldest first. */
  live(): ConfigVersion[] {
    return [...this.#versions.values()];
  }

  /** Requests in flight on `version`. */
  refs(version: number): number {
    return this.#refs.get(version) ?? 0;
  }

  /** Requests whose version is remembered. */
  get tracked(): number {
    return this.#tracked;
  }

  /** The version of request `id`, if it is in flight. */
  versionOf(id: string): number | undefined {
    return this.#table.get(id)?.version || undefined;
  }

  /** The flows a message of request `id` is routed with: its version's, else the current ones. */
  flowsFor(id: string | undefined): ReadonlyMap<string, Flow> {
    const v = id === undefined ? 0 : this.#table.get(id)?.version ?? 0;
    return this.#versions.get(v || this.#current)!.flows;
  }

  /**
   * Request `id` starts (or resumes) on `version` (default: the current one). Returns the
   * version. Past `maxTracked` requests the oldest is forgotten: a later message of it is routed
   * on the current version (a version it held is retired by the next {@linkcode VersionBook.sweep}).
   */
  begin(id: string, version: number = this.#current): number {
    const e = this.#table.open(id);
    this.#release(e);
    e.version = version;
    this.#tracked++;
    this.#refs.set(version, this.refs(version) + 1);
    return version;
  }

  /**
   * Request `id` ended (its final publication) or paused (a paused flow holds no version: it
   * resumes by {@linkcode VersionBook.resumeOn}). Returns the versions retired by it.
   */
  end(id: string): number[] {
    const e = this.#table.get(id);
    if (e === undefined) return [];
    const v = this.#release(e);
    this.#table.close(id, e);
    return v !== 0 && this.#retirable(v) ? (this.#versions.delete(v), [v]) : [];
  }

  /** Forgets the version of a request's entry; returns it (0: none). Retires nothing (see {@linkcode VersionBook.sweep}). */
  #release(e: RequestEntry): number {
    const v = e.version;
    if (v === 0) return 0;
    e.version = 0;
    this.#tracked--;
    const n = this.refs(v) - 1;
    if (n > 0) this.#refs.set(v, n);
    else this.#refs.delete(v);
    return v;
  }

  #retirable(v: number): boolean {
    return v !== this.#current && v !== this.#pending && this.refs(v) === 0 && this.#versions.has(v);
  }

  /** Retires every version no request uses (other than the current and the pending one). */
  sweep(): number[] {
    const out = [...this.#versions.keys()].filter((v) => this.#retirable(v));
    for (const v of out) this.#versions.delete(v);
    return out;
  }

  /**
   * Adds `content` as the next version, pending until {@linkcode VersionBook.commit} or
   * {@linkcode VersionBook.drop}. Throws a `RangeError` while another is pending, or while the
   * version 255 before it (same slot) is alive.
   */
  propose(content: VersionContent): number {
    if (this.#pending !== undefined) throw new RangeError(`version ${this.#pending} is being rolled out`);
    const version = this.#next;
    if (this.#versions.has(version - 255)) {
      throw new RangeError(`version ${version - 255} is still in use by requests in flight`);
    }
    this.#next++;
    this.#pending = version;
    this.#versions.set(version, { ...content, version });
    return version;
  }

  /** Makes the pending `version` current; returns the versions this retires. */
  commit(version: number): number[] {
    if (this.#pending !== version) throw new RangeError(`version ${version} is not being rolled out`);
    this.#pending = undefined;
    this.#current = version;
    return this.sweep();
  }

  /** Drops the pending `version` (its rollout failed). */
  drop(version: number): void {
    if (this.#pending !== version) return;
    this.#pending = undefined;
    this.#versions.delete(version);
  }

  /**
   * The version and flow a paused flow of `flowName`, paused on `version`, resumes on: its own
   * while it is alive, else the current one if that has the flow, else `undefined` (the flow was
   * removed). A pause recorded before versions (`undefined`) counts as version 1.
   */
  resumeOn(version: number | undefined, flowName: string): { version: number; flow: Flow } | undefined {
    const own = this.#versions.get(version ?? 1);
    const ownFlow = own && own.version !== this.#pending ? own.flows.get(flowName) : undefined;
    if (ownFlow) return { version: own!.version, flow: ownFlow };
    const flow = this.#versions.get(this.#current)!.flows.get(flowName);
    return flow && { version: this.#current, flow };
  }
}

/** How a rollout ended, or `pending`. */
export type RolloutOutcome =
  | { readonly state: "pending" }
  | { readonly state: "loaded" }
  | { readonly state: "failed"; readonly reason: string };

/**
 * One version's rollout: the workers it waits for, until each has loaded it, one refuses it, or
 * the deadline passes (a worker that did not answer fails it). A worker that leaves is no longer
 * waited for; one that joins is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Rollout } from "./config_versions.ts";
 * const r = new Rollout(2, ["w1", "w2"], 5000, 0);
 * r.loaded("w1");
 * assert.equal(r.outcome(1000).state, "pending");
 * assert.equal(r.outcome(5000).state, "failed"); // w2 never answered
 * ```
 */
export class Rollout {
  readonly #waiting: Set<string>;
  readonly #deadline: number;
  #refusal?: string;

  /** Version `version`'s rollout to `workers`, started at `now` (ms), failing `timeoutMs` later. */
  constructor(readonly version: number, workers: Iterable<string>, readonly timeoutMs: number, now: number) {
    this.#waiting = new Set(workers);
    this.#deadline = now + timeoutMs;
  }

  /** Workers that have not answered yet. */
  get waiting(): readonly string[] {
    return [...this.#waiting];
  }

  /** Worker `key` loaded the version. */
  loaded(key: string): void {
    this.#waiting.delete(key);
  }

  /** Worker `key` could not load the version, for `reason`. */
  refused(key: string, reason: string): void {
    if (this.#waiting.delete(key)) {
      this.#refusal ??= `worker ${key} refused version ${this.version}: ${reason}`;
    }
  }

  /** Worker `key` joined: it is sent the version and waited for. */
  joined(key: string): void {
    this.#waiting.add(key);
  }

  /** Worker `key` left (or died): no longer waited for. */
  left(key: string): void {
    this.#waiting.delete(key);
  }

  /** The outcome at `now` (ms). */
  outcome(now: number): RolloutOutcome {
    if (this.#refusal !== undefined) return { state: "failed", reason: this.#refusal };
    if (this.#waiting.size === 0) return { state: "loaded" };
    if (now >= this.#deadline) {
      return {
        state: "failed",
        reason: `no answer within ${this.timeoutMs} ms from worker(s) ${[...this.#waiting].join(", ")}`,
      };
    }
    return { state: "pending" };
  }
}
