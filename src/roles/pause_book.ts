/**
 * The Subject's paused flows (`@ASYNC` steps) over the store that keeps them: pausing, resuming,
 * and expiry. Pure decisions with an injected store and clock: the Subject publishes what they
 * say. The store takes a token atomically, so of two resumes racing for one token exactly one
 * wins and the other is told `bad_resume`. A taken token is kept, so the resume that took it,
 * sent again to a later Subject incarnation after the one running its flow died, takes it again
 * (`resumed`), and sent again to the same one is a `repeat`; once its flow has ended
 * ({@linkcode PauseBook.finish}) it no longer expires and is a `repeat` (unless `rerunEnded`), and
 * once it paused again it is not taken again.
 *
 * @example
 * ```ts
 * import { mergedValues, PauseBook } from "./pause_book.ts";
 * import { PausedStore } from "./paused_store.ts";
 * import { parseFlowFile } from "../topic/flow_file.ts";
 * import { utf8 } from "../wire/protocol.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F@ASYNC?wait\n??done\n", "f.ini").flows[0];
 * const book = new PauseBook({ store: new PausedStore(":memory:"), flows: new Map([["F", flow]]), timeout: 1000 });
 * const resume = book.pause("F", 1, "r1", 1, '{"a":1}');
 * const first = book.resume("F", { v: 1, id: "x", resume }, utf8('{"b":2}'));
 * const second = book.resume("F", { v: 1, id: "y", resume }, utf8("{}"));
 * console.log(first.kind, second.kind); // resumed error (bad_resume: the token is used)
 * if (first.kind === "resumed") console.log(mergedValues(first.paused, first.added)); // {"a":1,"b":2}
 * ```
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { decodeValues, type Header, makeToken, parseToken, utf8 } from "../wire/protocol.ts";
import type { ErrorSpec } from "./intake.ts";
import type { PausedFlow, PausedStore } from "./paused_store.ts";

/** What the pause book needs of a store (see `paused_store.ts`). */
export type PauseStore = Pick<
  PausedStore,
  "save" | "take" | "finish" | "expire" | "count" | "waiting" | "known"
>;

/** Options of {@linkcode PauseBook}. */
export interface PauseBookOptions {
  /** Where paused flows are kept. */
  readonly store: PauseStore;
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Milliseconds a paused flow waits for its resume. */
  readonly timeout: number;
  /** The clock, ms since the epoch (the store keeps deadlines on it). @default {Date.now} */
  readonly now?: () => number;
  /**
   * The Subject incarnation this book takes tokens in: a token taken in another one whose flow
   * did not end may be taken again by the same resume. @default {a new random one}
   */
  readonly incarnation?: string;
  /**
   * A resume sent again to a later incarnation runs its flow again even when that flow had ended
   * (its final may have died with an Integration Manager in the Subject's process); else it is a
   * `repeat`. @default {false}
   */
  readonly rerunEnded?: boolean;
  /**
   * The configuration version and flow a paused flow resumes on (`VersionBook.resumeOn`), or
   * `undefined` when a reload removed its flow (`bad_resume`). @default {its flow in `flows`, version 1}
   */
  readonly resumeOn?: (paused: PausedFlow) => { readonly version: number; readonly flow: Flow } | undefined;
}

/**
 * What a resume message comes to: the flow goes on from its `@ASYNC` step with
 * {@linkcode mergedValues}, or an error publication answers it. `paused` is the flow whose token
 * it took, if it took one (even when that flow is no longer loaded).
 */
export type Resume =
  | {
    readonly kind: "resumed";
    readonly paused: PausedFlow;
    readonly flow: Flow;
    /** The configuration version it goes on with. */
    readonly version: number;
    readonly added: Record<string, unknown>;
    /** The values it goes on with: those it paused with, the resume's merged over them (JSON text). */
    readonly values: string;
  }
  | { readonly kind: "error"; readonly error: ErrorSpec; readonly paused?: PausedFlow }
  /** This resume took the token of request `id` before (its flow runs here, ended, or paused again): nothing to do. */
  | { readonly kind: "repeat"; readonly id: string };

/** Pauses, resumes and expiries of flows at their `@ASYNC` steps. */
export class PauseBook {
  readonly #store: PauseStore;
  readonly #flows: ReadonlyMap<string, Flow>;
  readonly #timeout: number;
  readonly #now: () => number;
  readonly #resumeOn?: PauseBookOptions["resumeOn"];
  readonly #incarnation: string;
  readonly #rerunEnded: boolean;

  /** A book over `options.store`. */
  constructor(options: PauseBookOptions) {
    this.#store = options.store;
    this.#flows = options.flows;
    this.#timeout = options.timeout;
    this.#now = options.now ?? Date.now;
    this.#resumeOn = options.resumeOn;
    this.#incarnation = options.incarnation ?? crypto.randomUUID();
    this.#rerunEnded = options.rerunEnded ?? false;
  }

  /** Paused flows now. */
  get count(): number {
    return this.#store.count();
  }

