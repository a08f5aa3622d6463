/**
 * The Subject: the ventilator and load balancer. It receives requests from services, works
 * out the next step of each request's flow, and sends plain steps to workers and `@PUBLISH`
 * steps (and flow ends) to the Integration Manager. It never runs handler code.
 *
 * Workers connect with DEALER sockets and get steps only while they have credit (one credit
 * per step they are willing to run at once), so a slow worker never hoards work. Every step
 * sent to a worker stays in flight here until its result comes back; a worker that goes
 * silent past the heartbeat timeout has its steps given to another. Results travel back
 * through the Subject, which forwards them to the Integration Manager, so a result counts as
 * delivered only once a long-lived process holds it.
 *
 * @module
 */

import type { Flow } from "../flow_file.ts";
import { DEFAULT_STEP_LIMIT, type Placement, placeRequest, stepKind } from "../flow_step.ts";
import {
  DEFAULT_ASYNC_TIMEOUT,
  DEFAULT_DUPLICATE_WINDOW,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_MAX_PENDING,
} from "../config.ts";
import { BATCH_FLUSH_BYTES, BatchView, BatchWriter, KIND_CODES, readBatch, sendBatch } from "../batch.ts";
import { queueHwm as queueBudgetHwm } from "../byte_budget.ts";
import { logger } from "../log.ts";
import { RecentKeys } from "../recent_keys.ts";
import { makeToken, parseToken, PausedStore } from "../paused_store.ts";
import {
  decodeHeader,
  decodeValues,
  type DropReason,
  encodeHeader,
  type ErrorCode,
  errorTopic,
  type Header,
  parseTopic,
  text,
  TopicCache,
  type TopicFields,
  TopicMemo,
  utf8,
} from "../protocol.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";

/** Options of {@linkcode Subject.start}. */
export interface SubjectOptions {
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Endpoint to bind for services' requests. */
  readonly pullAddress: string;
  /** Endpoint to bind for workers. */
  readonly workerAddress: string;
  /** The Integration Manager's pull endpoint. */
  readonly integrationManagerAddress: string;
  /** @default {100} */
  readonly stepLimit?: number;
  /** Milliseconds of worker silence before its steps are given to another. @default {5000} */
  readonly heartbeatTimeout?: number;
  /** Requests held for worker credit before the Subject stops reading more. @default {10000} */
  readonly maxPending?: number;
  /** Largest accepted frame in bytes. */
  readonly maxMessageSize?: number;
  /**
   * Recent requests remembered to drop duplicates: a message with the same id, position,
   * step count and resume token as one of them is acknowledged and dropped (`duplicate`).
   * 0 turns this off. @default {100000}
   */
  readonly duplicateWindow?: number;
  /** A reactor to share (inproc deployments); by default the Subject makes its own. */
  readonly reactor?: Reactor;
  /** Where paused flows are kept: a SQLite file, or `:memory:`. @default {":memory:"} */
  readonly pausedStore?: string;
  /** Milliseconds a paused flow waits for its resume before a `timeout` error. @default {3600000} */
  readonly asyncTimeout?: number;
}

/** Counters of a Subject. */
export interface SubjectStats {
  /** Requests received from services (including continuations and pings). */
  received: number;
  /** Steps sent to workers (including redeliveries). */
  dispatched: number;
  /** Messages sent to the Integration Manager. */
  published: number;
  /** Error publications made by the Subject (unknown flow, step limit…). */
  errors: number;
  /** Steps given to another worker: theirs went silent, or its heartbeat showed them lost. */
  redelivered: number;
  /** Of those, steps a live worker's heartbeat showed lost (never received, or result lost). */
  lost: number;
  /** Results that arrived for a step already given to another worker (ignored). */
  lateResults: number;
  /** Messages dropped, by reason. */
  dropped: Record<string, number>;
  /** Steps at workers now. */
  inFlight: number;
  /** Requests waiting for worker credit now. */
  pending: number;
  /** Bytes of those requests (the Subject stops reading at `PENDING_BYTES_LIMIT`). */
  pendingBytes: number;
  /** Workers connected now. */
  workers: number;
  /** Flows paused at an `@ASYNC` step now. */
  paused: number;
  /** Flows resumed. */
  resumed: number;
}

