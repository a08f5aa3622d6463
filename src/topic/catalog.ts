/**
 * Loading several flow and mapping files together (SPEC §2–§3): file kinds told by
 * content, duplicate rules within a file, conflicts across files (warning, later file
 * wins; error in strict mode).
 *
 * Pure: it takes file texts, not paths; {@linkcode loadCatalogFiles} in `load.ts` reads
 * the files.
 *
 * @module
 */

import { type Diagnostic, formatPlace } from "./diagnostics.ts";
import { type Flow, parseFlowFile } from "./flow_file.ts";
import { type MappingEntry, parseMappingFile, type TimeoutEntry } from "./mapping_file.ts";
import { hasActionMappingSection } from "./_ini.ts";
import { type DeclaredPermissions, riskyGrants } from "./permissions.ts";

/** What a file holds. */
export type FileKind = "flow" | "mapping";

/** A file to load. */
export interface SourceFile {
  /** The path as the user named it (used in diagnostics). */
  readonly file: string;
  /** Its text. */
  readonly text: string;
  /** Forces the kind; by default it is told by content. */
  readonly kind?: FileKind;
}

/** Options for {@linkcode buildCatalog}. */
export interface CatalogOptions {
  /**
   * Turns cross-file conflicts into errors.
   * @default {false}
   */
  readonly strict?: boolean;
  /**
   * In strict mode, lets a component ask to run programs or for unrestricted network access
   * (`--allow-component-permissions`); without it, strict mode refuses such a component.
   * @default {false}
   */
  readonly allowComponentPermissions?: boolean;
}

/** Flows and mappings loaded from a set of files. */
export interface Catalog {
  /** Flows by name (the winning definition on a cross-file conflict). */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Mapping entries by lookup key (the winning definition on a conflict). */
  readonly mappings: ReadonlyMap<string, MappingEntry>;
  /** Every flow found, in load order, including ones that lost a conflict. */
  readonly allFlows: readonly Flow[];
  /** Every mapping entry found, in load order, including ones that lost a conflict. */
  readonly allMappings: readonly MappingEntry[];
  /** Per-action handler timeouts (`[actiontimeout]`) by lookup key; the later file wins. */
  readonly timeouts: ReadonlyMap<string, TimeoutEntry>;
  /** The `[permissions]` sections, by mapping file (a mapping file without one is not listed). */
  readonly permissions: ReadonlyMap<string, DeclaredPermissions>;
  /** The kind each file was read as, in load order. */
  readonly files: readonly { readonly file: string; readonly kind: FileKind }[];
  /** Errors and warnings from every file. */
  readonly diagnostics: readonly Diagnostic[];
}

/**
 * Tells a file's kind by its content: an `[actionmapping]` section makes a mapping file.
 *
 * @example
 * ```ts
 * import { detectKind } from "./catalog.ts";
 * detectKind("[actionmapping]\n??A = x\n"); // "mapping"
 * ```
 */
export function detectKind(text: string): FileKind {
  return hasActionMappingSection(text) ? "mapping" : "flow";
}

/** True when the diagnostics hold at least one error. */
export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === "error");
}

/**
 * Loads files in order into one catalog. Later files win conflicts.
 *
 * @example
 * ```ts
 * import { buildCatalog } from "./catalog.ts";
 * const c = buildCatalog([
 *   { file: "a.ini", text: "[F]\n?F?Push\n??done\n" },
 *   { file: "m.ini", text: "[actionmapping]\n??Go = ./go.ts#go\n" },
 * ]);
 * console.log(c.flows.size, c.mappings.size); // 1 1
 * ```
 */
export function buildCatalog(sources: readonly SourceFile[], options: CatalogOptions = {}): Catalog {
  const strict = options.strict ?? false;
  const severity = strict ? "error" : "warning";
  const diagnostics: Diagnostic[] = [];
  const allFlows: Flow[] = [];
  const allMappings: MappingEntry[] = [];
  const allTimeouts: TimeoutEntry[] = [];
  const files: { file: string; kind: FileKind }[] = [];
  const permissions = new Map<string, DeclaredPermissions>();
  for (const src of sources) {
    const kind = src.kind ?? detectKind(src.text);
    files.push({ file: src.file, kind });
    if (kind === "mapping") {
      const r = parseMappingFile(src.text, src.file);
      allMappings.push(...r.entries);
      allTimeouts.push(...r.timeouts);
      diagnostics.push(...r.diagnostics);
      if (r.permissions) {
        permissions.set(src.file, r.permissions);
        if (strict && !options.allowComponentPermissions) {
          for (const { kind, reason } of riskyGrants(r.permissions)) {
            diagnostics.push({
              file: src.file,
              line: r.permissions.lines[kind] ?? 1,
              column: 1,
              severity: "error",
              message: `the component ${reason}: strict mode refuses it unless --allow-component-permissions`,
            });
          }
        }
      }
    } else {
      const r = parseFlowFile(src.text, src.file);
      allFlows.push(...r.flows);
      diagnostics.push(...r.diagnostics);
    }
  }

  const flowGroups = group(allFlows, (f) => f.name);
  const flows = new Map<string, Flow>();
  for (const [name, defs] of flowGroups) {
    const winner = defs[defs.length - 1];
    flows.set(name, winner);
    if (defs.length > 1) {
      diagnostics.push({
        file: winner.file,
        line: winner.line,
        column: 1,
        severity,
        message: `flow "${name}" is defined in ${defs.length} files (` +
          defs.map(formatPlace).join(", ") +
          `); ${strict ? "strict mode forbids this" : `the last, ${formatPlace(winner)}, wins`}`,
        related: defs.slice(0, -1).map((d) => ({ file: d.file, line: d.line, column: 1 })),
      });
    }
  }

  const conflict =
    (what: string, verb: string) =>
    <T extends { file: string; line: number; column: number }>(key: string, defs: T[], winner: T) =>
      diagnostics.push({
        file: winner.file,
        line: winner.line,
        column: winner.column,
        severity,
        message: `${what} "${key}" ${verb} in ${defs.length} places (` + defs.map(formatPlace).join(", ") +
          `); ${strict ? "strict mode forbids this" : `the last, ${formatPlace(winner)}, wins`}`,
        related: defs.slice(0, -1).map((d) => ({ file: d.file, line: d.line, column: d.column })),
      });
  const mappings = lastWins(allMappings, (m) => m.lookup, conflict("mapping", "is defined"));
  const timeouts = lastWins(allTimeouts, (t) => t.lookup, conflict("timeout", "is set"));
  return { flows, mappings, allFlows, allMappings, timeouts, permissions, files, diagnostics };
}

/** The last definition of each key; `onConflict` hears of every key defined more than once. */
function lastWins<T>(
  items: readonly T[],
  keyOf: (t: T) => string,
  onConflict: (key: string, defs: T[], winner: T) => void,
): Map<string, T> {
  const out = new Map<string, T>();
  for (const [key, defs] of group(items, keyOf)) {
    const winner = defs[defs.length - 1];
    out.set(key, winner);
    if (defs.length > 1) onConflict(key, defs, winner);
  }
  return out;
}

function group<T>(items: readonly T[], keyOf: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = keyOf(it);
    const list = m.get(k);
    if (list) list.push(it);
    else m.set(k, [it]);
  }
  return m;
}
