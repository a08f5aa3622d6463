/**
 * A worker: receives steps from the Subject, runs the mapped handlers, and keeps running the
 * following plain steps of the same flow itself. It hands the result back when the flow
 * ends, or when the next step is `@PUBLISH` or `@ASYNC`, or on an error.
 *
 * @module
 */

import { type ActionKey, ASYNC, formatActionKey } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { DEFAULT_STEP_LIMIT, nextStep } from "../topic/flow_step.ts";
import {
  DEFAULT_HANDLER_TIMEOUT,
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_WORKER_CONCURRENCY,
} from "../config.ts";
import type { BoundHandler, HandlerContext, HandlerLogger, HandlerRegistry, Values } from "../handler.ts";
import {
  BATCH_FLUSH_BYTES,
  BatchWriter,
  internalFrameLimit,
  KIND_CODES,
  readBatch,
  sendBatch,
} from "../wire/batch.ts";
import { withTimeout } from "../_async.ts";
import { logger } from "../log.ts";
import { resolveKey } from "../topic/resolve.ts";
import {
  decodeHeader,
  decodeValues,
  DEFAULT_MAX_MESSAGE_SIZE,
  encodeHeader,
  type ErrorCode,
  errorFrames,
  type Header,
  parseTopic,
  text,
  TopicCache,
  type TopicFields,
  TopicMemo,
  utf8,
} from "../wire/protocol.ts";
import { findUnencodable } from "../wire/unencodable.ts";
import { CONTROL_FRAMES, isControl, workerStatus } from "../wire/control.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { connectSecure, type Security } from "./security.ts";
import { curveClientOptions } from "../zmq/curve.ts";
import { loopBeatMs, LoopMonitor, startWatchdog } from "./watchdog.ts";

/** Options of {@linkcode Worker.start}. */
export interface WorkerOptions {
  /** CURVE keys for a tcp Subject (`security.ts`); none: plaintext. */
  readonly security?: Security;
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

/** The outcome of running a segment of a flow. */
export interface SegmentResult {
  /** `done`, `publish`, `pause` or `error`. */
  readonly kind: "done" | "publish" | "pause" | "error";
  /** The three frames to publish. */
  readonly frames: readonly [Uint8Array, Uint8Array, Uint8Array];
}

class StepTimeout extends Error {}

/**
 * What a handler gets with its values. A class rather than an object literal with a getter:
 * one small object per step, no closures. The abort controller is made only when a handler
 * reads `signal`; one that reads it after a timeout or a stop gets an already aborted signal.
 */
class StepContext implements HandlerContext {
  #ac?: AbortController;
  #timedOut?: StepTimeout;
  readonly #stop: AbortSignal;

  constructor(
    readonly key: ActionKey,
    readonly flow: string,
    readonly id: string,
    readonly position: number,
    readonly logger: HandlerLogger,
    stop: AbortSignal,
  ) {
    this.#stop = stop;
  }

