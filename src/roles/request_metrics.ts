/**
 * Per-flow request outcomes and end-to-end latency, measured in the Subject from a request's
 * acceptance to its final publication (the batch that carries it leaving for the Integration
 * Manager). Pure: the clock is injected; the Subject calls {@linkcode RequestMetrics.accepted}
 * and {@linkcode RequestMetrics.published}, and puts {@linkcode RequestMetrics.snapshot} in its
 * stats.
 *
 * @module
 */

import { BatchView } from "../wire/batch.ts";
import { ID_START, plainFinalEnd, plainIdEnd, shortAscii, text } from "../wire/protocol.ts";
import { RequestTable } from "./request_table.ts";

/** Upper bounds (seconds) of the latency histogram's buckets (Prometheus `le`), `+Inf` implied. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/**
 * Records of a batch already known to be plain `done` finals (`ImLink.publishDone`), in record
 * order: for `k` below `count`, record `at[k]` is the final of request `ids[k]` of flow
 * `flows[k]`, on its flow's done topic, with a header of the shape the roles write
 * (`plainFinalEnd`: so neither a refusal nor a replay) whose id is `ids[k]` as `JSON.parse` reads
 * it. (A count, so that the arrays are reused, not grown again for every batch.)
 */
export interface KnownFinals {
  readonly count: number;
  readonly at: readonly number[];
  readonly ids: readonly string[];
  readonly flows: readonly string[];
}

const NO_FINALS: KnownFinals = { count: 0, at: [], ids: [], flows: [] };

/** One flow's figures. */
export interface FlowFigures {
  /** Final publications by outcome: `done` or an error code. */
  readonly outcomes: Record<string, number>;
  /** Requests per latency bucket (not cumulative; the last one is `+Inf`), of timed requests. */
  readonly buckets: number[];
  /** Seconds of the timed requests, summed. */
  readonly sum: number;
  /** Timed requests (accepted by this Subject incarnation, so their start is known). */
  readonly count: number;
}

/** What {@linkcode RequestMetrics.snapshot} gives. */
export interface RequestFigures {
  /** The bucket bounds, seconds. */
  readonly bounds: readonly number[];
  /** By flow name. */
  readonly flows: Record<string, FlowFigures>;
}

const DONE = new TextEncoder().encode("~~~~done");
const ERROR = new TextEncoder().encode("~~~~error");
/**
 * The kind of an IM batch record that answers a message and ends no request (`ErrorSpec.refusal`):
 * not counted, not timed, not handed to `onFinal` (the Subject counts these as `refused`).
 */
export const REFUSAL_KIND = 1;

/** How the header of a final published again for a copy of its request ends (`markReplay`). */
const REPLAY_END = new TextEncoder().encode(',"replay":1}');

/**
 * The id of a final's header as the roles write it (`{"v":1,"id":"…"}`, or with `,"n":<digits>`
 * after the id: `plainFinalEnd`), read from its bytes; `undefined` for any other header (an
 * escape, a control character, a second `id` key, anything nested): parse it then. The shape makes
 * the id the one `JSON.parse`, and so every subscriber, reads. (It once took the first `"id":"`
 * anywhere in the bytes: a second `id` key, which `JSON.parse` takes instead, named another
 * request.) An id that starts with U+FEFF is parsed too: a UTF-8 decoder given the id's bytes
 * alone drops it as a byte-order mark, and `"\uFEFFx"` was read as `"x"`.
 */
export function plainId(header: Uint8Array): string | undefined {
  const end = plainIdEnd(header);
  if (end < 0 || !plainFinalEnd(header, end + 1)) return undefined;
  const from = ID_START.length;
  if (header[from] === 0xef && header[from + 1] === 0xbb && header[from + 2] === 0xbf) return undefined;
  if (end - from > 12) return text(header.subarray(from, end));
  for (let i = from; i < end; i++) if (header[i] > 0x7e) return text(header.subarray(from, end));
  return shortAscii(header, from, end);
}

function endsWith(f: Uint8Array, tail: Uint8Array): boolean {
  if (f.length < tail.length) return false;
  const o = f.length - tail.length;
  for (let i = 0; i < tail.length; i++) if (f[o + i] !== tail[i]) return false;
  return true;
}

/**
 * Counts final publications per flow and outcome, and times them from acceptance.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BatchWriter } from "../wire/batch.ts";
 * import { RequestMetrics } from "./request_metrics.ts";
 * let now = 0;
 * const m = new RequestMetrics(() => now);
 * m.accepted("r1");
 * now = 30; // ms
 * const b = new BatchWriter();
 * const enc = (s: string) => new TextEncoder().encode(s);
 * b.add(0, 0, enc("Hello~~~~done"), enc('{"v":1,"id":"r1"}'), enc("{}"));
 * m.published(b.take());
 * const f = m.snapshot().flows.Hello;
 * assert.deepEqual(f.outcomes, { done: 1 });
 * assert.equal(f.count, 1);
 * assert.equal(f.sum, 0.03);
 * ```
 */
export class RequestMetrics {
  readonly #now: () => number;
  /** Each request in flight without a final yet has its acceptance time (ms) in its entry (`RequestEntry.started`). */
  readonly #table: RequestTable;
  /**
   * The acceptance times of paused requests (their entries left the shared table: `ParkHook`),
   * oldest first, at most `maxTracked`.
   */
  readonly #parked = new Map<string, number>();
  readonly #maxTracked: number;
  readonly #flows = new Map<
    string,
    { outcomes: Record<string, number>; buckets: number[]; sum: number; count: number }
  >();

