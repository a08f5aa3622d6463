/**
 * Running a segment of a flow (SPEC §3, §4): from a position, run each plain step's handler and
 * go on with its result, until the flow ends (`??done`), reaches a `@PUBLISH` or `@ASYNC` step,
 * a step fails, or the step limit stops it. Pure: the handler invocation is injected (`call`),
 * so the stepping is tested without a socket; a worker wires it to its handlers and encodes the
 * outcome as a publication.
 *
 * Synchronous handlers run synchronously end to end (no promise hops); the first `call` that
 * returns a promise switches the rest of the segment to async.
 *
 * @module
 */

import { formatActionKey } from "./action_key.ts";
import type { Flow } from "./flow_file.ts";
import { nextStep } from "./flow_step.ts";
import { checkHandlerResult } from "./result_check.ts";
import type { ErrorCode } from "../wire/protocol.ts";

/** A request's values: a plain JSON object. */
export type Values = Record<string, unknown>;

/** What `call` returns for a step that no handler maps. */
export const NO_HANDLER: unique symbol = Symbol("no handler");

/**
 * Runs the handler of the step at `position` with `values`: its result (or a promise of it), or
 * {@linkcode NO_HANDLER}. May throw or reject; a {@linkcode StepTimeoutError} becomes a `timeout`.
 */
export type StepCall = (position: number, values: Values) => Values | Promise<Values> | typeof NO_HANDLER;

/** Where a segment starts. */
export interface SegmentPlan {
  /** The position of the first step to run. */
  readonly pos: number;
  /** Steps the request has run so far. */
  readonly n: number;
  /** The largest number of steps a request may run. */
  readonly stepLimit: number;
  /**
   * The step at `pos` is not run, its values go on unchanged: a flow resumed at an `@ASYNC` step
   * that no handler maps (the step only marks where the resume values enter). @default {false}
   */
  readonly passThrough?: boolean;
}

/** A step that ran: where, after how many steps, with what input. */
export interface StepRun {
  /** The step's position. */
  readonly pos: number;
  /** Steps the request had run before it. */
  readonly n: number;
  /** The values it was given (a handler may have changed them). */
  readonly input: Values;
}

/** How a segment ended. `pos` and `n` are the request's position and step count for the header. */
export type SegmentOutcome =
  | {
    /** The flow ended (`done`), or reached a `@PUBLISH` (`publish`) or `@ASYNC` (`pause`) step. */
    readonly kind: "done" | "publish" | "pause";
    readonly pos: number;
    readonly n: number;
    /** The last step's result. */
    readonly values: Values;
    /** The last step run: where a result that cannot be sent is reported. */
    readonly ran: StepRun;
    /** Steps run in this segment. */
    readonly steps: number;
  }
  | {
    readonly kind: "error";
    readonly pos: number;
    readonly n: number;
    readonly code: ErrorCode;
    readonly message: string;
    /** The values the error publication carries. */
    readonly values: Values;
    /** Steps run in this segment. */
    readonly steps: number;
  };

/** A handler ran past its timeout: the step fails with `timeout`. */
export class StepTimeoutError extends Error {
  /** What kind of error this is, for programs: `timeout`. */
  readonly code = "timeout";
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "StepTimeoutError";
  }
}

/**
 * Runs steps from `plan.pos` until the segment ends. Never throws: a failing step becomes an
 * `error` outcome.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { runSegment } from "./segment.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\nS?F?b\n??done\n", "f.ini").flows[0];
 * const out = runSegment(flow, { pos: 1, n: 0, stepLimit: 100 }, { x: 1 }, (pos, v) => ({ ...v, [pos]: true }));
 * // { kind: "done", pos: 3, n: 2, values: { x: 1, 1: true, 2: true }, … }
 * ```
 */
export function runSegment(
  flow: Flow,
  plan: SegmentPlan,
  values: Values,
  call: StepCall,
): SegmentOutcome | Promise<SegmentOutcome> {
  return steps(flow, plan, values, call, 0);
}

function steps(
  flow: Flow,
  plan: SegmentPlan,
  values: Values,
  call: StepCall,
  ran: number,
): SegmentOutcome | Promise<SegmentOutcome> {
  let { pos, n } = plan;
  let passThrough = plan.passThrough ?? false;
  for (;;) {
    let out: Values | Promise<Values> | typeof NO_HANDLER = values;
    if (!passThrough) {
      try {
        out = call(pos, values);
      } catch (e) {
        return failed(pos, n, values, e, ran);
      }
      if (out === NO_HANDLER) {
        const message = `no handler for ${
          formatActionKey(flow.steps[pos].key)
        } (step ${pos} of ${flow.name})`;
        return { kind: "error", pos, n, code: "no_handler", message, values, steps: ran };
      }
    }
    passThrough = false;
    if (out instanceof Promise) {
      const at: StepRun = { pos, n, input: values };
      const before = ran;
      return out.then(
        (v) =>
          advance(flow, at, v, plan.stepLimit, before) ??
            steps(flow, { ...plan, pos: at.pos + 1, n: at.n + 1, passThrough: false }, v, call, before + 1),
        (e) => failed(at.pos, at.n, at.input, e, before),
      );
    }
    const end = advance(flow, { pos, n, input: values }, out, plan.stepLimit, ran);
    if (end) return end;
    values = out;
    pos++;
    n++;
    ran++;
  }
}

/**
 * After the step `ran` returned `result`: how the segment ends here, or `undefined` when the
 * next step is a plain one to run. `before` counts the steps run in the segment before this one.
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { advance } from "./segment.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\nS?F@PUBLISH?b\n??done\n", "f.ini").flows[0];
 * advance(flow, { pos: 1, n: 0, input: {} }, { a: 1 }, 100)?.kind; // "publish"
 * advance(flow, { pos: 1, n: 0, input: {} }, [1], 100)?.kind; // "error"
 * ```
 */
export function advance(
  flow: Flow,
  ran: StepRun,
  result: unknown,
  stepLimit: number,
  before = 0,
): SegmentOutcome | undefined {
  const wrong = checkHandlerResult(result, flow.steps[ran.pos].key);
  if (wrong !== undefined) {
    return {
      kind: "error",
      pos: ran.pos,
      n: ran.n,
      code: "handler_error",
      message: wrong,
      values: {},
      steps: before,
    };
  }
  const values = result as Values;
  const pos = ran.pos + 1, n = ran.n + 1, steps = before + 1;
  const kind = nextStep(flow, pos, n, stepLimit);
  if (kind === "run") return undefined;
  if (kind === "step_limit") {
    const message = `request ran ${n} steps, the limit is ${stepLimit}`;
    return { kind: "error", pos, n, code: "step_limit", message, values, steps };
  }
  return { kind, pos, n, values, ran, steps };
}

function failed(pos: number, n: number, values: Values, e: unknown, steps: number): SegmentOutcome {
  const timeout = e instanceof StepTimeoutError;
  return {
    kind: "error",
    pos,
    n,
    code: timeout ? "timeout" : "handler_error",
    message: timeout ? e.message : errorMessage(e),
    values,
    steps,
  };
}

/** What a thrown value says: an `Error`'s message, or the value as JSON; never throws. */
export function errorMessage(e: unknown): string {
  try {
    if (e instanceof Error) return String(e.message);
    return JSON.stringify(e) ?? String(e);
  } catch {
    return describeError(e);
  }
}

/** An error's name and message, whatever was thrown; never throws. */
export function describeError(e: unknown): string {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } catch {
    return "an unprintable value";
  }
}