  get signal(): AbortSignal {
    if (!this.#ac) {
      this.#ac = new AbortController();
      if (this.#timedOut) this.#ac.abort(this.#timedOut);
      else if (this.#stop.aborted) this.#ac.abort(this.#stop.reason);
    }
    return this.#ac.signal;
  }

  /** The worker is stopping. */
  stopped(): void {
    this.#ac?.abort(this.#stop.reason);
  }

  /** The step ran past its timeout. */
  timeOut(e: StepTimeout): void {
    this.#timedOut = e;
    this.#ac?.abort(e);
  }
}

const { RESULTS, BYE } = CONTROL_FRAMES;

/** How often a worker checks its running async steps for timeouts: a timeout fires up to this late. */
const TIMEOUT_SWEEP_MS = 10;

/** An async step still running. */
interface RunningStep {
  readonly ctx: StepContext;
  readonly key: ActionKey;
  readonly timeout: number;
  readonly deadline: number;
  readonly reject: (e: unknown) => void;
}

/** What a worker resolved for one step of a flow (once, then cached). */
interface StepPlan {
  /** The handler, or `null` when none maps the step. */
  readonly handler: BoundHandler | null;
  /** Its timeout in milliseconds. */
  readonly timeout: number;
}

/** A running worker. */
export class Worker {
  readonly #o: Required<Omit<WorkerOptions, "reactor" | "watchdog" | "security">>;
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("worker");
  #sock!: ReactorSocket;
  #timer?: ReturnType<typeof setInterval>;
  readonly #cache = new Map<Flow, StepPlan[]>();
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
  readonly #results = new BatchWriter();
  #flushScheduled = false;
  readonly #loggers = new Map<string, HandlerLogger>();
  readonly #topics = new TopicCache();
  readonly #stats: WorkerStats = { received: 0, steps: 0, results: 0, errors: 0, active: 0 };
  readonly #stop = new AbortController();
  /** Async steps still running, for their timeouts and for stopping them. */
  readonly #running = new Set<RunningStep>();
  #sweepTimer?: ReturnType<typeof setTimeout>;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  #id = "";
  /** Marks which step's handler runs, for the watchdog thread (when there is one). */
  #monitor?: LoopMonitor;
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
    if (options.watchdog) {
      // Reported well before the Subject would take the worker for dead (its heartbeat timeout),
      // so only the blocking step is counted against; killed at the handler timeout.
      const stallAfter = Math.min(w.#o.handlerTimeout, Math.floor(w.#o.heartbeatTimeout / 2));
      w.#monitor = new LoopMonitor(loopBeatMs(stallAfter));
      w.#stopWatchdog = startWatchdog({
        buffer: w.#monitor.buffer,
        subjectAddress: w.#o.subjectAddress,
        curve: curveClientOptions(options.security?.keys, w.#o.subjectAddress),
        worker: routingId,
        token: watch,
        stallAfter,
        killAfter: Math.max(stallAfter, w.#o.handlerTimeout),
      });
    }
    await connectSecure(w.#reactor, w.#sock, w.#o.subjectAddress, options.security);
    w.#sock.onMessage((f) => w.#onMessage(f));
    w.#reactor.afterReceive(() => w.#flush());
    w.#reactor.onIdle(() => w.#flush()); // results of async handlers that settled in microtasks
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
      let r: SegmentResult | Promise<SegmentResult>;
      try {
        r = this.runSegment(topic, header, values, d);
      } catch (e) {
        r = this.#crashed(topic, header, e);
      }
      if (r instanceof Promise) {
        r.then((x) => this.#reply(d, x), (e) => this.#reply(d, this.#crashed(topic, header, e)));
      } else this.#reply(d, r);
    }
  }

  /**
   * The result of a step whose run threw where nothing should (`runSegment` turns every failure
   * it knows into an error result): an error, so the step is answered, not redelivered.
   */
  #crashed(topic: Uint8Array, headerFrame: Uint8Array, e: unknown): SegmentResult {
    const header = decodeHeader(headerFrame);
    return this.#error(
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

  #reply(d: number, r: SegmentResult): void {
    this.#holding.delete(d);
    this.#stats.active--;
    this.#stats.results++;
    if (r.kind === "error") this.#stats.errors++;
    this.#results.add(d, KIND_CODES[r.kind], r.frames[0], r.frames[1], r.frames[2]);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
    if (this.#results.size >= BATCH_FLUSH_BYTES) this.#flush();
  }

  /** Sends the results collected in this turn as one batch. */
  #flush(): void {
    if (!this.#flushScheduled) return;
    this.#flushScheduled = false;
    if (!this.#results.count || this.#sock.closed) return;
    void sendBatch(this.#sock, [RESULTS], this.#results)?.catch(() => {});
  }

  /** The handler and timeout of a step, resolved once per flow position. */
  #plan(flow: Flow, position: number): StepPlan {
    let byPosition = this.#cache.get(flow);
    if (!byPosition) this.#cache.set(flow, byPosition = []);
    let p = byPosition[position];
    if (p === undefined) {
      const key = flow.steps[position].key;
      p = byPosition[position] = {
        handler: this.#o.handlers.resolve(key)?.entry ?? null,
        timeout: resolveKey(this.#o.timeouts, key)?.entry ?? this.#o.handlerTimeout,
      };
    }
    return p;
  }

  /**
   * Runs steps from the header's position until the flow ends or reaches a `@PUBLISH` or
   * `@ASYNC` step, or a step fails. Never throws: failures become error results. Synchronous
   * handlers run synchronously end to end (no promise hops, so the result leaves at once);
   * the first handler that returns a promise switches the rest of the segment to async.
   */
  runSegment(
    topicFrame: Uint8Array,
    headerFrame: Uint8Array,
    valuesFrame: Uint8Array,
    d = 0,
  ): SegmentResult | Promise<SegmentResult> {
    const fields = this.#topicInfo.get(text(topicFrame));
    const header = decodeHeader(headerFrame);
    if (!fields || typeof header === "string" || header.pos === undefined) {
      return this.#error(
        fields?.flow ?? "",
        { id: typeof header === "string" ? "" : header.id },
        valuesFrame,
        "bad_request",
        "malformed step from the Subject",
      );
    }
    const flow = fields.flowDef;
    if (!flow) {
      return this.#error(
        fields.flow,
        header,
        valuesFrame,
        "unknown_flow",
        `this worker does not know flow "${fields.flow}"`,
      );
    }
    const decoded = decodeValues(valuesFrame);
    if (typeof decoded === "string") {
      return this.#error(
        flow.name,
        header,
        {}, // publications carry JSON objects: values that are not one are not echoed
        "bad_request",
        "the request's values are not a JSON object",
      );
    }
    // A flow resumed at its @ASYNC step runs that step's handler if one is mapped; if none is,
    // the step only marks where outside input (the resume values) enters the flow.
    const passThrough = header.r === 1 && flow.steps[header.pos]?.key.decorator === ASYNC &&
      !this.#plan(flow, header.pos).handler;
    return this.#steps(flow, header.id, header.pos, header.n ?? 0, decoded, passThrough, d);
  }

  #steps(
    flow: Flow,
    id: string,
    pos: number,
    n: number,
    values: Values,
    passThrough: boolean,
    d: number,
  ): SegmentResult | Promise<SegmentResult> {
    for (;;) {
      const step = flow.steps[pos];
      let out: Values | Promise<Values> = values;
      if (!passThrough) {
        const plan = this.#plan(flow, pos);
        if (!plan.handler) {
          return this.#error(
            flow.name,
            { id, pos, n },
            values,
            "no_handler",
            `no handler for ${formatActionKey(step.key)} (step ${pos} of ${flow.name})`,
          );
        }
        try {
          out = this.#call(plan.handler, plan.timeout, values, flow, pos, id, d);
        } catch (e) {
          return this.#failed(flow, id, pos, n, values, e);
        }
      }
      passThrough = false;
      if (out instanceof Promise) {
        const p0 = pos, n0 = n, v0 = values;
        const release = this.#reactor.holdSyncWait();
        return out.then(
          (v) => this.#after(flow, id, p0, n0, v, v0) ?? this.#steps(flow, id, p0 + 1, n0 + 1, v, false, d),
          (e) => this.#failed(flow, id, p0, n0, v0, e),
        ).finally(release);
      }
      const done = this.#after(flow, id, pos, n, out, values);
      if (done) return done;
      values = out;
      pos++;
      n++;
    }
  }

