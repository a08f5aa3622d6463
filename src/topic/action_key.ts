/**
 * Action keys: `Sender?Context@Decorator?Action` (SPEC §2).
 *
 * Pure functions only: parsing, formatting, wildcard matching and the lookup key
 * used by mapping resolution. No socket code may be imported here.
 *
 * @module
 */

/** A parsed action key. Every field may be empty, which makes it a wildcard. */
export interface ActionKey {
  /** The component or service that sends the message. */
  readonly sender: string;
  /** Routes the message to a component and names the flow it belongs to. */
  readonly context: string;
  /** Optional routing behaviour: `PUBLISH`, `ASYNC`, or any other name kept as data. */
  readonly decorator: string;
  /** What is to be done. */
  readonly action: string;
}

/** The fields handler lookup reads: a full {@linkcode ActionKey} fits, decorator and all. */
export interface LookupFields {
  /** Sender. */
  readonly sender: string;
  /** Context. */
  readonly context: string;
  /** Action. */
  readonly action: string;
  /** Ignored by lookup. */
  readonly decorator?: string;
}

/** The decorator that hands a step to the Integration Manager instead of a worker. */
export const PUBLISH = "PUBLISH";
/** The decorator that pauses a flow until a resume message arrives. */
export const ASYNC = "ASYNC";
/** The end-of-flow key, `??done`. */
export const DONE_KEY: ActionKey = Object.freeze({
  sender: "",
  context: "",
  decorator: "",
  action: "done",
});

/**
 * A key that could not be parsed. `column` is 1-based and points at the offending
 * character (or one past the end when something is missing).
 */
export class ActionKeySyntaxError extends SyntaxError {
  /** 1-based column of the problem within the key text. */
  readonly column: number;
  /** The reason without position, e.g. `invalid character ' '`. */
  readonly reason: string;
  /** The text that was parsed. */
  readonly text: string;
  /** What kind of error this is, for programs: `bad_action_key`. */
  readonly code = "bad_action_key";

  /** Builds the error; the message quotes the text and names the column. */
  constructor(text: string, column: number, reason: string) {
    super(`Invalid action key "${text}" at column ${column}: ${reason}`);
    this.name = "ActionKeySyntaxError";
    this.text = text;
    this.column = column;
    this.reason = reason;
  }
}

/** Result of {@linkcode tryParseActionKey}. */
export type ParseResult =
  | { readonly ok: true; readonly key: ActionKey }
  | { readonly ok: false; readonly column: number; readonly reason: string };

function isFieldChar(code: number): boolean {
  return (code >= 48 && code <= 57) || // 0-9
    (code >= 65 && code <= 90) || // A-Z
    (code >= 97 && code <= 122) || // a-z
    code === 95 || code === 45 || code === 94; // _ - ^
}

function describe(ch: string): string {
  if (ch === " ") return "' ' (space)";
  if (ch === "\t") return "'\\t' (tab)";
  const code = ch.codePointAt(0)!;
  if (code < 32 || code === 127) return `'\\x${code.toString(16).padStart(2, "0")}'`;
  return `'${ch}'`;
}

/**
 * Parses key text without throwing.
 *
 * @example
 * ```ts
 * import { tryParseActionKey } from "./action_key.ts";
 * const r = tryParseActionKey("Subject?IAM?Connect");
 * if (r.ok) console.log(r.key.context); // "IAM"
 * ```
 */
export function tryParseActionKey(text: string): ParseResult {
  if (text.length === 0) return { ok: false, column: 1, reason: "empty key" };
  const fields = ["", "", "", ""]; // sender, context, decorator, action
  let part = 0; // 0 sender, 1 context, 2 decorator, 3 action
  let start = 0;
  let sawAt = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (isFieldChar(code)) continue;
    const ch = text[i];
    if (ch === "?") {
      fields[part] = text.slice(start, i);
      if (part === 0) part = 1;
      else if (part === 1 || part === 2) part = 3;
      else {
        return {
          ok: false,
          column: i + 1,
          reason: "a third '?': a key has exactly two '?' separators",
        };
      }
      start = i + 1;
      continue;
    }
    if (ch === "@") {
      if (part === 0) {
        return {
          ok: false,
          column: i + 1,
          reason: "'@' before the first '?': the decorator follows the context",
        };
      }
      if (part === 3) {
        return {
          ok: false,
          column: i + 1,
          reason: "'@' after the second '?': the decorator follows the context",
        };
      }
      if (sawAt) return { ok: false, column: i + 1, reason: "a second '@'" };
      sawAt = true;
      fields[1] = text.slice(start, i);
      part = 2;
      start = i + 1;
      continue;
    }
    return { ok: false, column: i + 1, reason: `invalid character ${describe(ch)}` };
  }
  if (part !== 3) {
    const found = part === 0 ? "none" : "one";
    return {
      ok: false,
      column: text.length + 1,
      reason: `expected two '?' separators, found ${found}`,
    };
  }
  fields[3] = text.slice(start);
  if (sawAt && fields[2] === "") {
    const at = text.indexOf("@");
    return { ok: false, column: at + 1, reason: "'@' with an empty decorator" };
  }
  return {
    ok: true,
    key: { sender: fields[0], context: fields[1], decorator: fields[2], action: fields[3] },
  };
}