  /**
   * Pauses request `id` of `flow` at its `@ASYNC` step `position` (after `n` steps) with `values`
   * (JSON text), on configuration `version`: saved in the store (on disk before this returns) until
   * `timeout` ms from now. `ends`: the token whose resume ran the flow to this pause, if one did
   * (its resume, sent again, no longer runs the flow). Returns its resume token.
   */
  pause(
    flow: string,
    position: number,
    id: string,
    n: number,
    values: string,
    version?: number,
    ends?: string,
  ): string {
    const token = makeToken(flow, id);
    const now = this.#now();
    const deadline = now + this.#timeout;
    this.#store.save({ token, id, flow, position, n, values, pausedAt: now, deadline, version }, ends);
    return token;
  }

  /**
   * A resume message: its `header` (with the token) and `values`, on a topic of flow `topicFlow`.
   * Its errors go under its own id on `topicFlow`: `bad_request` for values that are not a JSON
   * object (the token is not used), `bad_resume` for a token that is malformed, unknown, expired
   * or used by another resume, `unknown_flow` when the flow it resumes is no longer loaded
   * (`bad_resume` naming it when a reload removed it, with `resumeOn`). The token is kept, taken
   * by this resume (`header.id`), for `timeout` ms ({@linkcode PauseBook.finish} marks its flow
   * ended).
   */
  resume(topicFlow: string, header: Header, values: Uint8Array): Resume {
    const added = decodeValues(values);
    if (typeof added === "string") {
      const message = "the resume values are not a JSON object";
      return {
        kind: "error",
        error: { flow: topicFlow, header, values: undefined, code: "bad_request", message },
      };
    }
    const token = typeof header.resume === "string" ? header.resume : "";
    const wellFormed = parseToken(token) !== undefined;
    const now = this.#now();
    const taker = {
      resume: header.id,
      incarnation: this.#incarnation,
      keepUntil: now + this.#timeout,
      rerunEnded: this.#rerunEnded,
    };
    const take = wellFormed ? this.#store.take(token, taker, now) : undefined;
    if (take?.kind === "repeat") return take;
    if (take?.kind !== "taken") {
      const message = wellFormed
        ? "resume token unknown, expired or already used"
        : "malformed resume token (expected Flow~<32 hex>~<request id>)";
      return { kind: "error", error: { flow: topicFlow, header, values, code: "bad_resume", message } };
    }
    const { paused } = take;
    const own = this.#flows.get(paused.flow);
    const on = this.#resumeOn ? this.#resumeOn(paused) : own && { version: 1, flow: own };
    if (!on) {
      const removed = this.#resumeOn !== undefined;
      const message = removed
        ? `flow "${paused.flow}" was removed by a reload: the configuration version it paused on is retired and the current one does not have it`
        : `flow "${paused.flow}" is no longer loaded`;
      const values = utf8(paused.values);
      const code = removed ? "bad_resume" : "unknown_flow";
      return {
        kind: "error",
        paused,
        error: { flow: paused.flow, header: { id: paused.id }, values, code, message },
      };
    }
    const { flow, version } = on;
    const merged = mergedValues(paused, added);
    if (merged === undefined) {
      // Only a store written by something else holds such values: the Subject pauses JSON objects only.
      const message = "the values this flow paused with are not a JSON object";
      return {
        kind: "error",
        paused,
        error: {
          flow: paused.flow,
          header: { id: paused.id },
          values: undefined,
          code: "bad_resume",
          message,
        },
      };
    }
    return { kind: "resumed", paused, flow, version, added, values: merged };
  }

  /** Whether request `id` has not ended: see `PausedStore.waiting`. */
  waiting(id: string): boolean {
    return this.#store.waiting(id);
  }

  /** Whether request `id` has paused (and so has run): see `PausedStore.known`. */
  known(id: string): boolean {
    return this.#store.known(id);
  }

  /** The flow `token` resumed has ended (its final publication reached the IM): see `PausedStore.finish`. */
  finish(token: string): void {
    this.#store.finish(token);
  }

  /**
   * Takes out the flows whose deadline has passed: the `timeout` errors that end them (a paused
   * flow never resumed, or a resumed one whose Subject died and whose resume was not sent again).
   */
  expire(): ErrorSpec[] {
    return this.#store.expire(this.#now(), this.#incarnation).map((p) => ({
      flow: p.flow,
      header: { id: p.id, pos: p.position },
      values: utf8(p.values),
      code: "timeout",
      message: p.takenBy === undefined
        ? `paused flow was not resumed within ${this.#timeout} ms`
        : `resumed flow was lost with the Subject that ran it, and its resume (${
          JSON.stringify(p.takenBy).slice(0, 60)
        }) was not sent again within ${this.#timeout} ms`,
    }));
  }
}

/**
 * The values a resumed flow goes on with: those it paused with, the resume's merged over them
 * (JSON text); `undefined` when the paused values are not a JSON object.
 */
export function mergedValues(paused: PausedFlow, added: Record<string, unknown>): string | undefined {
  const before = decodeValues(utf8(paused.values));
  return typeof before === "string" ? undefined : JSON.stringify({ ...before, ...added });
}