interface WorkerState {
  readonly key: string;
  readonly idFrame: Uint8Array;
  /** Steps to send at the end of this turn. */
  readonly batch: BatchWriter;
  credit: number;
  readonly inflight: Set<number>;
  lastSeen: number;
  leaving: boolean;
}

interface InFlight {
  readonly worker: string;
  /** `performance.now()` when sent. */
  readonly at: number;
  /** topic, header, values */
  readonly frames: readonly Uint8Array[];
}

/**
 * Bytes of publications waiting in JavaScript for room towards the Integration Manager (its
 * socket's high-water mark is reached) at which the Subject stops reading requests; it reads
 * again below half of this. With `max_pending` this bounds the Subject's memory when the IM
 * is slow.
 */
export const IM_BACKLOG_LIMIT = 16 * 1024 * 1024;

/**
 * Bytes of requests waiting for worker credit at which the Subject stops reading requests (as
 * at `max_pending` requests); it reads again below half of this.
 */
export const PENDING_BYTES_LIMIT = 64 * 1024 * 1024;

/** Bytes of a message's frames. */
const bytesOf = (frames: readonly Uint8Array[]): number => frames.reduce((n, f) => n + f.length, 0);

/** While busy, the Subject sends acknowledgements at most this often (it sends at once when idle). */
const ACK_EVERY_MS = 1;

/** What the Subject works out once per request topic. */
interface TopicInfo {
  readonly fields: TopicFields;
  /** Undefined for an unknown flow. */
  readonly flow: Flow | undefined;
  /** Where a request without a position starts (with a known flow). */
  readonly place: Placement | undefined;
}

const STEPS = utf8("STEPS");
const ACK = utf8("ACK");
const EMPTY_VALUES = utf8("{}");

