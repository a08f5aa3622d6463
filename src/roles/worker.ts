/**
 * A worker: receives steps from the Subject, runs the mapped handlers, and keeps running the
 * following plain steps of the same flow itself. It hands the result back when the flow
 * ends, or when the next step is `@PUBLISH` or `@ASYNC`, or on an error.
 *
 * @module
 */

import { ASYNC } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { DEFAULT_STEP_LIMIT } from "../topic/flow_step.ts";
import { runSegment, type SegmentOutcome } from "../topic/segment.ts";
import {
  DEFAULT_HANDLER_TIMEOUT,
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_WORKER_CONCURRENCY,
} from "../config.ts";
import type { HandlerRegistry } from "../handler.ts";
import { withTimeout } from "../_async.ts";
import { logger } from "../log.ts";
import { internalFrameLimit, KIND_CODES, readBatch, TurnBatch } from "../wire/batch.ts";
import { CONTROL_FRAMES, isControl, workerStatus } from "../wire/control.ts";
import {
  decodeHeader,
  decodeValues,
  DEFAULT_MAX_MESSAGE_SIZE,
  parseTopic,
  text,
  type TopicFields,
  TopicMemo,
} from "../wire/protocol.ts";
import { type StepResult, StepResults } from "../wire/step_result.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { HandlerCalls } from "./handler_calls.ts";
import { watchWorker } from "./watchdog.ts";

/** Options of {@linkcode Worker.start}. */
export interface WorkerOptions {
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** The handlers. */
  readonly handlers: HandlerRegistry;
  /** The Subject's worker endpoint. */
  readonly subjectAddress: string;
  /** Steps run at once (the worker's credit). @default {256} */
  readonly concurrency?: number;
  /** @default {100} */
  readonly stepLimit?: number;
  /** Milliseconds a handler may run, unless `timeouts` sets its action's own. @default {30000} */
  readonly handlerTimeout?: number;
  /**
   * Per-action handler timeouts in milliseconds, by lookup key (`sender?context?action`, as in
   * a mapping file's `[actiontimeout]` section), resolved by the seven rules.
   */
  readonly timeouts?: ReadonlyMap<string, number>;
  /** Milliseconds between heartbeats. @default {1000} */
  readonly heartbeatInterval?: number;
  /**
   * Largest values frame a result may carry, in bytes (`max_message_size`): a handler's result
   * that encodes larger, or that JSON cannot encode, becomes a `handler_error`. @default {1048576}
   */
  readonly maxMessageSize?: number;
  /** A reactor to share (inproc deployments). */
  readonly reactor?: Reactor;
  /**
   * Milliseconds of silence after which the Subject gives this worker's steps away (its
   * `heartbeat_timeout`); the watchdog reports a blocked handler after half of it.
   * @default {5000}
   */
  readonly heartbeatTimeout?: number;
  /**
   * Run a watchdog thread (see `watchdog.ts`) that reports a handler blocking the event loop to
   * the Subject and kills this process once the loop has been blocked past the handler timeout.
   * Only for a worker that has its process to itself. @default {false}
   */
  readonly watchdog?: boolean;
}

/** Counters of a worker. */
export interface WorkerStats {
  /** Step messages received. */
  received: number;
  /** Handlers run. */
  steps: number;
  /** Results sent back. */
  results: number;
  /** Results that were errors. */
  errors: number;
  /** Segments running now. */
  active: number;
}

const { RESULTS, BYE } = CONTROL_FRAMES;

/** A running worker. */
export class Worker {
  readonly #o: Required<Omit<WorkerOptions, "reactor" | "watchdog">>;
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("worker");
  #sock!: ReactorSocket;
  #timer?: ReturnType<typeof setInterval>;
  /** Dispatch numbers of the steps this worker holds now (reported in every heartbeat). */
  readonly #holding = new Set<number>();
  /** A step topic's fields and flow, worked out once per topic text. */
  readonly #topicInfo = new TopicMemo<(TopicFields & { readonly flowDef: Flow | undefined }) | undefined>(
    (topic) => {
      const fields = parseTopic(topic);
      return fields && { ...fields, flowDef: this.#o.flows.get(fields.flow) };
    },
  );
  /** The highest dispatch number received. */
  #lastDispatch = 0;
  /** Results to send at the end of this turn. */
  #results!: TurnBatch;
  readonly #encoder: StepResults;
  readonly #stats: WorkerStats = { received: 0, steps: 0, results: 0, errors: 0, active: 0 };
  #calls!: HandlerCalls;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  #id = "";
  #stopWatchdog?: () => void;

