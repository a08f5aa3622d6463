/**
 * Action-mapping files: the `[actionmapping]` section's `key = target` entries, and the
 * `[actiontimeout]` section's `key = milliseconds` entries (this project's addition: a
 * handler timeout per action, resolved by the same seven rules), and the `[permissions]`
 * section's `kind = list` entries (also ours: what the component's handlers may touch, see
 * `permissions.ts`). Other sections (`[Request]`, `__class = …` object sections,
 * `[servicemapping]`) are ignored.
 *
 * @module
 */

import { type ActionKey, lookupKey, tryParseActionKey } from "./action_key.ts";
import type { Diagnostic } from "./diagnostics.ts";
import { scanIni } from "./_ini.ts";
import {
  type DeclaredPermissions,
  type Grant,
  parseGrant,
  PERMISSION_KINDS,
  type PermissionKind,
} from "./permissions.ts";

/** One `key = target` entry. */
export interface MappingEntry {
  /** The parsed key (a decorator, if written, is kept but plays no part in lookup). */
  readonly key: ActionKey;
  /** The key as written. */
  readonly text: string;
  /** `sender?context?action`: what resolution looks up. */
  readonly lookup: string;
  /** The target as written: `./module.ts#Export.member`, or a foreign (Python) path. */
  readonly target: string;
  /** The file it was loaded from. */
  readonly file: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column of the key. */
  readonly column: number;
}

/** One `key = milliseconds` entry of an `[actiontimeout]` section. */
export interface TimeoutEntry {
  /** The parsed key. */
  readonly key: ActionKey;
  /** The key as written. */
  readonly text: string;
  /** `sender?context?action`: what resolution looks up. */
  readonly lookup: string;
  /** The handler timeout in milliseconds (a positive integer). */
  readonly ms: number;
  /** The file it was loaded from. */
  readonly file: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column of the key. */
  readonly column: number;
}

/** What {@linkcode parseMappingFile} found. */
export interface MappingFileResult {
  /** The entries, in file order (a duplicate lookup key appears once, first definition). */
  readonly entries: MappingEntry[];
  /** The `[actiontimeout]` entries, in file order (duplicates likewise appear once). */
  readonly timeouts: TimeoutEntry[];
  /** The `[permissions]` section, when the file has one. */
  readonly permissions?: DeclaredPermissions;
  /** Every error in the file. */
  readonly diagnostics: Diagnostic[];
}

/** The name of the section that holds mapping entries (matched case-insensitively). */
export const ACTION_MAPPING_SECTION = "actionmapping";

/** The name of the section that holds per-action handler timeouts (matched case-insensitively). */
export const ACTION_TIMEOUT_SECTION = "actiontimeout";

/** The name of the section that declares the component's permissions (matched case-insensitively). */
export const PERMISSIONS_SECTION = "permissions";

/**
 * Parses a mapping file, reporting every error.
 *
 * @example
 * ```ts
 * import { parseMappingFile } from "./mapping_file.ts";
 * const { entries } = parseMappingFile("[actionmapping]\n??Echo = ./echo.ts#echo\n", "m.ini");
 * console.log(entries[0].lookup, entries[0].target); // "??Echo" "./echo.ts#echo"
 * const { timeouts } = parseMappingFile("[actiontimeout]\n??Echo = 500\n", "m.ini");
 * console.log(timeouts[0].ms); // 500
 * ```
 */
