/**
 * Flow stepping (SPEC §3 "Position in a flow", §4): where a request starts, and what the
 * step at a position asks for. Pure functions; the roles wire them to sockets.
 *
 * @module
 */

import { type ActionKey, ASYNC, isDone, keysMatch, PUBLISH } from "./action_key.ts";
import type { Flow } from "./flow_file.ts";

/** The default largest number of steps one request may run. */
export const DEFAULT_STEP_LIMIT = 100;

/** What the step at a position asks for. */
export type StepKind =
  /** A plain step: a worker runs its handler. */
  | "run"
  /** A `@PUBLISH` step: the Integration Manager publishes it for a service to handle. */
  | "publish"
  /** An `@ASYNC` step: the flow pauses until something resumes it. */
  | "pause"
  /** `??done`, or past the last step: the flow ends. */
  | "done";

/**
 * Classifies the step at `position`.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { stepKind } from "./flow_step.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F@PUBLISH?a\n??done\n", "f.ini").flows[0];
 * [stepKind(flow, 1), stepKind(flow, 2), stepKind(flow, 9)]; // ["publish", "done", "done"]
 * ```
 */
export function stepKind(flow: Flow, position: number): StepKind {
  const step = flow.steps[position];
  if (!step || isDone(step.key)) return "done";
  if (step.key.decorator === PUBLISH) return "publish";
  if (step.key.decorator === ASYNC) return "pause";
  return "run";
}

/** What a request at a position of its flow, having run `n` steps, does next. */
export type NextStep = StepKind | "step_limit";

/**
 * What happens at `position` for a request that has run `n` steps: the flow ends (`done`), the
 * step limit stops it (`step_limit`: checked only where a step would run), or the step is run,
 * published or paused at. The one rule that the Subject (routing a request) and a worker (going
 * on through a flow) both follow.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { nextStep } from "./flow_step.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\nS?F?b\n??done\n", "f.ini").flows[0];
 * [nextStep(flow, 1, 0, 100), nextStep(flow, 2, 1, 1), nextStep(flow, 3, 2, 1)]; // ["run", "step_limit", "done"]
 * ```
 */
export function nextStep(flow: Flow, position: number, n: number, stepLimit: number): NextStep {
  const kind = stepKind(flow, position);
  return kind !== "done" && n >= stepLimit ? "step_limit" : kind;
}

/** Where a request starts, or why it cannot. */
export type Placement = { readonly position: number } | { readonly error: string };

/**
 * Places a request in its flow. A given position is used as is (it must lie within the
 * flow). Otherwise the request's key is matched against the steps, first match wins; a
 * match on the entry step (position 0) starts the flow at the step after it.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { placeRequest } from "./flow_step.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\n??done\n", "f.ini").flows[0];
 * placeRequest(flow, { sender: "", context: "", decorator: "", action: "" }); // { position: 1 }
 * ```
 */
export function placeRequest(flow: Flow, key: ActionKey, position?: number): Placement {
  if (position !== undefined) {
    if (position > flow.steps.length) {
      return {
        error: `position ${position} is past the end of flow "${flow.name}" (${flow.steps.length} steps)`,
      };
    }
    // The entry step is never run: a request placed on it starts at the step after it.
    return { position: position === 0 && flow.steps.length > 0 ? 1 : position };
  }
  if (flow.steps.length === 0) return { position: 0 };
  const i = flow.steps.findIndex((s) => keysMatch(s.key, key));
  if (i < 0) return { error: `no step of flow "${flow.name}" matches the request's key` };
  return { position: i === 0 ? 1 : i };
}