  /**
   * After a step ran (`input` went in, `values` came out): the segment's result if it ends
   * here, else `undefined` (go on).
   */
  #after(
    flow: Flow,
    id: string,
    pos: number,
    n: number,
    values: Values,
    input: Values,
  ): SegmentResult | undefined {
    if (values === null || typeof values !== "object" || Array.isArray(values)) {
      const what = Array.isArray(values) ? "an array" : values === null ? "null" : typeof values;
      return this.#error(
        flow.name,
        { id, pos, n },
        {},
        "handler_error",
        `handler for ${formatActionKey(flow.steps[pos].key)} returned ${what}, not an object`,
      );
    }
    this.#stats.steps++;
    const ran = pos, ranN = n;
    n++;
    pos++;
    const kind = nextStep(flow, pos, n, this.#o.stepLimit);
    if (kind === "done") {
      const body = encodeValues(values, this.#o.maxMessageSize);
      if (typeof body === "string") return this.#unsendable(flow, id, ran, ranN, input, body);
      return { kind: "done", frames: [this.#topics.done(flow), encodeHeader({ v: 1, id, n }), body] };
    }
    if (kind === "step_limit") {
      return this.#error(
        flow.name,
        { id, pos, n },
        values,
        "step_limit",
        `request ran ${n} steps, the limit is ${this.#o.stepLimit}`,
      );
    }
    if (kind === "publish" || kind === "pause") {
      const body = encodeValues(values, this.#o.maxMessageSize);
      if (typeof body === "string") return this.#unsendable(flow, id, ran, ranN, input, body);
      return { kind, frames: [this.#topics.step(flow, pos), encodeHeader({ v: 1, id, pos, n }), body] };
    }
    return undefined;
  }

  /**
   * A handler's result that cannot leave the worker (`why`: JSON cannot encode it, or it is over
   * `max_message_size`): a `handler_error` at the handler's step, carrying the step's input
   * values (or `{}` where those cannot be sent either), never the result.
   */
  #unsendable(flow: Flow, id: string, pos: number, n: number, input: Values, why: string): SegmentResult {
    const body = encodeValues(input, this.#o.maxMessageSize); // the handler may have changed its input
    return this.#error(
      flow.name,
      { id, pos, n },
      typeof body === "string" ? EMPTY_VALUES : body,
      "handler_error",
      `handler for ${formatActionKey(flow.steps[pos].key)} returned ${why}`,
    );
  }

  #failed(flow: Flow, id: string, pos: number, n: number, values: Values, e: unknown): SegmentResult {
    const timeout = e instanceof StepTimeout;
    return this.#error(
      flow.name,
      { id, pos, n },
      values,
      timeout ? "timeout" : "handler_error",
      timeout ? (e as Error).message : errorMessage(e),
    );
  }

  /**
   * Calls a handler. A promise it returns joins the running steps, whose timeouts one timer
   * checks every {@linkcode TIMEOUT_SWEEP_MS} while any runs: a `setTimeout`, a `Promise.race`
   * and an abort listener per async step halved the throughput of async handlers.
   */
  #call(
    handler: BoundHandler,
    timeout: number,
    values: Values,
    flow: Flow,
    position: number,
    id: string,
    d: number,
  ): Values | Promise<Values> {
    const key = flow.steps[position].key;
    const ctx = new StepContext(
      key,
      flow.name,
      id,
      position,
      this.#handlerLogger(flow.name),
      this.#stop.signal,
    );
    let result: Values | Promise<Values>;
    if (this.#monitor) {
      this.#monitor.enter(d);
      try {
        result = handler.call(values, ctx);
      } finally {
        this.#monitor.leave();
      }
    } else result = handler.call(values, ctx);
    if (!(result instanceof Promise)) return result;
    return new Promise<Values>((resolve, reject) => {
      const step: RunningStep = { ctx, key, timeout, deadline: performance.now() + timeout, reject };
      this.#running.add(step);
      this.#sweepTimer ??= setTimeout(() => this.#sweepTimeouts(), TIMEOUT_SWEEP_MS);
      result.then(
        (v) => this.#running.delete(step) && resolve(v),
        (e) => this.#running.delete(step) && reject(e),
      );
    });
  }

  /** Fails the running steps past their timeout; runs again while any step runs. */
  #sweepTimeouts(): void {
    this.#sweepTimer = undefined;
    const now = performance.now();
    for (const step of this.#running) {
      if (now < step.deadline) continue;
      this.#running.delete(step);
      const e = new StepTimeout(`handler for ${formatActionKey(step.key)} ran past ${step.timeout} ms`);
      step.ctx.timeOut(e);
      step.reject(e);
    }
    if (this.#running.size && !this.#stop.signal.aborted) {
      this.#sweepTimer = setTimeout(() => this.#sweepTimeouts(), TIMEOUT_SWEEP_MS);
    }
  }