  /**
   * `now` in milliseconds; at most `maxTracked` requests are timed at once (past it the oldest
   * is forgotten: its final is counted, not timed). With `table` (the Subject's, shared with its
   * connection quota and configuration versions), the table's bound applies instead.
   */
  constructor(now: () => number = () => performance.now(), maxTracked = 200_000, table?: RequestTable) {
    this.#now = now;
    this.#maxTracked = maxTracked;
    this.#table = table ?? new RequestTable(maxTracked);
    this.#table.onPark((id, started) => {
      this.#parked.set(id, started);
      if (this.#parked.size > this.#maxTracked) this.#parked.delete(this.#parked.keys().next().value!);
    });
  }

  /** A new request was accepted (timed from its first acceptance, if it is in flight or paused). */
  accepted(id: string): void {
    if (this.#parked.size !== 0 && this.#parked.has(id)) return; // a copy of a paused request
    const e = this.#table.open(id);
    if (e.started !== e.started) e.started = this.#now(); // (NaN: not timed yet)
  }

  /**
   * A batch leaves for the Integration Manager: count and time the final publications in it
   * (not those published again for a copy of their request, `"replay":1`, nor refusals);
   * `onFinal` is called with each one's request id and where it is in the batch (`view`, `i`).
   * Once per flow on the Subject's hot path, so it reads what it needs from the bytes: the records
   * in `known` are not read at all; of the others, the flow of a topic equal to the previous one is
   * reused, and a `done`'s id is read from the bytes of a header of the shape the roles write
   * ({@linkcode plainId}; any other header is parsed).
   */
  published(
    batch: Uint8Array,
    onFinal?: (id: string, view: BatchView, i: number) => void,
    known: KnownFinals = NO_FINALS,
  ): void {
    const view = BatchView.of(batch);
    if (!view) return;
    let k = 0;
    let nextKnown = known.count ? known.at[0] : -1;
    for (let i = 0; i < view.count; i++) {
      if (i === nextKnown) {
        this.#final(known.flows[k], "done", known.ids[k], view, i, onFinal);
        nextKnown = ++k < known.count ? known.at[k] : -1;
        continue;
      }
      const topic = view.frameAt(i, 0);
      const done = endsWith(topic, DONE);
      if (!done && !endsWith(topic, ERROR)) continue;
      const header = view.frameAt(i, 1);
      // A kept final published again: its outcome was counted when it first left. An answer to a
      // message that started no request (a refusal) ends none: a request running under its id goes on.
      if (view.kind(i) === REFUSAL_KIND || endsWith(header, REPLAY_END)) continue;
      const flow = this.#flowOf(topic, done ? DONE.length : ERROR.length);
      if (flow === undefined) continue;
      let id: string | undefined;
      let outcome = "done";
      if (done) id = plainId(header);
      if (id === undefined) {
        let h: { id?: unknown; error?: { code?: unknown } };
        try {
          h = JSON.parse(text(header));
        } catch {
          continue;
        }
        if (!done) outcome = String(h.error?.code ?? "error");
        id = String(h.id);
      }
      this.#final(flow, outcome, id, view, i, onFinal);
    }
  }

  /** Counts, and times, the final of request `id` of `flow` (record `i` of `view`). */
  #final(
    flow: string,
    outcome: string,
    id: string,
    view: BatchView,
    i: number,
    onFinal: ((id: string, view: BatchView, i: number) => void) | undefined,
  ): void {
    let f = this.#flows.get(flow);
    if (!f) {
      this.#flows.set(
        flow,
        f = { outcomes: {}, buckets: new Array(LATENCY_BUCKETS.length + 1).fill(0), sum: 0, count: 0 },
      );
    }
    f.outcomes[outcome] = (f.outcomes[outcome] ?? 0) + 1;
    // Timed before `onFinal` lets the other parts go: the entry then goes whole, not parked.
    const start = this.#takeStart(id);
    onFinal?.(id, view, i);
    if (start === undefined) return;
    const s = (this.#now() - start) / 1000;
    let b = LATENCY_BUCKETS.findIndex((le) => s <= le);
    if (b < 0) b = LATENCY_BUCKETS.length;
    f.buckets[b]++;
    f.sum += s;
    f.count++;
  }

  /** Request `id`'s acceptance time, forgotten here; `undefined` if it is not timed. */
  #takeStart(id: string): number | undefined {
    const e = this.#table.get(id);
    if (e !== undefined && e.started === e.started) {
      const start = e.started;
      e.started = NaN;
      this.#table.close(id, e);
      return start;
    }
    if (!this.#parked.size) return undefined;
    const start = this.#parked.get(id);
    if (start !== undefined) this.#parked.delete(id);
    return start;
  }

  #lastTopic = new Uint8Array(0);
  #lastFlow: string | undefined;

  /** The flow of a final's topic (`Flow~~~~done`), or `undefined` when it is not one. */
  #flowOf(topic: Uint8Array, tail: number): string | undefined {
    const last = this.#lastTopic;
    if (topic.length === last.length) {
      let same = true;
      for (let k = 0; k < topic.length; k++) {
        if (topic[k] !== last[k]) {
          same = false;
          break;
        }
      }
      if (same) return this.#lastFlow;
    }
    const t = text(topic);
    const flow = t.slice(0, t.indexOf("~"));
    // Only a final's topic has four empty fields before its action.
    this.#lastFlow = t.length === flow.length + tail ? flow : undefined;
    this.#lastTopic = topic.slice();
    return this.#lastFlow;
  }

  /** The figures so far. */
  snapshot(): RequestFigures {
    const flows: Record<string, FlowFigures> = {};
    for (const [name, f] of this.#flows) {
      flows[name] = { outcomes: { ...f.outcomes }, buckets: [...f.buckets], sum: f.sum, count: f.count };
    }
    return { bounds: LATENCY_BUCKETS, flows };
  }
}
