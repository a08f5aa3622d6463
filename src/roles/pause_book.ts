/**
 * The Subject's paused flows (`@ASYNC` steps) over the store that keeps them: pausing, resuming,
 * and expiry. Pure decisions with an injected store and clock: the Subject publishes what they
 * say. The store takes a token atomically, so of two resumes racing for one token exactly one
 * wins and the other is told `bad_resume`.
 *
 * @example
 * ```ts
 * import { mergedValues, PauseBook } from "./pause_book.ts";
 * import { PausedStore } from "./paused_store.ts";
 * let now = 0;
 * const book = new PauseBook({ store: new PausedStore(":memory:"), timeout: 1000, now: () => now });
 * const token = book.pause("Order", 2, "r1", 3, '{"a":1}');
 * const first = book.resume(token, { b: 2 }), second = book.resume(token, {});
 * console.log(first.kind, second.kind); // resumed bad_resume
 * if (first.kind === "resumed") console.log(mergedValues(first.paused, first.added)); // {"a":1,"b":2}
 * ```
 *
 * @module
 */

import { makeToken, parseToken } from "../wire/protocol.ts";
import type { PausedFlow, PausedStore } from "./paused_store.ts";

/** What the pause book needs of a store (see `paused_store.ts`). */
export type PauseStore = Pick<PausedStore, "save" | "take" | "expire" | "count">;

/** Options of {@linkcode PauseBook}. */
export interface PauseBookOptions {
  /** Where paused flows are kept. */
  readonly store: PauseStore;
  /** Milliseconds a paused flow waits for its resume. */
  readonly timeout: number;
  /** The clock, ms since the epoch (the store keeps deadlines on it). @default {Date.now} */
  readonly now?: () => number;
}

/** What a resume message comes to. */
export type Resume =
  /** The token took: the flow goes on from its `@ASYNC` step with {@linkcode mergedValues}. */
  | { readonly kind: "resumed"; readonly paused: PausedFlow; readonly added: Record<string, unknown> }
  /** The values are not a JSON object: the token is not used. */
  | { readonly kind: "bad_request"; readonly message: string }
  /** The token is malformed, unknown, expired or already used. */
  | { readonly kind: "bad_resume"; readonly message: string };

/** A paused flow that was not resumed in time. */
export interface Expired {
  readonly paused: PausedFlow;
  /** The `timeout` error's message. */
  readonly message: string;
}

/** Pauses, resumes and expiries of flows at their `@ASYNC` steps. */
export class PauseBook {
  readonly #store: PauseStore;
  readonly #timeout: number;
  readonly #now: () => number;

  /** A book over `options.store`. */
  constructor(options: PauseBookOptions) {
    this.#store = options.store;
    this.#timeout = options.timeout;
    this.#now = options.now ?? Date.now;
  }

  /** Paused flows now. */
  get count(): number {
    return this.#store.count();
  }

  /**
   * Pauses request `id` of `flow` at its `@ASYNC` step `position` (after `n` steps) with `values`
   * (JSON text): saved in the store (on disk before this returns) until `timeout` ms from now.
   * Returns its resume token.
   */
  pause(flow: string, position: number, id: string, n: number, values: string): string {
    const token = makeToken(flow, id);
    const now = this.#now();
    this.#store.save({ token, id, flow, position, n, values, pausedAt: now, deadline: now + this.#timeout });
    return token;
  }

  /**
   * A resume message with token `token` and values `added` (a JSON object, or why it is not one).
   * The token is taken (used up) only when the values are good.
   */
  resume(token: string, added: Record<string, unknown> | string): Resume {
    if (typeof added === "string") {
      return { kind: "bad_request", message: "the resume values are not a JSON object" };
    }
    const wellFormed = parseToken(token) !== undefined;
    const paused = wellFormed ? this.#store.take(token, this.#now()) : undefined;
    if (!paused) {
      return {
        kind: "bad_resume",
        message: wellFormed
          ? "resume token unknown, expired or already used"
          : "malformed resume token (expected Flow~<32 hex>~<request id>)",
      };
    }
    return { kind: "resumed", paused, added };
  }

  /** Takes out the flows whose deadline has passed. */
  expire(): Expired[] {
    return this.#store.expire(this.#now()).map((paused) => ({
      paused,
      message: `paused flow was not resumed within ${this.#timeout} ms`,
    }));
  }
}

/** The values a resumed flow goes on with: those it paused with, the resume's merged over them (JSON text). */
export function mergedValues(paused: PausedFlow, added: Record<string, unknown>): string {
  return JSON.stringify({ ...JSON.parse(paused.values), ...added });
}