/**
 * Parses `Sender?Context@Decorator?Action`.
 *
 * @throws {ActionKeySyntaxError} naming the offending character and its column.
 * @example
 * ```ts
 * import { parseActionKey } from "./action_key.ts";
 * const key = parseActionKey("?ServiceManagement@PUBLISH?get_topics");
 * console.log(key.decorator); // "PUBLISH"
 * ```
 */
export function parseActionKey(text: string): ActionKey {
  const r = tryParseActionKey(text);
  if (!r.ok) throw new ActionKeySyntaxError(text, r.column, r.reason);
  return r.key;
}

/**
 * Formats a key back to text; the inverse of {@linkcode parseActionKey}.
 *
 * @example
 * ```ts
 * import { formatActionKey } from "./action_key.ts";
 * formatActionKey({ sender: "", context: "Chat", decorator: "ASYNC", action: "Reply" });
 * // "?Chat@ASYNC?Reply"
 * ```
 */
export function formatActionKey(key: ActionKey): string {
  const middle = key.decorator === "" ? key.context : `${key.context}@${key.decorator}`;
  return `${key.sender}?${middle}?${key.action}`;
}

function fieldMatches(a: string, b: string): boolean {
  return a === b || a === "" || b === "";
}

/**
 * Wildcard matching (SPEC §2): for each of sender, context, decorator and action the
 * values are equal or at least one of them is empty.
 *
 * @example
 * ```ts
 * import { keysMatch, parseActionKey } from "./action_key.ts";
 * keysMatch(parseActionKey("??Push"), parseActionKey("S?Flow?Push")); // true
 * ```
 */
export function keysMatch(a: ActionKey, b: ActionKey): boolean {
  return fieldMatches(a.sender, b.sender) && fieldMatches(a.context, b.context) &&
    fieldMatches(a.decorator, b.decorator) && fieldMatches(a.action, b.action);
}

/**
 * True for the end-of-flow key `??done` (exactly: empty sender, context and decorator).
 *
 * @example
 * ```ts
 * import { isDone, parseActionKey } from "./action_key.ts";
 * isDone(parseActionKey("??done")); // true
 * ```
 */
export function isDone(key: ActionKey): boolean {
  return key.action === "done" && key.sender === "" && key.context === "" &&
    key.decorator === "";
}

/**
 * The key a mapping entry is filed under: the text form without the decorator,
 * since decorators play no part in handler lookup.
 *
 * @example
 * ```ts
 * import { lookupKey, parseActionKey } from "./action_key.ts";
 * lookupKey(parseActionKey("S?Ctx@PUBLISH?Act")); // "S?Ctx?Act"
 * ```
 */
export function lookupKey(key: LookupFields): string {
  return `${key.sender}?${key.context}?${key.action}`;
}

/** Characters allowed in a flow name: the key field characters plus `.`. */
const FLOW_NAME = /^[A-Za-z0-9_.^-]+$/;

/**
 * Checks a flow (section) name. Flow names appear in topics, where `~` separates
 * fields, so they are limited to letters, digits, `_`, `-`, `^` and `.`.
 * Returns the 1-based column of the first bad character, or 0 when the name is valid.
 *
 * @example
 * ```ts
 * import { flowNameErrorColumn } from "./action_key.ts";
 * flowNameErrorColumn("IAMConnection"); // 0
 * flowNameErrorColumn("a~b"); // 2
 * ```
 */
export function flowNameErrorColumn(name: string): number {
  if (FLOW_NAME.test(name)) return 0;
  if (name.length === 0) return 1;
  for (let i = 0; i < name.length; i++) {
    if (!/[A-Za-z0-9_.^-]/.test(name[i])) return i + 1;
  }
  return 1;
}
