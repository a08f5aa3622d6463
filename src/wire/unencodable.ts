/**
 * Finds where a value that `JSON.stringify` refused went wrong: the key path of the first
 * offending value, in the order `JSON.stringify` visits them, and why (a BigInt, a circular
 * reference, a getter or `toJSON` that threw). Pure; called only after `JSON.stringify` threw,
 * so the hot path never pays for the walk.
 *
 * @example
 * ```ts
 * import { findUnencodable } from "./unencodable.ts";
 * const values: Record<string, unknown> = { a: { b: [1, 2, 3n] } };
 * console.log(findUnencodable(values)); // { path: "values.a.b[2]", reason: "BigInt" }
 * ```
 *
 * @module
 */

import { describeError } from "../topic/segment.ts";
import { utf8 } from "./protocol.ts";

/** Where and why a value cannot be encoded as JSON. */
export interface Unencodable {
  /** The key path from the root, e.g. `values.a.b[2]` or `values["a key"]`. */
  readonly path: string;
  /** Why: `BigInt`, `circular reference (to values.a)`, `reading it threw: …`, `its toJSON threw: …`. */
  readonly reason: string;
}

/** A path longer than this many keys is shown with its middle left out. */
const MAX_PATH_KEYS = 40;

/** One value to visit: `holder[key]`, below `parent`. */
interface Visit {
  readonly holder: unknown;
  readonly key: string;
  /** The key as shown in a path (`.a`, `["a b"]`, `[2]`), or the root's name. */
  readonly segment: string;
  readonly parent: Visit | undefined;
}

/** The end of an object's or array's visit: it is no longer an ancestor. */
interface Leave {
  readonly leave: object;
}

/**
 * The key path and reason of the first value in `value` that `JSON.stringify(value)` cannot
 * encode, or `undefined` if there is none (then its error was something else, e.g. nesting
 * too deep for the stack: this walk uses no recursion). `root` names the value in the path.
 */
export function findUnencodable(value: unknown, root = "values"): Unencodable | undefined {
  const rootVisit: Visit = { holder: { "": value }, key: "", segment: root, parent: undefined };
  const stack: (Visit | Leave)[] = [rootVisit];
  /** The objects being visited (each an ancestor of what is visited now), with their visits. */
  const ancestors = new Map<object, Visit>();
  while (stack.length) {
    const top = stack.pop()!;
    if ("leave" in top) {
      ancestors.delete(top.leave);
      continue;
    }
    const at = top;
    let v: unknown;
    try {
      v = (at.holder as Record<string, unknown>)[at.key];
    } catch (e) {
      return found(at, `reading it threw: ${describeError(e)}`);
    }
    if ((typeof v === "object" && v !== null) || typeof v === "bigint") {
      let toJSON: unknown;
      try {
        toJSON = (v as { toJSON?: unknown }).toJSON;
      } catch (e) {
        return found(at, `reading its toJSON threw: ${describeError(e)}`);
      }
      if (typeof toJSON === "function") {
        try {
          v = toJSON.call(v, at.key);
        } catch (e) {
          return found(at, `its toJSON threw: ${describeError(e)}`);
        }
      }
    }
    if (typeof v === "bigint" || isBigIntObject(v)) return found(at, "BigInt");
    if (typeof v !== "object" || v === null) continue; // strings, numbers, booleans; others are left out
    const seen = ancestors.get(v);
    if (seen) return found(at, `circular reference (to ${pathOf(seen)})`);
    let keys: string[];
    let isArray: boolean;
    try {
      isArray = Array.isArray(v);
      keys = isArray ? [] : Object.keys(v);
      if (isArray) { for (let i = 0, n = (v as unknown[]).length; i < n; i++) keys.push(String(i)); }
    } catch (e) {
      return found(at, `listing its keys threw: ${describeError(e)}`);
    }
    ancestors.set(v, at);
    stack.push({ leave: v });
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i];
      stack.push({ holder: v, key, segment: isArray ? `[${key}]` : segmentOf(key), parent: at });
    }
  }
  return undefined;
}

function found(at: Visit, reason: string): Unencodable {
  return { path: pathOf(at), reason };
}

/** A BigInt wrapper object (`Object(1n)`), which `JSON.stringify` refuses too. */
function isBigIntObject(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  try {
    BigInt.prototype.valueOf.call(v);
    return true;
  } catch {
    return false;
  }
}

function segmentOf(key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

function pathOf(at: Visit): string {
  const segments: string[] = [];
  for (let v: Visit | undefined = at; v; v = v.parent) segments.push(v.segment);
  segments.reverse();
  if (segments.length <= MAX_PATH_KEYS) return segments.join("");
  const half = MAX_PATH_KEYS / 2;
  return `${segments.slice(0, half).join("")}…(${segments.length - MAX_PATH_KEYS} keys)…${
    segments.slice(-half).join("")
  }`;
}

/** `{}` as a frame: the values of a publication whose own values cannot be sent. */
export const EMPTY_VALUES: Uint8Array = utf8("{}");

/**
 * Values as a frame: a JSON object of at most `max` bytes. Otherwise what is wrong, as the end
 * of a sentence (`values JSON cannot encode: values.a[2]: BigInt`). The hot path is one
 * `JSON.stringify`; only after it throws is the value walked to find where.
 *
 * @example
 * ```ts
 * import { encodeValues } from "./unencodable.ts";
 * encodeValues({ a: 1 }, 100); // the bytes of {"a":1}
 * encodeValues({ a: 1n }, 100); // "values JSON cannot encode: values.a: BigInt"
 * ```
 */
export function encodeValues(values: unknown, max: number): Uint8Array | string {
  let json: string | undefined;
  try {
    json = JSON.stringify(values);
  } catch (e) {
    const at = findUnencodable(values);
    return `values JSON cannot encode: ${at ? `${at.path}: ${at.reason}` : describeError(e)}`;
  }
  if (typeof json !== "string" || json.charCodeAt(0) !== 0x7b /* { */) {
    return `values that do not encode as a JSON object (they encode as ${String(json).slice(0, 40)})`;
  }
  if (json.length > max) return `${utf8Length(json)} bytes of values, over max_message_size (${max} bytes)`;
  const bytes = utf8(json);
  if (bytes.length > max) return `${bytes.length} bytes of values, over max_message_size (${max} bytes)`;
  return bytes;
}

/** The UTF-8 length of a string too large to send, without encoding it. */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
