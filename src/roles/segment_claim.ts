/**
 * What a handler sandbox may answer for a step: the main thread of a worker checks each result
 * a sandbox sends against the segment that sandbox could have run, since the handler code in it
 * can write to its results ring, or post to the main thread, anything it likes. A segment starts
 * at the step it was given and runs on while the next steps are plain ones its own handlers map;
 * it ends at the flow's end (`done`), at a `@PUBLISH` or `@ASYNC` step (`publish`, `pause`), or
 * at a step another sandbox maps (a hand-off to that sandbox). An `error` is always possible: a
 * sandbox can fail its own step. Pure.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "../topic/flow_file.ts";
 * import { segmentEnd } from "./segment_claim.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nA?F?a\nB?F?b\n??done\n", "f.ini").flows[0];
 * // Sandbox 0 maps A's step, sandbox 1 B's.
 * segmentEnd(flow, [null, 0, 1, null], 1, 0); // { kind: "handoff", pos: 2, to: 1 }
 * segmentEnd(flow, [null, 0, 1, null], 2, 1); // { kind: "done", pos: 3 }
 * ```
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { stepKind } from "../topic/flow_step.ts";

/** Where a segment run by one sandbox ends, if none of its steps fails. */
export type SegmentEnd =
  /** The flow ends, or reaches a `@PUBLISH` or `@ASYNC` step, at `pos`. */
  | { readonly kind: "done" | "publish" | "pause"; readonly pos: number }
  /** The step at `pos` is mapped by sandbox `to`: the segment goes on there. */
  | { readonly kind: "handoff"; readonly pos: number; readonly to: number }
  /** The step at `pos` has no handler: only an error can come. */
  | { readonly kind: "error"; readonly pos: number };

/**
 * Where the segment that sandbox `sandbox` runs from step `start` of `flow` ends; `owners` gives
 * the sandbox that maps each step (`null`: none). The step at `start` itself is run there (or
 * passed through, when a resumed `@ASYNC` step no handler maps).
 */
export function segmentEnd(
  flow: Flow,
  owners: readonly (number | null)[],
  start: number,
  sandbox: number,
): SegmentEnd {
  for (let pos = start + 1;; pos++) {
    const kind = stepKind(flow, pos);
    if (kind !== "run") return { kind, pos };
    const owner = owners[pos] ?? null;
    if (owner === null) return { kind: "error", pos };
    if (owner !== sandbox) return { kind: "handoff", pos, to: owner };
  }
}

/**
 * Why a sandbox's result, of `kind` (`done`, `publish`, `pause`, `error`, or a hand-off to
 * sandbox `to`) at position `pos` (of the step a `publish`, `pause` or hand-off names), cannot be
 * the end of the segment `end`, or `undefined` when it can.
 */
export function claimProblem(
  end: SegmentEnd,
  kind: "done" | "publish" | "pause" | "error" | "handoff",
  pos: number | undefined,
  to?: number,
): string | undefined {
  if (kind === "error") return undefined;
  if (kind !== end.kind) {
    const where = end.kind === "handoff"
      ? `at step ${end.pos}, another sandbox's`
      : end.kind === "error"
      ? `at step ${end.pos}, which no handler maps`
      : `${end.kind} at step ${end.pos}`;
    return `it answered ${kind} where its segment ends ${where}`;
  }
  if (kind !== "done" && pos !== end.pos) {
    return `it answered ${kind} at step ${pos} where its segment ends at step ${end.pos}`;
  }
  if (end.kind === "handoff" && to !== end.to) {
    return `it handed step ${end.pos} to sandbox ${to}, not to sandbox ${end.to}, which maps it`;
  }
  return undefined;
}