  private constructor(options: WorkerOptions) {
    this.#reactor = options.reactor ?? new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
    this.#ownsReactor = !options.reactor;
    this.#o = {
      flows: options.flows,
      handlers: options.handlers,
      subjectAddress: options.subjectAddress,
      concurrency: options.concurrency ?? DEFAULT_WORKER_CONCURRENCY,
      stepLimit: options.stepLimit ?? DEFAULT_STEP_LIMIT,
      handlerTimeout: options.handlerTimeout ?? DEFAULT_HANDLER_TIMEOUT,
      timeouts: options.timeouts ?? new Map(),
      heartbeatInterval: options.heartbeatInterval ?? DEFAULT_HEARTBEAT_INTERVAL,
      heartbeatTimeout: options.heartbeatTimeout ?? DEFAULT_HEARTBEAT_TIMEOUT,
      maxMessageSize: options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    };
    this.#encoder = new StepResults(this.#o.maxMessageSize);
  }

  /** Connects to the Subject and starts taking steps. */
  static async start(options: WorkerOptions): Promise<Worker> {
    const w = new Worker(options);
    const routingId = `worker-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    // Proves a STUCK report comes from this worker's watchdog (sent only to the Subject).
    const watch = crypto.randomUUID();
    w.#id = routingId;
    w.#sock = w.#reactor.socket("DEALER", {
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
      linger: 1000,
      // Steps carry values up to the limit; a resumed flow's, the paused values merged with the
      // resume values, each up to it.
      maxMessageSize: internalFrameLimit(2 * w.#o.maxMessageSize),
      routingId,
    });
    w.#results = new TurnBatch(w.#sock, [RESULTS]);
    const watching = options.watchdog ? watchWorker({ ...w.#o, worker: routingId, token: watch }) : undefined;
    w.#stopWatchdog = watching?.stop;
    w.#calls = new HandlerCalls({ ...w.#o, monitor: watching?.monitor });
    await w.#sock.connect(w.#o.subjectAddress);
    w.#sock.onMessage((f) => w.#onMessage(f));
    w.#reactor.afterReceive(() => w.#results.flush());
    w.#reactor.onIdle(() => w.#results.flush()); // results of async handlers that settled in microtasks
    await w.#sock.send(workerStatus("READY", { credit: w.#o.concurrency, pid: Deno.pid, watch }));
    w.#timer = setInterval(() => {
      // `holding` and `last` let the Subject find steps lost on the way in or out (a dropped
      // connection, a proxy): a step it sent that is at most `last` but not held, and whose
      // result has not arrived before this heartbeat, is gone.
      const hb = workerStatus("HB", {
        watch,
        credit: w.#o.concurrency - w.#stats.active,
        holding: [...w.#holding],
        last: w.#lastDispatch,
      });
      if (!w.#sock.closed && !w.#sock.sendNow(hb)) void w.#sock.send(hb).catch(() => {});
    }, w.#o.heartbeatInterval);
    w.#log.info("Worker {pid} connected to {subject} with {credit} credits", {
      pid: Deno.pid,
      subject: w.#o.subjectAddress,
      credit: w.#o.concurrency,
    });
    return w;
  }

  /** This worker's routing id, as the Subject knows it (and logs it). */
  get id(): string {
    return this.#id;
  }

  /** A snapshot of the counters. */
  stats(): WorkerStats {
    return { ...this.#stats };
  }

  #onMessage(frames: Uint8Array[]): void {
    // [STEPS, batch of (d, topic, header, values)]
    const records = frames.length === 2 && isControl(frames[0], "STEPS") ? readBatch(frames[1]) : undefined;
    if (!records) {
      this.#log.warn("Ignored a message of {n} frames from the Subject", { n: frames.length });
      return;
    }
    for (const { tag: d, frames: [topic, header, values] } of records) {
      this.#stats.received++;
      this.#stats.active++;
      this.#holding.add(d);
      if (d > this.#lastDispatch) this.#lastDispatch = d;
      let r: StepResult | Promise<StepResult>;
      try {
        r = this.#segment(topic, header, values, d);
      } catch (e) {
        r = this.#encoder.crashed(topic, header, e);
      }
      if (r instanceof Promise) {
        r.then((x) => this.#reply(d, x), (e) => this.#reply(d, this.#encoder.crashed(topic, header, e)));
      } else this.#reply(d, r);
    }
  }

  #reply(d: number, r: StepResult): void {
    this.#holding.delete(d);
    this.#stats.active--;
    this.#stats.results++;
    if (r.kind === "error") this.#stats.errors++;
    this.#results.add(d, KIND_CODES[r.kind], r.frames[0], r.frames[1], r.frames[2]);
  }

  /**
   * Runs the segment a step message starts (see {@linkcode runSegment}) and encodes its
   * outcome. Never throws: failures become error results.
   */
  #segment(
    topicFrame: Uint8Array,
    headerFrame: Uint8Array,
    valuesFrame: Uint8Array,
    d: number,
  ): StepResult | Promise<StepResult> {
    const fields = this.#topicInfo.get(text(topicFrame));
    const header = decodeHeader(headerFrame);
    if (!fields || typeof header === "string" || header.pos === undefined) {
      return this.#encoder.error(
        fields?.flow ?? "",
        { id: typeof header === "string" ? "" : header.id },
        valuesFrame,
        "bad_request",
        "malformed step from the Subject",
      );
    }
    const flow = fields.flowDef;
    if (!flow) {
      return this.#encoder.error(
        fields.flow,
        header,
        valuesFrame,
        "unknown_flow",
        `this worker does not know flow "${fields.flow}"`,
      );
    }
    const decoded = decodeValues(valuesFrame);
    if (typeof decoded === "string") {
      return this.#encoder.error(
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
      !this.#calls.has(flow, header.pos);
    const plan = { pos: header.pos, n: header.n ?? 0, stepLimit: this.#o.stepLimit, passThrough };
    const step = { id: header.id, d };
    const out = runSegment(flow, plan, decoded, (pos, values) => this.#calls.call(flow, pos, values, step));
    if (!(out instanceof Promise)) return this.#encode(flow, id, out);
    const release = this.#reactor.holdSyncWait();
    return out.then((o) => this.#encode(flow, id, o)).finally(release);
  }

  #encode(flow: Flow, id: string, out: SegmentOutcome): StepResult {
    this.#stats.steps += out.steps;
    return this.#encoder.outcome(flow, id, out);
  }

  /**
   * Tells the Subject it is leaving, waits for running steps to finish (up to `timeoutMs`),
   * then closes.
   */
  async drain(timeoutMs = 10_000): Promise<void> {
    // Waited for 1 s at most: with no Subject to take it (gone, restarting) it would wait for ever.
    if (!this.#sock.closed) await withTimeout(this.#sock.send([BYE]).catch(() => {}), 1000);
    const deadline = performance.now() + timeoutMs;
    while (this.#stats.active > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // Results still queued leave during the socket's linger; any that do not are redelivered
    // by the Subject, which retires a step only when its result arrives.
    await this.close();
  }

  /** Closes at once; running handlers are told to stop through their signal. Safe twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#timer);
      this.#stopWatchdog?.();
      this.#calls?.stop();
      if (this.#ownsReactor) await this.#reactor.close();
      else await this.#sock.close();
    })().finally(() => this.#done.resolve());
    return this.#closed;
  }

  /** Resolves once closed (by {@linkcode Worker.close}, {@linkcode Worker.drain} or disposal). */
  closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Same as {@linkcode Worker.drain}: disposal finishes accepted work first. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.drain();
  }
}
