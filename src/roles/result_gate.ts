/**
 * What the Subject lets through of a worker's results: a worker is a trust boundary, so each
 * result is checked against the step it answers (`topic/result_check.ts`) before it is
 * published. The common result (a `done` on its flow's done topic, with the step's header as
 * this project's workers write it) is recognised from its bytes, without parsing. Pure.
 *
 * @example
 * ```ts
 * import { ResultGate } from "./result_gate.ts";
 * import { BatchView, BatchWriter, KIND_CODES } from "../wire/batch.ts";
 * import { parseFlowFile } from "../topic/flow_file.ts";
 * import { TopicCache, utf8 } from "../wire/protocol.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\n??done\n", "f.ini").flows[0];
 * const topics = new TopicCache();
 * const gate = new ResultGate(topics, () => flow);
 * const step = [topics.step(flow, 2), utf8('{"v":1,"id":"r1","pos":2,"n":1}'), utf8("{}")];
 * gate.sent(step, flow);
 * const out = new BatchWriter();
 * out.add(1, KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"r1","n":2}'), utf8("{}"));
 * const view = BatchView.of(out.take())!;
 * console.log(gate.plainDone(view, 0, step), gate.refusal(view.kind(0), ...view.frames(0).slice(0, 2) as [Uint8Array, Uint8Array], step)); // true undefined
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
  text,
  type TopicCache,
  type TopicFields,
  TopicMemo,
  utf8,
} from "../wire/protocol.ts";

/** A step as the Subject sends it: topic, header, values. */
export type Step = readonly Uint8Array[];

/** Checks workers' results against the steps they answer. */
export class ResultGate {
  /** The flow of each step made here (for checking its result without parsing its frames). */
  readonly #stepFlows = new WeakMap<Step, Flow>();
  /** Result topics' fields, worked out once per topic text. */
  readonly #resultTopics = new TopicMemo<TopicFields | undefined>(parseTopic);
  readonly #topics: TopicCache;
  readonly #flowOf: (topic: string) => Flow | undefined;

  /** `topics` makes the topics of steps; `flowOf` the flow of a step topic not made here. */
  constructor(topics: TopicCache, flowOf: (topic: string) => Flow | undefined) {
    this.#topics = topics;
    this.#flowOf = flowOf;
  }

  /** Remembers that `step` is a step of `flow`. */
  sent(step: Step, flow: Flow): void {
    this.#stepFlows.set(step, flow);
  }

  /**
   * The common result, checked without parsing or views: a `done` on its flow's done topic whose
   * header starts as the step's did, up to the end of the id (as this project's workers write it).
   * `false` means only "not shown so": the result is then checked in full.
   */
  plainDone(batch: BatchView, i: number, step: Step): boolean {
    if (batch.kind(i) !== KIND_CODES.done) return false;
    const flow = this.#stepFlows.get(step);
    if (!flow || !batch.frameIs(i, 0, this.#topics.done(flow), true)) return false;
    const id = idPrefix(step[1]);
    return id !== undefined && batch.frameIs(i, 1, id, false);
  }

  /**
   * Why a worker's result (its kind code, topic and header) for `step` cannot be published, or
   * `undefined` (see `result_check.ts`).
   */
  refusal(kind: number, topic: Uint8Array, header: Uint8Array, step: Step): string | undefined {
    const flow = this.#stepFlows.get(step) ?? this.#flowOf(text(step[0]));
    const sent = decodeHeader(step[1]);
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

const ID_START = utf8('{"v":1,"id":"').slice();

/**
 * The first bytes of a header this project wrote, up to and including its id's closing quote
 * (a view, no copy); `undefined` if it does not start with `{"v":1,"id":"` or the id has escapes.
 */
function idPrefix(header: Uint8Array): Uint8Array | undefined {
  const n = ID_START.length;
  if (header.length <= n) return undefined;
  for (let i = 0; i < n; i++) if (header[i] !== ID_START[i]) return undefined;
  for (let i = n; i < header.length; i++) {
    if (header[i] === 0x5c) return undefined; // an escape: leave it to the full check
    if (header[i] === 0x22) return header.subarray(0, i + 1);
  }
  return undefined;
}
