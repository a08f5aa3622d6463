/**
 * Load diagnostics: errors and warnings with a file, line and column.
 *
 * @module
 */

/** Where a diagnostic points. Lines and columns are 1-based. */
export interface Place {
  /** The file as the user named it. */
  readonly file: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;
}

/** A load error or warning. */
export interface Diagnostic extends Place {
  /** `error` stops a load; `warning` is reported and the load goes on. */
  readonly severity: "error" | "warning";
  /** Sentence case, no trailing period, names the fix where there is one. */
  readonly message: string;
  /** Other places involved (the earlier definition of a duplicate, say). */
  readonly related?: readonly Place[];
}

/**
 * Formats as `file:line:column: severity: message`.
 *
 * @example
 * ```ts
 * import { formatDiagnostic } from "./diagnostics.ts";
 * formatDiagnostic({ file: "a.ini", line: 3, column: 5, severity: "error", message: "Bad key" });
 * // "a.ini:3:5: error: Bad key"
 * ```
 */
export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.severity}: ${d.message}`;
}

/** Formats a place as `file:line`. */
export function formatPlace(p: Pick<Place, "file" | "line">): string {
  return `${p.file}:${p.line}`;
}
