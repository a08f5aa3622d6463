/**
 * Flow files (SPEC §3): `[Flow]` sections whose lines are action keys, in order.
 *
 * @module
 */

import { type ActionKey, flowNameErrorColumn, tryParseActionKey } from "./action_key.ts";
import type { Diagnostic } from "./diagnostics.ts";
import { scanIni } from "./_ini.ts";

/** One step of a flow: a key and where it was written. */
export interface FlowStep {
  /** The parsed key. */
  readonly key: ActionKey;
  /** The key as written. */
  readonly text: string;
  /** 1-based line in the flow file. */
  readonly line: number;
  /** 1-based column of the key. */
  readonly column: number;
}

/** A flow: a named, ordered list of steps. `steps[0]` is the entry step. */
export interface Flow {
  /** The section name. */
  readonly name: string;
  /** The file it was loaded from. */
  readonly file: string;
  /** 1-based line of the `[Name]` header. */
  readonly line: number;
  /** The steps in order; may be empty. */
  readonly steps: readonly FlowStep[];
}

/** What {@linkcode parseFlowFile} found. */
export interface FlowFileResult {
  /** Every flow, in file order (a duplicated name appears once, first definition). */
  readonly flows: Flow[];
  /** Every error in the file. */
  readonly diagnostics: Diagnostic[];
}

/**
 * Parses a flow file, reporting every error rather than stopping at the first.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * const { flows } = parseFlowFile("[Echo]\n?Echo?Push\nS?Echo?Echo\n??done\n", "echo.ini");
 * console.log(flows[0].steps.length); // 3
 * ```
 */
export function parseFlowFile(text: string, file: string): FlowFileResult {
  const flows: Flow[] = [];
  const diagnostics: Diagnostic[] = [];
  const seen = new Map<string, number>();
  let current: { name: string; line: number; steps: FlowStep[] } | undefined;
  // Inside a duplicate, invalid or malformed section: keys are still checked, not kept.
  let ignoring = false;
  const error = (line: number, column: number, message: string, related?: Diagnostic["related"]) =>
    diagnostics.push({ file, line, column, severity: "error", message, related });

  for (const l of scanIni(text)) {
    if (l.kind === "malformed") {
      error(l.line, l.column, l.reason); // a broken [header]: its lines belong to no flow
      current = undefined;
      ignoring = true;
      continue;
    }
    if (l.kind === "section") {
      const bad = flowNameErrorColumn(l.name);
      if (bad) {
        const ch = l.name === "" ? "" : ` '${l.name[bad - 1]}'`;
        error(
          l.line,
          l.nameColumn + bad - 1,
          `invalid flow name "${l.name}"${ch ? `: character${ch}` : ": empty"}` +
            "; flow names use letters, digits, '_', '-', '^' and '.'",
        );
        current = undefined;
        ignoring = true;
        continue;
      }
      const earlier = seen.get(l.name);
      if (earlier !== undefined) {
        error(
          l.line,
          l.column,
          `flow "${l.name}" is defined twice in this file (first at line ${earlier}); rename one`,
          [{ file, line: earlier, column: 1 }],
        );
        current = undefined;
        ignoring = true;
        continue;
      }
      seen.set(l.name, l.line);
      current = { name: l.name, line: l.line, steps: [] };
      ignoring = false;
      flows.push({ name: current.name, file, line: current.line, steps: current.steps });
      continue;
    }
    if (!current && !ignoring) {
      error(l.line, l.column, `step "${l.text}" is outside a section; add a [FlowName] header above it`);
      continue;
    }
    const r = tryParseActionKey(l.text);
    if (!r.ok) {
      error(l.line, l.column + r.column - 1, `invalid action key "${l.text}": ${r.reason}`);
      continue;
    }
    current?.steps.push({ key: r.key, text: l.text, line: l.line, column: l.column });
  }
  return { flows, diagnostics };
}
