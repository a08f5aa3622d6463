/**
 * Resolving a concrete key to a handler entry by the seven rules of SPEC §2.
 *
 * @module
 */

import type { LookupFields } from "./action_key.ts";

/** The seven lookup patterns, in precedence order (index 0 is rule 1). */
export const RULES: readonly string[] = Object.freeze([
  "s?c?a",
  "s??a",
  "?c?a",
  "s?c?",
  "s??",
  "??a",
  "?c?",
]);

/** One lookup tried for a key. */
export interface Candidate {
  /** 1 to 7. */
  readonly rule: number;
  /** The rule's pattern, e.g. `s??a`. */
  readonly pattern: string;
  /** The lookup key built from the concrete key, e.g. `Subject??Connect`. */
  readonly lookup: string;
}

/**
 * The lookup keys for a concrete key, in rule order. A key with empty fields yields the
 * same lookup under several rules; each is listed under every rule that produces it.
 *
 * @example
 * ```ts
 * import { candidates } from "./resolve.ts";
 * candidates({ sender: "S", context: "C", decorator: "", action: "A" })[1].lookup; // "S??A"
 * ```
 */
export function candidates(key: LookupFields): Candidate[] {
  const { sender: s, context: c, action: a } = key;
  const lookups = [`${s}?${c}?${a}`, `${s}??${a}`, `?${c}?${a}`, `${s}?${c}?`, `${s}??`, `??${a}`, `?${c}?`];
  return lookups.map((lookup, i) => ({ rule: i + 1, pattern: RULES[i], lookup }));
}

/** A successful resolution. */
export interface Resolution<T> extends Candidate {
  /** The mapping entry found. */
  readonly entry: T;
}

/**
 * Resolves a key against a mapping keyed by lookup key; decorators play no part.
 * Returns `undefined` when no rule finds an entry.
 *
 * @example
 * ```ts
 * import { resolveKey } from "./resolve.ts";
 * const m = new Map([["??Echo", "echo"]]);
 * resolveKey(m, { sender: "Subject", context: "Flow", decorator: "", action: "Echo" })?.rule; // 6
 * ```
 */
export function resolveKey<T>(
  mapping: ReadonlyMap<string, T>,
  key: LookupFields,
): Resolution<T> | undefined {
  for (const c of candidates(key)) {
    const entry = mapping.get(c.lookup);
    if (entry !== undefined) return { ...c, entry };
  }
  return undefined;
}

/** What {@linkcode explainKey} reports: every candidate and which one won. */
export interface Explanation<T> {
  /** Each lookup tried, in order, and whether an entry exists for it. */
  readonly tried: readonly (Candidate & { readonly found: boolean })[];
  /** The first candidate with an entry, if any. */
  readonly resolution?: Resolution<T>;
}

/**
 * Like {@linkcode resolveKey}, but lists every candidate and whether it exists.
 *
 * @example
 * ```ts
 * import { explainKey } from "./resolve.ts";
 * const e = explainKey(new Map([["?C?", 1]]), { sender: "S", context: "C", decorator: "", action: "A" });
 * console.log(e.resolution?.rule, e.tried.filter((t) => t.found).length); // 7 1
 * ```
 */
export function explainKey<T>(
  mapping: ReadonlyMap<string, T>,
  key: LookupFields,
): Explanation<T> {
  const tried = candidates(key).map((c) => ({ ...c, found: mapping.has(c.lookup) }));
  const first = tried.find((t) => t.found);
  return {
    tried,
    resolution: first
      ? { rule: first.rule, pattern: first.pattern, lookup: first.lookup, entry: mapping.get(first.lookup)! }
      : undefined,
  };
}
