/**
 * Action-mapping files: the `[actionmapping]` section's `key = target` entries. Other
 * sections (`[Request]`, `__class = …` object sections, `[servicemapping]`) are ignored.
 *
 * @module
 */

import { type ActionKey, lookupKey, tryParseActionKey } from "./action_key.ts";
import type { Diagnostic } from "./diagnostics.ts";
import { scanIni } from "./_ini.ts";

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

/** What {@linkcode parseMappingFile} found. */
export interface MappingFileResult {
  /** The entries, in file order (a duplicate lookup key appears once, first definition). */
  readonly entries: MappingEntry[];
  /** Every error in the file. */
  readonly diagnostics: Diagnostic[];
}

/** The name of the section that holds mapping entries (matched case-insensitively). */
export const ACTION_MAPPING_SECTION = "actionmapping";

/**
 * Parses a mapping file, reporting every error.
 *
 * @example
 * ```ts
 * import { parseMappingFile } from "./mapping_file.ts";
 * const { entries } = parseMappingFile("[actionmapping]\n??Echo = ./echo.ts#echo\n", "m.ini");
 * console.log(entries[0].lookup, entries[0].target); // "??Echo" "./echo.ts#echo"
 * ```
 */
export function parseMappingFile(text: string, file: string): MappingFileResult {
  const entries: MappingEntry[] = [];
  const diagnostics: Diagnostic[] = [];
  const seen = new Map<string, MappingEntry>();
  let inMapping = false;
  const error = (line: number, column: number, message: string, related?: Diagnostic["related"]) =>
    diagnostics.push({ file, line, column, severity: "error", message, related });

  for (const l of scanIni(text)) {
    if (l.kind === "section") {
      inMapping = l.name.toLowerCase() === ACTION_MAPPING_SECTION;
      continue;
    }
    if (!inMapping) continue; // other sections are DigitalPy object wiring: ignored
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
    const target = l.text.slice(eq + 1).trim();
    if (keyText === "") {
      error(l.line, l.column, "mapping entry without a key before '='");
      continue;
    }
    const r = tryParseActionKey(keyText);
    if (!r.ok) {
      error(l.line, keyColumn + r.column - 1, `invalid action key "${keyText}": ${r.reason}`);
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
  return { entries, diagnostics };
}
