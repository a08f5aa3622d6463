/**
 * A step message, run: its three frames decoded, the segment it starts run
 * ({@linkcode runSegment}) with a worker's handler calls, and the outcome encoded as the
 * publication the worker hands back. A worker runs it on its own thread (`--no-sandbox`), a
 * handler sandbox on its thread (`sandbox_thread.ts`); the sandbox also ends a segment where the
 * next step's handler lives in another sandbox (a hand-off: the step message to run there).
 *
 * @module
 */

import { ASYNC } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { runSegment, type SegmentOutcome, type StepCall, type Values } from "../topic/segment.ts";
import { decodeHeader, decodeValues, parseTopic, type TopicFields, TopicMemo } from "../wire/protocol.ts";
import type { StepResult, StepResults } from "../wire/step_result.ts";

/** Calls the handler of a step (see `HandlerCalls.call`). */
export type HandlerCall = (
  flow: Flow,
  position: number,
  values: Values,
  step: { readonly id: string; readonly d: number },
) => ReturnType<StepCall>;

/** A segment that goes on in another sandbox: the step message to run there. */
export interface Handoff {
  /** Always `handoff`. */
  readonly kind: "handoff";
  /** The sandbox (its index) whose handler runs the next step. */
  readonly to: number;
  /** Topic, header and values of the step message. */
  readonly frames: readonly [Uint8Array, Uint8Array, Uint8Array];
}

/** Options of {@linkcode StepRunner}. */
export interface StepRunnerOptions {
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** The largest number of steps a request may run. */
  readonly stepLimit: number;
  /** Encodes outcomes. */
  readonly encoder: StepResults;
  /** Whether a handler maps the step at `position` of `flow` (here or in another sandbox). */
  readonly has: (flow: Flow, position: number) => boolean;
  /** Calls a step's handler. */
  readonly call: HandlerCall;
  /**
   * The sandbox whose handler runs the step at `position` of `flow`, when it is not this one:
   * the segment ends there with a {@linkcode Handoff}. @default {() => undefined}
   */
  readonly elsewhere?: (flow: Flow, position: number) => number | undefined;
  /** Hears of the handlers each segment ran. */
  readonly onSteps?: (n: number) => void;
  /**
   * Says a handler's error message better, or returns `undefined` to keep it (a sandbox says
   * which permission was denied).
   */
  readonly describeError?: (message: string) => string | undefined;
}

/** Thrown by the runner's own step call where the segment goes on in another sandbox. */
const HANDED_OFF = Symbol("handed off");

/** Runs step messages. */
export class StepRunner {
  readonly #o: StepRunnerOptions;
  /** A step topic's fields and flow, worked out once per topic text. */
  readonly #topicInfo: TopicMemo<(TopicFields & { readonly flowDef: Flow | undefined }) | undefined>;

  /** Runs steps with `options`. */
  constructor(options: StepRunnerOptions) {
    this.#o = options;
    this.#topicInfo = new TopicMemo((topic) => {
      const fields = parseTopic(topic);
      return fields && { ...fields, flowDef: options.flows.get(fields.flow) };
    });
  }

  /**
   * Runs the segment a step message (dispatch number `d`) starts and encodes its outcome. Never
   * throws: failures become error results.
   */
  run(
    topicFrame: Uint8Array,
    headerFrame: Uint8Array,
    valuesFrame: Uint8Array,
    d: number,
  ): StepResult | Handoff | Promise<StepResult | Handoff> {
    const encoder = this.#o.encoder;
    const fields = this.#topicInfo.getBytes(topicFrame);
    const header = decodeHeader(headerFrame);
    if (!fields || typeof header === "string" || header.pos === undefined) {
      return encoder.error(
        fields?.flow ?? "",
        { id: typeof header === "string" ? "" : header.id },
        valuesFrame,
        "bad_request",
        "malformed step from the Subject",
      );
    }
    const flow = fields.flowDef;
    if (!flow) {
      return encoder.error(
        fields.flow,
        header,
        valuesFrame,
        "unknown_flow",
        `this worker does not know flow "${fields.flow}"`,
      );
    }
    const decoded = decodeValues(valuesFrame);
    if (typeof decoded === "string") {
      return encoder.error(
        flow.name,
        header,
        {}, // publications carry JSON objects: values that are not one are not echoed
        "bad_request",
        "the request's values are not a JSON object",
      );
    }
    const id = header.id;
    // A flow resumed at its @ASYNC step runs that step's handler if one is mapped; if none is,
    // the step only marks where outside input (the resume values) enters the flow.
    const passThrough = header.r === 1 && flow.steps[header.pos]?.key.decorator === ASYNC &&
      !this.#o.has(flow, header.pos);
    const plan = { pos: header.pos, n: header.n ?? 0, stepLimit: this.#o.stepLimit, passThrough };
    const step = { id, d };
    const elsewhere = this.#o.elsewhere;
    let to: number | undefined;
    const call: StepCall = elsewhere
      ? (pos, values) => {
        to = elsewhere(flow, pos);
        if (to !== undefined) throw HANDED_OFF;
        return this.#o.call(flow, pos, values, step);
      }
      : (pos, values) => this.#o.call(flow, pos, values, step);
    const out = runSegment(flow, plan, decoded, call);
    if (!(out instanceof Promise)) return this.#encode(flow, id, out, to);
    return out.then((o) => this.#encode(flow, id, o, to));
  }

  #encode(flow: Flow, id: string, out: SegmentOutcome, to: number | undefined): StepResult | Handoff {
    this.#o.onSteps?.(out.steps);
    if (out.kind === "error" && out.code === "handler_error" && this.#o.describeError) {
      const better = this.#o.describeError(out.message);
      if (better !== undefined) out = { ...out, message: better };
    }
    if (to === undefined || out.kind !== "error" || out.code !== "handler_error") {
      return this.#o.encoder.outcome(flow, id, out);
    }
    // The step call threw HANDED_OFF at `out.pos`, with `out.values` its input: the step message
    // that runs it is the one a @PUBLISH step at that position would carry.
    const { pos, n, values } = out;
    const r = this.#o.encoder.outcome(flow, id, {
      kind: "publish",
      pos,
      n,
      values,
      ran: { pos, n, input: values },
      steps: 0,
    });
    return r.kind === "error" ? r : { kind: "handoff", to, frames: r.frames };
  }
}