/** A running Subject. */
export class Subject {
  readonly #o: Required<Omit<SubjectOptions, "reactor" | "maxMessageSize">> & { maxMessageSize?: number };
  #store!: PausedStore;
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("subject");
  #services!: ReactorSocket;
  #workersSock!: ReactorSocket;
  #im!: ReactorSocket;
  readonly #workers = new Map<string, WorkerState>();
  readonly #inflight = new Map<number, InFlight>();
  #pending: (readonly Uint8Array[])[] = [];
  #pendingHead = 0;
  /** Bytes of the requests in `#pending`. */
  #pendingBytes = 0;
  /**
   * Dispatch numbers grow from a base taken from the clock, so a restarted Subject never
   * reuses the numbers of the one before (workers report the highest number they received).
   */
  #nextDispatch = Date.now() * 1000;
  #acks = new Map<string, { idFrame: Uint8Array; ids: string[] }>();
  /** Publications to send to the IM at the end of this turn. */
  readonly #imBatch = new BatchWriter();
  /** Bytes of IM batches waiting in JavaScript for room in the socket. */
  #imBacklog = 0;
  /** Workers with steps to send at the end of this turn. */
  readonly #stepsFor = new Set<WorkerState>();
  #flushScheduled = false;
  #acksSentAt = 0;
  #timer?: ReturnType<typeof setInterval>;
  #draining = false;
  #closed?: Promise<void>;
  readonly #warned = new Set<string>();
  readonly #topics = new TopicCache();
  /** Keys of recent requests, for dropping duplicates (made when the window is not 0). */
  #recent?: RecentKeys;
  /**
   * A request topic's fields, flow and, for a request without a position, where it starts: all
   * three depend on the topic alone, so they are worked out once per topic text.
   */
  readonly #topicInfo = new TopicMemo<TopicInfo | undefined>((topic) => {
    const fields = parseTopic(topic);
    if (!fields) return undefined;
    const flow = this.#o.flows.get(fields.flow);
    return { fields, flow, place: flow && placeRequest(flow, fields) };
  });
  readonly #stats: Omit<SubjectStats, "inFlight" | "pending" | "pendingBytes" | "workers" | "paused"> = {
    resumed: 0,
    received: 0,
    dispatched: 0,
    published: 0,
    errors: 0,
    redelivered: 0,
    lost: 0,
    lateResults: 0,
    dropped: {},
  };

  private constructor(options: SubjectOptions) {
    this.#reactor = options.reactor ?? new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
    this.#ownsReactor = !options.reactor;
    this.#o = {
      flows: options.flows,
      pullAddress: options.pullAddress,
      workerAddress: options.workerAddress,
      integrationManagerAddress: options.integrationManagerAddress,
      stepLimit: options.stepLimit ?? DEFAULT_STEP_LIMIT,
      heartbeatTimeout: options.heartbeatTimeout ?? DEFAULT_HEARTBEAT_TIMEOUT,
      maxPending: options.maxPending ?? DEFAULT_MAX_PENDING,
      maxMessageSize: options.maxMessageSize,
      duplicateWindow: options.duplicateWindow ?? DEFAULT_DUPLICATE_WINDOW,
      pausedStore: options.pausedStore ?? ":memory:",
      asyncTimeout: options.asyncTimeout ?? DEFAULT_ASYNC_TIMEOUT,
    };
  }

  /** Binds the service and worker endpoints, connects to the Integration Manager, and runs. */
  static async start(options: SubjectOptions): Promise<Subject> {
    const s = new Subject(options);
    await s.#open();
    return s;
  }

  async #open(): Promise<void> {
    this.#store = new PausedStore(this.#o.pausedStore);
    const r = this.#reactor;
    // Queues that could hold large messages are bounded in bytes: QUEUE_BYTES per connection,
    // in messages of up to max_message_size (byte_budget.ts). ROUTER send queues keep their
    // count: a ROUTER drops at its mark, and worker credit and acknowledgements bound them.
    const queueHwm = queueBudgetHwm(this.#o.maxMessageSize);
    this.#im = r.socket("PUSH", { sendHighWaterMark: queueHwm, linger: 5000 });
    await this.#im.connect(this.#o.integrationManagerAddress);
    this.#workersSock = r.socket("ROUTER", {
      maxMessageSize: this.#o.maxMessageSize,
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: queueHwm,
    });
    await this.#workersSock.bind(this.#o.workerAddress);
    this.#services = r.socket("ROUTER", {
      maxMessageSize: this.#o.maxMessageSize,
      receiveHighWaterMark: queueHwm,
      sendHighWaterMark: 100_000,
    });
    await this.#services.bind(this.#o.pullAddress);
    this.#workersSock.onMessage((f) => this.#onWorker(f));
    this.#services.onMessage((f) => this.#onService(f));
    r.afterReceive(() => this.#flush());
    r.onIdle(() => this.#flushAcks());
    const every = Math.max(10, Math.floor(this.#o.heartbeatTimeout / 4));
    this.#timer = setInterval(() => {
      this.#checkWorkers();
      this.#expirePaused();
      if (!this.#warned.has("oversize") && this.#services.oversizeDrops + this.#workersSock.oversizeDrops) {
        this.#warned.add("oversize");
        this.#log.warn(
          "Dropped a message with a frame over max_message_size; further drops are only counted",
        );
      }
    }, every);
    this.#log.info("Subject taking requests on {pull}, workers on {workers}, {flows} flows", {
      pull: this.#o.pullAddress,
      workers: this.#o.workerAddress,
      flows: this.#o.flows.size,
    });
  }

  /** A snapshot of the counters. */
  stats(): SubjectStats {
    const dropped = { ...this.#stats.dropped };
    const oversize = this.#services.oversizeDrops + this.#workersSock.oversizeDrops;
    if (oversize > 0) dropped.oversize = oversize;
    return {
      ...this.#stats,
      dropped,
      inFlight: this.#inflight.size,
      pending: this.#pending.length - this.#pendingHead,
      pendingBytes: this.#pendingBytes,
      workers: this.#workers.size,
      paused: this.#store.count(),
    };
  }

  #drop(reason: DropReason | string, detail?: string): void {
    this.#stats.dropped[reason] = (this.#stats.dropped[reason] ?? 0) + 1;
    if (!this.#warned.has(reason)) {
      this.#warned.add(reason);
      this.#log.warn("Dropped a message: {reason}{detail}; further drops for this reason are only counted", {
        reason,
        detail: detail ? ` (${detail})` : "",
      });
    }
  }

  // ---- services ---------------------------------------------------------------------------

  #onService(frames: Uint8Array[]): void {
    // [identity, topic, header, values], or [identity, batch of (topic, header, values)]
    if (frames.length === 2) {
      const records = readBatch(frames[1]);
      if (!records) {
        this.#stats.received++;
        return this.#drop("bad_batch", "service message");
      }
      const ack = this.#ackList(frames[0]);
      for (const r of records) this.#onRequest(ack, r.frames);
      return;
    }
    if (frames.length !== 4) {
      this.#stats.received++;
      return this.#drop("frame_count", `${frames.length - 1} frames after the identity`);
    }
    this.#onRequest(this.#ackList(frames[0]), [frames[1], frames[2], frames[3]]);
  }

  #onRequest(ack: string[], frames: readonly [Uint8Array, Uint8Array, Uint8Array]): void {
    this.#stats.received++;
    const topic = text(frames[0]);
    const t = this.#topicInfo.get(topic);
    if (!t) return this.#drop("bad_topic", JSON.stringify(topic.slice(0, 80)));
    const fields = t.fields;
    const header = decodeHeader(frames[1]);
    if (typeof header === "string") return this.#drop(header);
    ack.push(header.id);
    this.#scheduleFlush();
    if (header.k !== "ping" && this.#o.duplicateWindow > 0 && this.#isDuplicate(header)) {
      return this.#drop("duplicate", `request ${JSON.stringify(header.id).slice(0, 60)} seen before`);
    }
    if (this.#draining) {
      this.#errorPublish(fields.flow, header, frames[2], "overloaded", "the Subject is shutting down");
      return;
    }
    if (header.k === "ping") {
      if (!fields.action.startsWith("ping")) {
        return this.#drop("bad_topic", "a ping's action must start with ping");
      }
      this.#toIM([frames[0], frames[1], frames[2]]);
      return;
    }
    const flow = t.flow;
    if (!flow) {
      return this.#errorPublish(
        fields.flow,
        header,
        frames[2],
        "unknown_flow",
        `unknown flow "${fields.flow}"`,
      );
    }
    if (header.resume !== undefined) return this.#resume(fields.flow, header, frames[2]);
    if (header.error) {
      // A service's handler for a @PUBLISH step failed: publish the error for the request.
      const e = header.error;
      return this.#errorPublish(
        flow.name,
        header,
        frames[2],
        e.code ?? "handler_error",
        String(e.message ?? ""),
      );
    }
    const place = header.pos === undefined ? t.place! : placeRequest(flow, fields, header.pos);
    if ("error" in place) return this.#errorPublish(flow.name, header, frames[2], "no_step", place.error);
    this.#route(flow, place.position, header.id, header.n ?? 0, frames[2]);
  }

  /** True if a message with this header was seen among the last `duplicateWindow`. */
  #isDuplicate(h: Header): boolean {
    this.#recent ??= new RecentKeys(this.#o.duplicateWindow);
    const resume = h.resume === undefined || typeof h.resume === "string" ? h.resume : String(h.resume);
    return this.#recent.seen(h.id, h.pos, h.n, resume);
  }

  /** The list of request ids to acknowledge to the service whose identity frame this is. */
  #ackList(idFrame: Uint8Array): string[] {
    const k = text(idFrame);
    let a = this.#acks.get(k);
    if (!a) this.#acks.set(k, a = { idFrame, ids: [] });
    return a.ids;
  }

  /**
   * Sends what this turn produced (steps, publications, acknowledgements) once it ends: after
   * the reactor's pass (`afterReceive`), or for work done outside one (timers), in a microtask.
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    if (!this.#flushScheduled) return;
    this.#flushScheduled = false;
    for (const w of this.#stepsFor) this.#flushSteps(w);
    this.#stepsFor.clear();
    this.#flushIM();
    // Acknowledgements go at most once per millisecond while busy (each is a message that
    // wakes the service), and at once when the Subject runs out of work (onIdle).
    if (this.#acks.size && performance.now() - this.#acksSentAt >= ACK_EVERY_MS) this.#flushAcks();
  }

  #flushSteps(w: WorkerState): void {
    if (w.batch.count) void sendBatch(this.#workersSock, [w.idFrame, STEPS], w.batch)?.catch(() => {});
  }

  #flushIM(): void {
    if (!this.#imBatch.count) return;
    const bytes = this.#imBatch.size;
    const queued = sendBatch(this.#im, [], this.#imBatch);
    if (!queued) return;
    this.#imBacklog += bytes;
    void queued.then(
      () => {
        this.#imBacklog -= bytes;
        this.#throttle();
      },
      (e) => this.#log.error("IM send failed: {e}", { e }),
    );
    this.#throttle();
  }

  #flushAcks(): void {
    if (!this.#acks.size) return;
    this.#acksSentAt = performance.now();
    const acks = this.#acks;
    this.#acks = new Map();
    for (const { idFrame, ids } of acks.values()) {
      if (!ids.length) continue; // a message whose requests were all dropped before they were read
      const frames = [idFrame, ACK, utf8(JSON.stringify(ids))];
      if (!this.#services.sendNow(frames)) void this.#services.send(frames).catch(() => {});
    }
  }

  /** Sends a request at `position` of `flow` on its way. */
  #route(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const kind = stepKind(flow, position);
    if (kind === "done") {
      this.#toIM([this.#topics.done(flow), encodeHeader({ v: 1, id, n }), values]);
      return;
    }
    if (n >= this.#o.stepLimit) {
      return this.#errorPublish(
        flow.name,
        { id, pos: position, n },
        values,
        "step_limit",
        `request ran ${n} steps, the limit is ${this.#o.stepLimit}`,
      );
    }
    const topic = this.#topics.step(flow, position);
    const header = encodeHeader({ v: 1, id, pos: position, n });
    if (kind === "pause") return this.#pause(flow, position, id, n, values);
    if (kind === "publish") {
      this.#toIM([topic, header, values]);
      return;
    }
    this.#dispatch([topic, header, values]);
  }

  /**
   * Pauses a flow at its `@ASYNC` step: saves its state (on disk before anything is
   * published), then publishes the values so far on the step's topic with the resume token.
   */
  #pause(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const token = makeToken(flow.name, id);
    const now = Date.now();
    this.#store.save({
      token,
      id,
      flow: flow.name,
      position,
      n,
      values: text(values),
      pausedAt: now,
      deadline: now + this.#o.asyncTimeout,
    });
    this.#toIM([
      this.#topics.step(flow, position),
      encodeHeader({ v: 1, id, pos: position, n, resume: token }),
      values,
    ]);
  }

  /** Resumes a paused flow at its `@ASYNC` step, with the new values merged in. */
  #resume(topicFlow: string, header: Header, values: Uint8Array): void {
    const paused = this.#store.take(String(header.resume));
    if (!paused) {
      return this.#errorPublish(
        parseToken(String(header.resume))?.flow ?? topicFlow,
        header,
        values,
        "bad_resume",
        "resume token unknown, expired or already used",
      );
    }
    const flow = this.#o.flows.get(paused.flow);
    const added = decodeValues(values);
    if (!flow || typeof added === "string") {
      const why = !flow
        ? `flow "${paused.flow}" is no longer loaded`
        : "the resume values are not a JSON object";
      return this.#errorPublish(
        paused.flow,
        { id: paused.id },
        utf8(paused.values),
        flow ? "bad_request" : "unknown_flow",
        why,
      );
    }
    this.#stats.resumed++;
    const merged = utf8(JSON.stringify({ ...JSON.parse(paused.values), ...added }));
    this.#dispatch([
      this.#topics.step(flow, paused.position),
      encodeHeader({ v: 1, id: paused.id, pos: paused.position, n: paused.n, r: 1 }),
      merged,
    ]);
  }

  #expirePaused(): void {
    for (const p of this.#store.expire()) {
      this.#errorPublish(
        p.flow,
        { id: p.id, pos: p.position },
        utf8(p.values),
        "timeout",
        `paused flow was not resumed within ${this.#o.asyncTimeout} ms`,
      );
    }
  }

  #errorPublish(
    flow: string,
    h: Pick<Header, "id" | "pos" | "n">,
    values: Uint8Array | undefined,
    code: ErrorCode,
    message: string,
  ): void {
    this.#stats.errors++;
    const safeFlow = /^[A-Za-z0-9_.^-]*$/.test(flow) ? flow : "";
    const header: Header = { v: 1, id: h.id, error: { code, message } };
    if (h.pos !== undefined) header.pos = h.pos;
    this.#toIM([utf8(errorTopic(safeFlow)), encodeHeader(header), values ?? EMPTY_VALUES]);
  }

  #toIM(frames: readonly Uint8Array[]): void {
    this.#imBatch.add(0, 0, frames[0], frames[1], frames[2]);
    this.#addedToIM();
  }

  /** A publication went into the IM batch. */
  #addedToIM(): void {
    this.#stats.published++;
    if (this.#imBatch.size >= BATCH_FLUSH_BYTES) this.#flushIM();
    else this.#scheduleFlush();
  }

  /**
   * Stops reading requests while too many wait for worker credit or for room towards the
   * Integration Manager; reads again once both are below half their limits.
   */
  #throttle(): void {
    const pending = this.#pending.length - this.#pendingHead;
    const backlog = this.#imBacklog;
    const bytes = this.#pendingBytes;
    if (pending >= this.#o.maxPending || backlog >= IM_BACKLOG_LIMIT || bytes >= PENDING_BYTES_LIMIT) {
      this.#services.pause();
    } else if (
      pending < this.#o.maxPending / 2 && backlog < IM_BACKLOG_LIMIT / 2 && bytes < PENDING_BYTES_LIMIT / 2
    ) this.#services.resume();
  }

  // ---- workers ----------------------------------------------------------------------------

  #dispatch(frames: readonly Uint8Array[]): void {
    const w = this.#pickWorker();
    if (!w) {
      this.#pending.push(frames);
      this.#pendingBytes += bytesOf(frames);
      if (
        this.#pending.length - this.#pendingHead >= this.#o.maxPending ||
        this.#pendingBytes >= PENDING_BYTES_LIMIT
      ) this.#services.pause();
      return;
    }
    this.#sendTo(w, frames);
  }

  #pickWorker(): WorkerState | undefined {
    let best: WorkerState | undefined;
    for (const w of this.#workers.values()) {
      if (!w.leaving && w.credit > 0 && (!best || w.credit > best.credit)) best = w;
    }
    return best;
  }

  #sendTo(w: WorkerState, frames: readonly Uint8Array[]): void {
    const d = this.#nextDispatch++;
    w.credit--;
    w.inflight.add(d);
    this.#inflight.set(d, { worker: w.key, at: performance.now(), frames });
    this.#stats.dispatched++;
    w.batch.add(d, 0, frames[0], frames[1], frames[2]);
    if (w.batch.size >= BATCH_FLUSH_BYTES) this.#flushSteps(w);
    else {
      this.#stepsFor.add(w);
      this.#scheduleFlush();
    }
  }

  #pump(): void {
    while (this.#pendingHead < this.#pending.length) {
      const w = this.#pickWorker();
      if (!w) break;
      const frames = this.#pending[this.#pendingHead];
      this.#pendingBytes -= bytesOf(frames);
      this.#sendTo(w, frames);
      this.#pending[this.#pendingHead++] = undefined as unknown as Uint8Array[];
    }
    if (this.#pendingHead > 1024 && this.#pendingHead * 2 > this.#pending.length) {
      this.#pending = this.#pending.slice(this.#pendingHead);
      this.#pendingHead = 0;
    }
    this.#throttle();
  }

  #onWorker(frames: Uint8Array[]): void {
    if (frames.length < 2) return this.#drop("frame_count", "worker message without a type");
    const key = text(frames[0]);
    const type = text(frames[1]);
    let w = this.#workers.get(key);
    if (type === "RESULTS") {
      // [id, RESULTS, batch of (d, kind, topic, header, values)]
      if (frames.length !== 3) return this.#drop("frame_count", "worker RESULTS");
      const batch = BatchView.of(frames[2]);
      if (!batch) return this.#drop("bad_batch", "worker RESULTS");
      const now = performance.now();
      for (let i = 0; i < batch.count; i++) {
        const d = batch.tag(i);
        const f = this.#inflight.get(d);
        if (!f) {
          this.#stats.lateResults++;
          continue;
        }
        this.#inflight.delete(d);
        const owner = this.#workers.get(f.worker);
        if (owner) {
          owner.inflight.delete(d);
          owner.credit++;
          owner.lastSeen = now;
          this.#maybeForget(owner);
        }
        if (batch.kind(i) === KIND_CODES.pause) this.#pauseResult(...batch.frames(i));
        else {
          this.#imBatch.addRecord(batch, i, 0, 0); // as it came, without views of its frames
          this.#addedToIM();
        }
      }
      this.#pump();
      return;
    }
    if (type === "READY" || type === "HB") {
      let credit = 0;
      let body: { credit?: unknown; holding?: unknown; last?: unknown } = {};
      try {
        body = JSON.parse(text(frames[2] ?? utf8("{}"))) ?? {};
        credit = Number(body.credit ?? 0) || 0;
      } catch { /* a heartbeat without a body */ }
      if (!w) {
        w = {
          key,
          idFrame: frames[0].slice(),
          batch: new BatchWriter(4096),
          credit: 0,
          inflight: new Set(),
          lastSeen: 0,
          leaving: false,
        };
        this.#workers.set(key, w);
        this.#log.info("Worker {worker} joined with {credit} credits", { worker: key, credit });
      }
      w.lastSeen = performance.now();
      if (type === "HB" && Array.isArray(body.holding) && typeof body.last === "number") {
        this.#reconcile(w, new Set(body.holding as number[]), body.last);
      }
      if (type === "READY" || w.credit + w.inflight.size === 0) {
        w.credit = Math.max(0, credit - w.inflight.size);
      }
      this.#pump();
      return;
    }
    if (type === "BYE") {
      if (!w) return;
      w.leaving = true;
      this.#maybeForget(w);
      return;
    }
    this.#drop("bad_worker_message", type.slice(0, 20));
  }

  /**
   * Finds the steps a live worker lost. Its heartbeat lists the steps it holds and the
   * highest dispatch number it received; results travel on the same connection ahead of the
   * heartbeat. So a step still in flight here that the worker does not hold was lost on the
   * way (a dropped connection, a proxy) if it was sent before a step the worker did receive,
   * or if it was sent more than a heartbeat timeout ago. Such steps go to the front of the
   * queue; if the first copy turns up after all, its result is a late one and is ignored.
   */
  #reconcile(w: WorkerState, holding: Set<number>, last: number): void {
    const now = performance.now();
    const lost: number[] = [];
    for (const d of w.inflight) {
      if (holding.has(d)) continue;
      const f = this.#inflight.get(d);
      if (f && (d <= last || now - f.at > this.#o.heartbeatTimeout)) lost.push(d);
    }
    if (!lost.length) return;
    const frames = lost.sort((a, b) => a - b).map((d) => {
      const f = this.#inflight.get(d)!;
      this.#inflight.delete(d);
      w.inflight.delete(d);
      w.credit++;
      return f.frames;
    });
    this.#stats.lost += frames.length;
    this.#stats.redelivered += frames.length;
    if (!this.#warned.has("lost")) {
      this.#warned.add("lost");
      this.#log.warn(
        "Worker {worker} does not hold {n} steps sent to it: sending them again (further cases are counted in stats.lost)",
        { worker: w.key, n: frames.length },
      );
    }
    this.#pending = [...frames, ...this.#pending.slice(this.#pendingHead)];
    this.#pendingHead = 0;
    this.#pendingBytes += frames.reduce((n, f) => n + bytesOf(f), 0);
  }

  /** A worker reached an `@ASYNC` step: pause the flow here, where the state is kept. */
  #pauseResult(topic: Uint8Array, headerFrame: Uint8Array, values: Uint8Array): void {
    const fields = parseTopic(text(topic));
    const h = decodeHeader(headerFrame);
    const flow = fields && this.#o.flows.get(fields.flow);
    if (!flow || typeof h === "string" || h.pos === undefined) {
      return this.#drop("bad_worker_message", "pause");
    }
    this.#pause(flow, h.pos, h.id, h.n ?? 0, values);
  }

  #maybeForget(w: WorkerState | undefined): void {
    if (w && w.leaving && w.inflight.size === 0) {
      this.#workers.delete(w.key);
      this.#log.info("Worker {worker} left", { worker: w.key });
    }
  }

  #checkWorkers(): void {
    const now = performance.now();
    for (const w of [...this.#workers.values()]) {
      if (now - w.lastSeen <= this.#o.heartbeatTimeout) continue;
      this.#workers.delete(w.key);
      const lost = [...w.inflight].sort((a, b) => a - b).map((d) => {
        const f = this.#inflight.get(d)!;
        this.#inflight.delete(d);
        return f.frames;
      });
      this.#stats.redelivered += lost.length;
      this.#log.warn("Worker {worker} silent for {ms} ms: giving its {n} steps to other workers", {
        worker: w.key,
        ms: Math.round(now - w.lastSeen),
        n: lost.length,
      });
      // Redelivered steps go first, in their original order.
      this.#pending = [...lost, ...this.#pending.slice(this.#pendingHead)];
      this.#pendingHead = 0;
      this.#pendingBytes += lost.reduce((n, f) => n + bytesOf(f), 0);
    }
    this.#pump();
  }

  /**
   * Stops taking requests (new ones get an `overloaded` error publication), waits until every
   * accepted request has left the Subject, then closes. Resolves `true` if all work finished
   * within `timeoutMs`.
   */
  async drain(timeoutMs = 10_000): Promise<boolean> {
    this.#draining = true;
    const deadline = performance.now() + timeoutMs;
    while (
      this.#inflight.size + (this.#pending.length - this.#pendingHead) > 0 && performance.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const clean = this.#inflight.size + (this.#pending.length - this.#pendingHead) === 0;
    await this.close();
    return clean;
  }

  /** Closes at once; in-flight steps are abandoned. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#timer);
      if (this.#ownsReactor) await this.#reactor.close();
      else {
        await Promise.all([this.#services.close(), this.#workersSock.close(), this.#im.close()]);
      }
      this.#store.close();
    })();
    return this.#closed;
  }
}
