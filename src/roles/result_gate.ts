/**
 * What the Subject lets through of a worker's results: a worker is a trust boundary, so each
 * result is checked against the step it answers (`topic/result_check.ts`) before it is
 * published. The common result (a `done` on its flow's done topic, with the step's header as
 * this project's workers write it) is recognised from its bytes, without parsing. Pure.
 *
 * @example
 * ```ts
 * import { ResultGate, Step } from "./result_gate.ts";
 * import { BatchView, BatchWriter, KIND_CODES } from "../wire/batch.ts";
 * import { parseFlowFile } from "../topic/flow_file.ts";
 * import { TopicCache, utf8 } from "../wire/protocol.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\n??done\n", "f.ini").flows[0];
 * const topics = new TopicCache();
 * const gate = new ResultGate(topics, () => flow, new Map([["F", flow]]));
 * const step = new Step(topics.step(flow, 1), utf8('{"v":1,"id":"r1","pos":1,"n":0}'), utf8("{}"));
 * gate.sent(step, flow, "r1");
 * const out = new BatchWriter();
 * out.add(7, KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"r1","n":1}'), utf8("{}"));
 * out.add(8, KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"r2","n":1}'), utf8("{}"));
 * const view = BatchView.of(out.take())!;
 * console.log(gate.judge(view, 0, step).do, gate.judge(view, 1, step).do); // publish refuse
 * ```
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { checkResult, type ResultKind } from "../topic/result_check.ts";
import { type BatchView, KIND_CODES, KIND_NAMES } from "../wire/batch.ts";
import {
  decodeHeader,
  parseTopic,
  plainFinalEnd,
  plainIdEnd,
  text,
  type TopicCache,
  type TopicFields,
  TopicMemo,
} from "../wire/protocol.ts";
import type { ErrorSpec } from "./intake.ts";
import { PoolStep } from "./worker_pool.ts";

/**
 * A step as the Subject sends it: topic, header, values; `slot` is its configuration version's
 * slot (`config_versions.ts`, `versionSlot`), carried in its `STEPS` record's kind byte; `flow`
 * the flow it was made for and `id` its request's id ({@linkcode ResultGate.sent}), to check its
 * result by and to name the final it answers with, without parsing its frames. (Fields of the
 * step itself: a WeakMap from steps to flows cost the Subject's garbage collector an ephemeron per
 * step in flight, measured at about 2% of its thread. One object with fields, not an array of the
 * three frames with properties, which is three objects: a step is kept while its request is at a
 * worker, at peak long enough to be promoted to the old generation; docs/performance.md, round 21.
 * For the same reason the worker pool keeps its record of a step in flight in the step's own
 * fields, which it extends: round 23.)
 */
export class Step extends PoolStep {
  /** Its configuration version's slot; 0 until it is dispatched. */
  slot = 0;
  /** The flow it was made for, once sent. */
  flow: Flow | undefined = undefined;
  /** Its request's id, once sent. */
  id: string | undefined = undefined;

  /** A step of these three frames. */
  constructor(readonly topic: Uint8Array, readonly header: Uint8Array, readonly values: Uint8Array) {
    super();
  }

  /** Bytes of its frames. */
  get size(): number {
    return this.topic.length + this.header.length + this.values.length;
  }
}

/** What to do with a worker's result. */
export type Verdict =
  /**
   * Publish it as it came. `done` is set when it is the common result ({@linkcode ResultGate.plainDone}):
   * the final of the step's request (`Step.id`), on its flow's done topic, with a header of the
   * shape `RequestMetrics` reads (no `replay`), so its publisher need not read it again.
   */
  | { readonly do: "publish"; readonly done?: true }
  /** Refuse it (counted as `bad_result`), and end its request with `error` when it can be named. */
  | { readonly do: "refuse"; readonly why: string; readonly error: ErrorSpec | undefined }
  /** The flow reached an `@ASYNC` step: pause it here, where the state is kept. */
  | {
    readonly do: "pause";
    readonly flow: Flow;
    readonly position: number;
    readonly id: string;
    readonly n: number;
    readonly values: Uint8Array;
  }
  /** A pause result without a known flow or a position (counted as `bad_worker_message`). */
  | { readonly do: "drop" };

const PUBLISH: Verdict = Object.freeze({ do: "publish" });
const PUBLISH_DONE: Verdict = Object.freeze({ do: "publish", done: true });