export function parseMappingFile(text: string, file: string): MappingFileResult {
  const entries: MappingEntry[] = [];
  const timeouts: TimeoutEntry[] = [];
  const diagnostics: Diagnostic[] = [];
  const seen = new Map<string, MappingEntry>();
  const seenTimeouts = new Map<string, TimeoutEntry>();
  let section: "mapping" | "timeout" | "permissions" | undefined;
  let grants: Partial<Record<PermissionKind, Grant>> | undefined;
  const grantLines: Partial<Record<PermissionKind, number>> = {};
  const error = (line: number, column: number, message: string, related?: Diagnostic["related"]) =>
    diagnostics.push({ file, line, column, severity: "error", message, related });

  for (const l of scanIni(text)) {
    if (l.kind === "section") {
      const name = l.name.toLowerCase();
      section = name === ACTION_MAPPING_SECTION
        ? "mapping"
        : name === ACTION_TIMEOUT_SECTION
        ? "timeout"
        : name === PERMISSIONS_SECTION
        ? "permissions"
        : undefined;
      if (section === "permissions") grants ??= {};
      continue;
    }
    if (!section) continue; // other sections are DigitalPy object wiring: ignored
    if (l.kind === "malformed") {
      error(l.line, l.column, l.reason);
      continue;
    }
    const eq = l.text.search(/[=:]/);
    if (eq < 0) {
      error(l.line, l.column, `mapping entry "${l.text}" has no '=': write it as key = target`);
      continue;
    }
    const rawKey = l.text.slice(0, eq);
    const keyText = rawKey.trim();
    const keyColumn = l.column + (rawKey.length - rawKey.trimStart().length);
    const rawTarget = l.text.slice(eq + 1);
    const target = rawTarget.trim();
    const targetColumn = l.column + eq + 1 + (rawTarget.length - rawTarget.trimStart().length);
    if (keyText === "") {
      error(l.line, l.column, "mapping entry without a key before '='");
      continue;
    }
    if (section === "permissions") {
      const kind = keyText.toLowerCase() as PermissionKind;
      if (!PERMISSION_KINDS.includes(kind)) {
        error(l.line, keyColumn, `unknown permission "${keyText}"; known: ${PERMISSION_KINDS.join(", ")}`);
        continue;
      }
      if (grantLines[kind] !== undefined) {
        error(l.line, keyColumn, `"${kind}" is given twice (line ${grantLines[kind]}); list it once`);
        continue;
      }
      const grant = parseGrant(kind, target);
      if (typeof grant === "string") {
        error(l.line, targetColumn, grant);
        continue;
      }
      grants![kind] = grant;
      grantLines[kind] = l.line;
      continue;
    }
    const r = tryParseActionKey(keyText);
    if (!r.ok) {
      error(l.line, keyColumn + r.column - 1, `invalid action key "${keyText}": ${r.reason}`);
      continue;
    }
    if (section === "timeout") {
      const ms = Number(target);
      if (!/^\d+$/.test(target) || !Number.isSafeInteger(ms) || ms < 1) {
        error(
          l.line,
          targetColumn,
          `timeout for "${keyText}" is "${target}": write a whole number of milliseconds, e.g. ${keyText} = 5000`,
        );
        continue;
      }
      const t: TimeoutEntry = {
        key: r.key,
        text: keyText,
        lookup: lookupKey(r.key),
        ms,
        file,
        line: l.line,
        column: keyColumn,
      };
      const before = seenTimeouts.get(t.lookup);
      if (before) {
        error(
          l.line,
          keyColumn,
          `"${keyText}" repeats the timeout key "${t.lookup}" of line ${before.line}; keep one of the two lines`,
          [{ file, line: before.line, column: before.column }],
        );
        continue;
      }
      seenTimeouts.set(t.lookup, t);
      timeouts.push(t);
      continue;
    }
    if (target === "") {
      error(l.line, l.column + eq + 1, `mapping entry "${keyText}" has an empty target`);
      continue;
    }
    const entry: MappingEntry = {
      key: r.key,
      text: keyText,
      lookup: lookupKey(r.key),
      target,
      file,
      line: l.line,
      column: keyColumn,
    };
    const earlier = seen.get(entry.lookup);
    if (earlier) {
      error(
        l.line,
        keyColumn,
        `"${keyText}" repeats lookup key "${entry.lookup}" of line ${earlier.line} ` +
          `("${earlier.text}"); keep one of the two lines`,
        [{ file, line: earlier.line, column: earlier.column }],
      );
      continue;
    }
    seen.set(entry.lookup, entry);
    entries.push(entry);
  }
  const permissions = grants && { file, grants, lines: grantLines };
  return { entries, timeouts, ...(permissions ? { permissions } : {}), diagnostics };
}
