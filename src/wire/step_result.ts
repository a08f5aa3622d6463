/**
 * A worker's answer to a step as the three frames of a publication (PROTOCOL.md, _Workers_): the
 * outcome of a segment ({@linkcode SegmentOutcome}) encoded, or an error publication. Every
 * frame must fit `max_message_size` on its way to the Integration Manager: a result that cannot
 * be sent becomes a `handler_error`, and an error whose values cannot be sent leaves them out.
 *
 * @module
 */

import { formatActionKey } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { describeError, type SegmentOutcome, type StepRun, type Values } from "../topic/segment.ts";
import {
  decodeHeader,
  type ErrorCode,
  errorFrames,
  type Header,
  parseTopic,
  stepHeader,
  text,
  TopicCache,
} from "./protocol.ts";
import { EMPTY_VALUES, encodeValues } from "./unencodable.ts";

/** A step's result: its kind, and the three frames to publish. */
export interface StepResult {
  /** `done`, `publish`, `pause` or `error`. */
  readonly kind: "done" | "publish" | "pause" | "error";
  /** Topic, header and values. */
  readonly frames: readonly [Uint8Array, Uint8Array, Uint8Array];
}

/** Encodes a worker's step results, each at most `maxMessageSize` bytes of values. */
export class StepResults {
  readonly #max: number;
  readonly #topics = new TopicCache();

  /** Results whose values frame is at most `maxMessageSize` bytes. */
  constructor(maxMessageSize: number) {
    this.#max = maxMessageSize;
  }

  /** A segment's outcome for request `id` of `flow`. */
  outcome(flow: Flow, id: string, out: SegmentOutcome): StepResult {
    const { pos, n } = out;
    if (out.kind === "error") return this.error(flow.name, { id, pos }, out.values, out.code, out.message);
    const body = encodeValues(out.values, this.#max);
    if (typeof body === "string") return this.#unsendable(flow, id, out.ran, body);
    if (out.kind === "done") {
      return { kind: "done", frames: [this.#topics.done(flow), stepHeader(id, undefined, n), body] };
    }
    return {
      kind: out.kind,
      frames: [this.#topics.step(flow, pos), stepHeader(id, pos, n), body],
    };
  }

  /**
   * A handler's result that cannot leave the worker (`why`: JSON cannot encode it, or it is over
   * `max_message_size`): a `handler_error` at the handler's step, carrying the step's input
   * values (or `{}` where those cannot be sent either), never the result.
   */
  #unsendable(flow: Flow, id: string, ran: StepRun, why: string): StepResult {
    const body = encodeValues(ran.input, this.#max); // the handler may have changed its input
    return this.error(
      flow.name,
      { id, pos: ran.pos },
      typeof body === "string" ? EMPTY_VALUES : body,
      "handler_error",
      `handler for ${formatActionKey(flow.steps[ran.pos].key)} returned ${why}`,
    );
  }

  /** An error publication; values that cannot be sent on its way are left out, and said so. */
  error(
    flow: string,
    h: Pick<Header, "id" | "pos">,
    values: Values | Uint8Array,
    code: ErrorCode,
    message: string,
  ): StepResult {
    let body = values instanceof Uint8Array ? values : encodeValues(values, this.#max);
    if (typeof body !== "string" && body.length > this.#max) {
      body = `${body.length} bytes of values, over max_message_size (${this.#max} bytes)`;
    }
    if (typeof body === "string") {
      message = `${message} (values left out: ${body})`;
      body = EMPTY_VALUES;
    }
    return { kind: "error", frames: errorFrames(flow, h, code, message, body) };
  }

  /**
   * The result of a step whose run threw where nothing should (running a segment turns every
   * failure it knows into an error result): an error, so the step is answered, not redelivered.
   */
  crashed(topic: Uint8Array, headerFrame: Uint8Array, e: unknown): StepResult {
    const header = decodeHeader(headerFrame);
    return this.error(
      parseTopic(text(topic))?.flow ?? "",
      {
        id: typeof header === "string" ? "" : header.id,
        pos: typeof header === "string" ? undefined : header.pos,
      },
      EMPTY_VALUES,
      "handler_error",
      `the worker failed running the step: ${describeError(e)}`,
    );
  }
}