/** Checks workers' results against the steps they answer. */
export class ResultGate {
  /** Result topics' fields, worked out once per topic text. */
  readonly #resultTopics = new TopicMemo<TopicFields | undefined>(parseTopic);
  readonly #topics: TopicCache;
  readonly #flowOf: (topic: string) => Flow | undefined;

  readonly #flows: ReadonlyMap<string, Flow>;

  /**
   * `topics` makes the topics of steps; `flowOf` finds the flow of a step topic not made here;
   * `flows` are the flows by name.
   */
  constructor(
    topics: TopicCache,
    flowOf: (topic: string) => Flow | undefined,
    flows: ReadonlyMap<string, Flow>,
  ) {
    this.#topics = topics;
    this.#flowOf = flowOf;
    this.#flows = flows;
  }

  /** What to do with result `i` of a worker's batch, the answer to `step`. */
  judge(batch: BatchView, i: number, step: Step): Verdict {
    if (this.plainDone(batch, i, step)) return PUBLISH_DONE; // (a step with its flow has its id: `sent`)
    const kind = batch.kind(i);
    const [topic, header, values] = batch.frames(i);
    const why = this.refusal(kind, topic, header, step);
    if (why !== undefined) {
      const flow = parseTopic(text(step.topic))?.flow;
      const h = decodeHeader(step.header);
      const message = `the worker's result was refused: ${why}`;
      const error: ErrorSpec | undefined = flow !== undefined && typeof h !== "string"
        ? { flow, header: h, values: step.values, code: "handler_error", message }
        : undefined;
      return { do: "refuse", why, error };
    }
    if (kind !== KIND_CODES.pause) return PUBLISH;
    const fields = parseTopic(text(topic));
    const h = decodeHeader(header);
    // The step's own flow: that of the configuration version its request runs on.
    const sent = step.flow;
    const flow = fields && (sent?.name === fields.flow ? sent : this.#flows.get(fields.flow));
    if (!flow || typeof h === "string" || h.pos === undefined) return { do: "drop" };
    return { do: "pause", flow, position: h.pos, id: h.id, n: h.n ?? 0, values };
  }

  /** Remembers that `step` is a step of `flow` and of request `id` (the id its header carries). */
  sent(step: Step, flow: Flow, id: string): void {
    step.flow = flow;
    step.id = id;
  }

  /**
   * The common result, checked without parsing: a `done` on its flow's done topic whose header
   * starts as the step's did, up to the end of the id, and ends there or with `,"n":<digits>}` (as
   * this project's workers write it: nothing after the id may name another request). `false` means
   * only "not shown so": the result is then checked in full.
   */
  plainDone(batch: BatchView, i: number, step: Step): boolean {
    if (batch.kind(i) !== KIND_CODES.done) return false;
    const flow = step.flow;
    if (!flow || !batch.frameIs(i, 0, this.#topics.done(flow), true)) return false;
    // The step's header up to the end of its id, then the result's header from there on: no views.
    const n = plainIdEnd(step.header) + 1;
    if (n === 0 || !batch.frameIs(i, 1, step.header, false, n)) return false;
    const p = batch.frameStart(i, 1);
    return plainFinalEnd(batch.frame, p + n, p + batch.frameLength(i, 1));
  }

  /**
   * Why a worker's result (its kind code, topic and header) for `step` cannot be published, or
   * `undefined` (see `result_check.ts`).
   */
  refusal(kind: number, topic: Uint8Array, header: Uint8Array, step: Step): string | undefined {
    const flow = step.flow ?? this.#flowOf(text(step.topic));
    const sent = decodeHeader(step.header);
    if (!flow || typeof sent === "string") return "the step it answers is not known";
    const name = KIND_NAMES[kind] as ResultKind | undefined;
    return checkResult(
      name === "done" || name === "publish" || name === "pause" || name === "error" ? name : undefined,
      this.#resultTopics.get(text(topic)),
      decodeHeader(header),
      sent.id,
      flow,
    );
  }
}

/**
 * The `poisoned` error that ends the request of `step`, whose workers failed each delivery for
 * the reasons `whys`.
 */
export function poisonedError(step: Step, whys: readonly string[]): ErrorSpec {
  const topic = text(step.topic);
  const h = decodeHeader(step.header);
  const message = `step ${topic} was delivered ${whys.length} times and its worker failed each time: ` +
    whys.map((w, i) => `(${i + 1}) ${w}`).join("; ");
  const header = typeof h === "string" ? { id: "" } : h;
  return { flow: parseTopic(topic)?.flow ?? "", header, values: step.values, code: "poisoned", message };
}