  /** One logger per flow, made once (handlers get it in their context on every step). */
  #handlerLogger(flow: string): HandlerLogger {
    let l = this.#loggers.get(flow);
    if (!l) this.#loggers.set(flow, l = logger("handler", flow));
    return l;
  }

  #error(
    flow: string,
    h: Pick<Header, "id" | "pos" | "n">,
    values: Values | Uint8Array,
    code: ErrorCode,
    message: string,
  ): SegmentResult {
    // An error publication must fit on its way too: values that cannot be sent are left out.
    let body = values instanceof Uint8Array ? values : encodeValues(values, this.#o.maxMessageSize);
    if (typeof body !== "string" && body.length > this.#o.maxMessageSize) {
      body = `${body.length} bytes of values, over max_message_size (${this.#o.maxMessageSize} bytes)`;
    }
    if (typeof body === "string") {
      message = `${message} (values left out: ${body})`;
      body = EMPTY_VALUES;
    }
    return { kind: "error", frames: errorFrames(flow, h, code, message, body) };
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
      clearTimeout(this.#sweepTimer);
      this.#monitor?.stop();
      this.#stopWatchdog?.();
      this.#stop.abort(new Error("worker closing"));
      for (const step of this.#running) step.ctx.stopped();
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

function errorMessage(e: unknown): string {
  try {
    if (e instanceof Error) return String(e.message);
    return JSON.stringify(e) ?? String(e);
  } catch {
    return describeError(e);
  }
}

/** An error's name and message, whatever was thrown; never throws. */
function describeError(e: unknown): string {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } catch {
    return "an unprintable value";
  }
}

const EMPTY_VALUES = utf8("{}");

/**
 * Values as a frame: a JSON object of at most `max` bytes. Otherwise what is wrong, as the end
 * of a sentence (`values JSON cannot encode: values.a[2]: BigInt`). The hot path is one
 * `JSON.stringify`; only after it throws is the value walked to find where.
 */
function encodeValues(values: unknown, max: number): Uint8Array | string {
  let json: string | undefined;
  try {
    json = JSON.stringify(values);
  } catch (e) {
    const at = findUnencodable(values);
    return `values JSON cannot encode: ${at ? `${at.path}: ${at.reason}` : describeError(e)}`;
  }
  if (typeof json !== "string" || json.charCodeAt(0) !== 0x7b /* { */) {
    return `values that do not encode as a JSON object (they encode as ${String(json).slice(0, 40)})`;
  }
  if (json.length > max) return `${utf8Length(json)} bytes of values, over max_message_size (${max} bytes)`;
  const bytes = utf8(json);
  if (bytes.length > max) return `${bytes.length} bytes of values, over max_message_size (${max} bytes)`;
  return bytes;
}

/** The UTF-8 length of a string too large to send, without encoding it. */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
