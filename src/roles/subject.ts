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

import type { Flow } from "../topic/flow_file.ts";
import { DEFAULT_STEP_LIMIT, nextStep, type Placement, placeRequest } from "../topic/flow_step.ts";
import {
  DEFAULT_ASYNC_TIMEOUT,
  DEFAULT_DUPLICATE_WINDOW,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_MAX_DELIVERIES,
  DEFAULT_MAX_PENDING,
} from "../config.ts";
import {
  BATCH_FLUSH_BYTES,
  BatchView,
  BatchWriter,
  internalFrameLimit,
  KIND_CODES,
  KIND_NAMES,
  readBatch,
  sendBatch,
} from "../wire/batch.ts";
import { ImOutbox, type OutboxEntry } from "./im_outbox.ts";
import { CONTROL, CONTROL_FRAMES, decodeStuck, decodeWorkerStatus, isControl } from "../wire/control.ts";
import { checkResult, type ResultKind } from "../topic/result_check.ts";
import { queueHwm as queueBudgetHwm } from "./byte_budget.ts";
import { logger } from "../log.ts";
import { type RequestFigures, RequestMetrics } from "./request_metrics.ts";
import { RecentKeys } from "./recent_keys.ts";
import { PausedStore } from "./paused_store.ts";
import {
  decodeHeader,
  decodeValues,
  type DropReason,
  encodeHeader,
  type ErrorCode,
  errorFrames,
  type Header,
  makeToken,
  parseToken,
  parseTopic,
  text,
  TopicCache,
  type TopicFields,
  TopicMemo,
  utf8,
} from "../wire/protocol.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { bindSecure, connectSecure, type Security } from "./security.ts";

/** Options of {@linkcode Subject.start}. */
export interface SubjectOptions {
  /** CURVE keys and allowlists for tcp endpoints (`security.ts`); none: plaintext. */
  readonly security?: Security;
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
  /**
   * Deliveries of one step that may end in its worker's failure (it died, went silent, or its
   * watchdog reported the step blocking its event loop) before the request ends with a
   * `poisoned` error publication instead of another delivery. @default {2}
   */
  readonly maxDeliveries?: number;
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
  /** Bytes of those requests. */
  pendingBytes: number;
  /**
   * Bytes of every step the Subject holds: waiting for credit, or at a worker until its result
   * comes back. It stops reading requests at `PENDING_BYTES_LIMIT`.
   */
  heldBytes: number;
  /** Workers connected now. */
  workers: number;
  /** Steps the workers can take now (their free credit, as this Subject counts it). */
  credit: number;
  /** Flows paused at an `@ASYNC` step now. */
  paused: number;
  /** Flows resumed. */
  resumed: number;
  /** Requests ended with a `poisoned` error: their step's workers failed `max_deliveries` times. */
  poisoned: number;
  /** Batches of publications sent to the Integration Manager and not yet acknowledged, now. */
  imUnacked: number;
  /** Batches sent to the Integration Manager again (lost on the way, or in an IM that died). */
  imResent: number;
  /** Per-flow outcomes and end-to-end latency (acceptance to final publication). */
  requests: RequestFigures;
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
  /** Reserved for a suspect step, which it runs alone (it gets no other step meanwhile). */
  isolating: boolean;
  /** The secret its watchdog's `STUCK` reports must carry (from its `READY` or `HB`). */
  watch?: string;
}

interface InFlight {
  readonly worker: string;
  /** `performance.now()` when sent. */
  readonly at: number;
  /** topic, header, values */
  readonly frames: readonly Uint8Array[];
}

/**
 * Bytes of publications not yet acknowledged by the Integration Manager (sent or waiting to be
 * sent) at which the Subject stops reading requests; it reads again below half of this. With
 * `max_pending` this bounds the Subject's memory when the IM is slow, or away (restarting).
 */
export const IM_BACKLOG_LIMIT = 16 * 1024 * 1024;

/** Milliseconds between the Subject's pings to the Integration Manager (see `im_outbox.ts`). */
export const IM_PING_MS = 250;

/**
 * How often the Subject announces its incarnation (PROTOCOL.md, _Subject restarts_); it also
 * announces it when it starts and before each ping it forwards.
 */
export const HELLO_EVERY_MS = 1000;

/** The topic of the Subject's announcements. */
export const HELLO_TOPIC = "~~~~hello";

/**
 * Bytes of steps held (waiting for worker credit, or at workers until their results come back)
 * at which the Subject stops reading requests (as at `max_pending` requests waiting); it reads
 * again below half of this.
 */
export const PENDING_BYTES_LIMIT = 64 * 1024 * 1024;

/** Bytes of a message's frames. */
const bytesOf = (frames: readonly Uint8Array[]): number => frames.reduce((n, f) => n + f.length, 0);

/** While busy, the Subject sends acknowledgements at most this often (it sends at once when idle). */
const ACK_EVERY_MS = 1;

/** What to answer one service connection at the end of a turn. */
interface AckList {
  readonly idFrame: Uint8Array;
  /** Ids of the messages taken. */
  readonly ids: string[];
  /** Messages refused (dropped), with why (PROTOCOL.md, _Acknowledgements_). */
  nacks?: { id: string; reason: string; message: string }[];
  /** Resume messages that took their token, with the request each continues. */
  resumed?: { id: string; request: string }[];
}

/** The characters of a topic's key fields; a flow name may also have `.`. */
const KEY_FIELD = /^[A-Za-z0-9_^-]*$/;
const FLOW_NAME = /^[A-Za-z0-9_.^-]*$/;

/** What the Subject works out once per request topic. */
interface TopicInfo {
  readonly fields: TopicFields;
  /** Why the topic cannot be routed (a field with a character no key may have), if so. */
  readonly invalid: string | undefined;
  /** Undefined for an unknown flow. */
  readonly flow: Flow | undefined;
  /** Where a request without a position starts (with a known flow). */
  readonly place: Placement | undefined;
}

const { STEPS, PING, ACK, NACK, RESUMED } = CONTROL_FRAMES;
const EMPTY_VALUES = utf8("{}");

/** A running Subject. */
export class Subject {
  readonly #o: Required<Omit<SubjectOptions, "reactor" | "maxMessageSize" | "security">> & {
    maxMessageSize?: number;
  };
  readonly #security?: Security;
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
  /** Bytes of the steps held: waiting for credit, or at workers (see `heldBytes` in the stats). */
  #heldBytes = 0;
  /**
   * Dispatch numbers grow from a base taken from the clock, so a restarted Subject never
   * reuses the numbers of the one before (workers report the highest number they received).
   */
  #nextDispatch = Date.now() * 1000;
  /** Acknowledgements (and refusals) to send, by the service's identity. */
  #acks = new Map<string, AckList>();
  /** Publications to send to the IM at the end of this turn. */
  readonly #imBatch = new BatchWriter();
  /** Per-flow outcomes and latency, acceptance to final publication (in `stats().requests`). */
  readonly #requests = new RequestMetrics();
  /** Batches towards the IM until it acknowledges them. */
  readonly #outbox = new ImOutbox(Date.now() * 1000);
  /** A batch waiting in the IM socket's queue for room (at most one: the others wait in the outbox). */
  #imSending = false;
  #imResent = 0;
  #imTimer?: ReturnType<typeof setInterval>;
  /** Workers with steps to send at the end of this turn. */
  readonly #stepsFor = new Set<WorkerState>();
  #flushScheduled = false;
  #acksSentAt = 0;
  #timer?: ReturnType<typeof setInterval>;
  #helloTimer?: ReturnType<typeof setInterval>;
  /**
   * This process's incarnation: a client that sees a new one sends again the requests it
   * still waits for, which died with the Subject before (PROTOCOL.md, _Subject restarts_).
   */
  readonly #hello = [
    utf8(HELLO_TOPIC),
    encodeHeader({ v: 1, id: crypto.randomUUID(), k: "hello" }),
    EMPTY_VALUES,
  ];
  #draining = false;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  readonly #warned = new Set<string>();
  readonly #topics = new TopicCache();
  /** The flow of each step made here (for checking its result without parsing its frames). */
  readonly #stepFlows = new WeakMap<readonly Uint8Array[], Flow>();
  /** Result topics' fields, worked out once per topic text. */
  readonly #resultTopics = new TopicMemo<TopicFields | undefined>(parseTopic);
  /** Keys of recent requests, for dropping duplicates (made when the window is not 0). */
  #recent?: RecentKeys;
  /**
   * A request topic's fields, flow and, for a request without a position, where it starts: all
   * three depend on the topic alone, so they are worked out once per topic text.
   */
  readonly #topicInfo = new TopicMemo<TopicInfo | undefined>((topic) => {
    const fields = parseTopic(topic);
    if (!fields) return undefined;
    const invalid = !FLOW_NAME.test(fields.flow)
      ? `the flow name ${JSON.stringify(fields.flow)} has a character other than letters, digits, _ - ^ .`
      : [fields.decorator, fields.sender, fields.context, fields.action].some((f) => !KEY_FIELD.test(f))
      ? "a key field of the topic has a character other than letters, digits, _ - ^"
      : undefined;
    const flow = invalid ? undefined : this.#o.flows.get(fields.flow);
    return { fields, invalid, flow, place: flow && placeRequest(flow, fields) };
  });
  /**
   * Why each delivery of a step ended in its worker's failure, by the step's frames (the same
   * array travels with every redelivery of the step).
   */
  readonly #failures = new WeakMap<readonly Uint8Array[], string[]>();
  /** Steps that failed `maxDeliveries` times among others, waiting to run alone on a worker. */
  #suspects: (readonly Uint8Array[])[] = [];
  readonly #stats: Omit<
    SubjectStats,
    | "inFlight"
    | "pending"
    | "workers"
    | "paused"
    | "imUnacked"
    | "imResent"
    | "requests"
    | "credit"
    | "pendingBytes"
    | "heldBytes"
  > = {
    resumed: 0,
    poisoned: 0,
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
    this.#security = options.security;
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
      maxDeliveries: options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES,
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
    // ZMQ_IMMEDIATE: nothing is queued to a connection that is not up (an IM that is away);
    // batches wait in the outbox instead, until the IM acknowledges them.
    this.#im = r.socket("DEALER", {
      sendHighWaterMark: queueHwm,
      receiveHighWaterMark: 100_000,
      linger: 5000,
      immediate: true,
    });
    this.#im.onMessage((f) => this.#onIMAck(f));
    await connectSecure(r, this.#im, this.#o.integrationManagerAddress, this.#security);
    this.#workersSock = r.socket("ROUTER", {
      // Workers send batches of results whose values are each up to the limit (see batch.ts).
      maxMessageSize: this.#o.maxMessageSize === undefined
        ? undefined
        : internalFrameLimit(this.#o.maxMessageSize),
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: queueHwm,
    });
    await bindSecure(r, this.#workersSock, this.#o.workerAddress, "workers", this.#security);
    this.#services = r.socket("ROUTER", {
      maxMessageSize: this.#o.maxMessageSize,
      receiveHighWaterMark: queueHwm,
      sendHighWaterMark: 100_000,
    });
    await bindSecure(r, this.#services, this.#o.pullAddress, "services", this.#security);
    this.#services.raw.onOversize = (f) => this.#onOversize(f);
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
    this.#imTimer = setInterval(
      () => this.#outbox.size && void this.#reactor.exec(() => this.#pingIM()).catch(() => {}),
      IM_PING_MS,
    );
    this.#announce();
    this.#helloTimer = setInterval(() => this.#announce(), HELLO_EVERY_MS);
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
      pending: this.#pending.length - this.#pendingHead + this.#suspects.length,
      pendingBytes: this.#pendingBytes,
      heldBytes: this.#heldBytes,
      workers: this.#workers.size,
      credit: [...this.#workers.values()].reduce((sum, w) => sum + (w.leaving ? 0 : w.credit), 0),
      paused: this.#store.count(),
      imUnacked: this.#outbox.size,
      imResent: this.#imResent,
      requests: this.#requests.snapshot(),
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
      // Answered when a header with an id can be read where it belongs (the second frame).
      const h = frames.length > 2 ? decodeHeader(frames[2]) : undefined;
      if (h && typeof h !== "string") {
        this.#refuse(this.#ackList(frames[0]), h.id, "frame_count", `${frames.length - 1} frames, not 3`);
      }
      return this.#drop("frame_count", `${frames.length - 1} frames after the identity`);
    }
    this.#onRequest(this.#ackList(frames[0]), [frames[1], frames[2], frames[3]]);
  }

  #onRequest(ack: AckList, frames: readonly [Uint8Array, Uint8Array, Uint8Array]): void {
    this.#stats.received++;
    const header = decodeHeader(frames[1]);
    if (typeof header === "string") {
      const id = readableId(frames[1]);
      if (id !== undefined) {
        this.#refuse(ack, id, header, "the header is not valid: v must be 1, pos and n whole numbers from 0");
      }
      return this.#drop(header);
    }
    const topic = text(frames[0]);
    const t = this.#topicInfo.get(topic);
    if (!t || t.invalid) {
      const why = t?.invalid ?? "the topic is not five fields joined by ~";
      this.#refuse(ack, header.id, "bad_topic", why);
      return this.#drop("bad_topic", JSON.stringify(topic.slice(0, 80)));
    }
    const fields = t.fields;
    if (header.k === "ping" && !fields.action.startsWith("ping")) {
      this.#refuse(ack, header.id, "bad_topic", "a ping's action must start with ping");
      return this.#drop("bad_topic", "a ping's action must start with ping");
    }
    ack.ids.push(header.id);
    this.#scheduleFlush();
    if (header.k !== "ping" && this.#o.duplicateWindow > 0 && this.#isDuplicate(header)) {
      return this.#drop("duplicate", `request ${JSON.stringify(header.id).slice(0, 60)} seen before`);
    }
    if (header.k === undefined && header.pos === undefined && header.resume === undefined) {
      this.#requests.accepted(header.id);
    }
    if (this.#draining) {
      this.#errorPublish(fields.flow, header, frames[2], "overloaded", "the Subject is shutting down");
      return;
    }
    if (header.k === "ping") {
      // The announcement first: once its ping is back, a client knows this incarnation.
      this.#announce();
      this.#toIM([frames[0], frames[1], frames[2]]);
      return;
    }
    // A resume names its flow in its token; its errors go on the flow of the topic it came on.
    if (header.resume !== undefined) return this.#resume(ack, fields.flow, header, frames[2]);
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
    if (header.error) {
      // A service's handler for a @PUBLISH step failed: publish the error for the request, with
      // one of the documented codes (anything else is a handler_error).
      const e = header.error as unknown;
      const o = e !== null && typeof e === "object" ? e as { code?: unknown; message?: unknown } : {};
      const code = typeof o.code === "string" && ERROR_CODES.has(o.code)
        ? o.code as ErrorCode
        : "handler_error";
      const message = typeof e === "string" ? e : typeof o.message === "string" ? o.message : "";
      return this.#errorPublish(flow.name, header, frames[2], code, message);
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

  /** What to answer the service whose identity frame this is, at the end of the turn. */
  #ackList(idFrame: Uint8Array): AckList {
    const k = text(idFrame);
    let a = this.#acks.get(k);
    if (!a) this.#acks.set(k, a = { idFrame, ids: [] });
    return a;
  }

  /** Refuses a message: the service is told (NACK) instead of waiting for an ACK that never comes. */
  #refuse(ack: AckList, id: string, reason: string, message: string): void {
    (ack.nacks ??= []).push({ id, reason, message });
    this.#scheduleFlush();
  }

  /** A message from a service had a frame over max_message_size: refuse it if its header can be read. */
  #onOversize(frames: (Uint8Array | null)[]): void {
    const [idFrame, , headerFrame] = frames;
    if (!idFrame || !headerFrame || frames.length !== 4) return;
    const h = decodeHeader(headerFrame);
    if (typeof h === "string") return;
    const limit = this.#o.maxMessageSize;
    this.#refuse(
      this.#ackList(idFrame.slice()),
      h.id,
      "oversize",
      `a frame is over max_message_size (${limit} bytes)`,
    );
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
    const batch = this.#imBatch.take().slice(); // the writer reuses its buffer
    this.#requests.published(batch);
    this.#outbox.add(batch);
    this.#sendToIM();
    this.#throttle();
  }

  /**
   * Sends the outbox's queued batches, oldest first, each as `[seq, batch]`. When the socket
   * cannot take one now (the IM is away: ZMQ_IMMEDIATE; or its high-water mark), that one waits
   * in the socket's queue for room and the rest stay in the outbox.
   */
  #sendToIM(): void {
    if (this.#imSending || this.#im.closed) return;
    for (let e = this.#outbox.next(); e; e = this.#outbox.next()) {
      const frames = [utf8(String(e.seq)), e.body!];
      if (this.#im.sendNow(frames)) {
        this.#outbox.sent(e);
        continue;
      }
      this.#imSending = true;
      const entry: OutboxEntry = e;
      void this.#im.send(frames).then(
        () => {
          this.#imSending = false;
          this.#outbox.sent(entry);
          this.#sendToIM();
        },
        () => {
          this.#imSending = false; // closed
        },
      );
      return;
    }
  }

  /**
   * Every {@linkcode IM_PING_MS}, on the reactor's turn, while batches wait for acknowledgement: a
   * ping, so the IM's answer shows losses. With nothing unacknowledged nothing can be lost, so an
   * idle Subject sends none (and wakes nobody).
   */
  #pingIM(): void {
    if (this.#im.closed || this.#outbox.size === 0) return;
    this.#sendToIM();
    if (this.#imSending || this.#outbox.hasQueued) return; // the IM is away or full: no ping needed
    const p = this.#outbox.ping();
    if (this.#im.sendNow([PING, utf8(String(p.seq))])) this.#outbox.sent(p);
    else this.#outbox.dropPing();
  }

  /** `["ACK", incarnation, "[seq, …]"]` from the IM. */
  #onIMAck(frames: Uint8Array[]): void {
    if (frames.length !== 3 || !isControl(frames[0], "ACK")) return this.#drop("bad_im_message");
    let seqs: unknown;
    try {
      seqs = JSON.parse(text(frames[2]));
    } catch { /* below */ }
    if (!Array.isArray(seqs)) return this.#drop("bad_im_message");
    const r = this.#outbox.ack(text(frames[1]), seqs as number[]);
    if (r.restarted) {
      this.#log.warn(
        "The Integration Manager restarted (incarnation {now}, was {was}): {n} unacknowledged batches sent again",
        { now: this.#outbox.incarnation, was: r.previous, n: r.resent },
      );
    }
    this.#imResent += r.resent;
    for (const e of r.givenUp) {
      this.#stats.dropped.im_refused = (this.#stats.dropped.im_refused ?? 0) + 1;
      this.#log.error(
        "The Integration Manager did not take a batch of {bytes} bytes, {tries} times: dropped (over its max_message_size?)",
        { bytes: e.body!.length, tries: e.misses },
      );
    }
    if (r.resent) this.#sendToIM();
    this.#throttle();
  }

  #flushAcks(): void {
    if (!this.#acks.size) return;
    this.#acksSentAt = performance.now();
    const acks = this.#acks;
    this.#acks = new Map();
    const send = (frames: Uint8Array[]) => {
      if (!this.#services.sendNow(frames)) void this.#services.send(frames).catch(() => {});
    };
    for (const { idFrame, ids, nacks, resumed } of acks.values()) {
      // (no ids: a message whose requests were all dropped before they were read)
      if (ids.length) send([idFrame, ACK, utf8(JSON.stringify(ids))]);
      if (nacks) send([idFrame, NACK, utf8(JSON.stringify(nacks))]);
      if (resumed) send([idFrame, RESUMED, utf8(JSON.stringify(resumed))]);
    }
  }

  /** Sends a request at `position` of `flow` on its way. */
  #route(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const kind = nextStep(flow, position, n, this.#o.stepLimit);
    if (kind === "done") {
      this.#toIM([this.#topics.done(flow), encodeHeader({ v: 1, id, n }), values]);
      return;
    }
    if (kind === "step_limit") {
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
    this.#dispatch([topic, header, values], flow);
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
  /**
   * Resumes a paused flow. Its answers go under the resume message's own id, on the flow of the
   * topic it came on (the one its sender subscribed to): `bad_request` for values that are not
   * a JSON object (the token is not used), `bad_resume` for a token that is malformed, unknown,
   * expired or already used; the one resume that takes the token is told so on its sender's
   * connection (`RESUMED`, with the acknowledgements), and the original request's final
   * publication follows. So of two resumes of one token, each learns which won.
   */
  #resume(ack: AckList, topicFlow: string, header: Header, values: Uint8Array): void {
    const added = decodeValues(values);
    if (typeof added === "string") {
      return this.#errorPublish(
        topicFlow,
        header,
        undefined,
        "bad_request",
        "the resume values are not a JSON object",
      );
    }
    const token = typeof header.resume === "string" ? header.resume : "";
    const paused = parseToken(token) ? this.#store.take(token) : undefined;
    if (!paused) {
      return this.#errorPublish(
        topicFlow,
        header,
        values,
        "bad_resume",
        parseToken(token)
          ? "resume token unknown, expired or already used"
          : "malformed resume token (expected Flow~<32 hex>~<request id>)",
      );
    }
    (ack.resumed ??= []).push({ id: header.id, request: paused.id });
    const flow = this.#o.flows.get(paused.flow);
    if (!flow) {
      return this.#errorPublish(
        paused.flow,
        { id: paused.id },
        utf8(paused.values),
        "unknown_flow",
        `flow "${paused.flow}" is no longer loaded`,
      );
    }
    this.#stats.resumed++;
    const merged = utf8(JSON.stringify({ ...JSON.parse(paused.values), ...added }));
    this.#dispatch([
      this.#topics.step(flow, paused.position),
      encodeHeader({ v: 1, id: paused.id, pos: paused.position, n: paused.n, r: 1 }),
      merged,
    ], flow);
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
    // Publications carry JSON objects: values as sent that are not one are left out.
    const body = values && typeof decodeValues(values) !== "string" ? values : EMPTY_VALUES;
    this.#toIM(errorFrames(flow, h, code, message, body));
  }

  /** Publishes the incarnation announcement (not counted in `published`). */
  #announce(): void {
    this.#imBatch.add(0, 0, this.#hello[0], this.#hello[1], this.#hello[2]);
    this.#scheduleFlush();
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
    const backlog = this.#outbox.bytes;
    const bytes = this.#heldBytes;
    if (pending >= this.#o.maxPending || backlog >= IM_BACKLOG_LIMIT || bytes >= PENDING_BYTES_LIMIT) {
      this.#services.pause();
    } else if (
      pending < this.#o.maxPending / 2 && backlog < IM_BACKLOG_LIMIT / 2 && bytes < PENDING_BYTES_LIMIT / 2
    ) this.#services.resume();
  }

  // ---- workers ----------------------------------------------------------------------------

  #dispatch(frames: readonly Uint8Array[], flow: Flow): void {
    this.#stepFlows.set(frames, flow);
    const bytes = bytesOf(frames);
    this.#heldBytes += bytes;
    const w = this.#pickWorker();
    if (!w) {
      this.#pending.push(frames);
      this.#pendingBytes += bytes;
      if (
        this.#pending.length - this.#pendingHead >= this.#o.maxPending ||
        this.#heldBytes >= PENDING_BYTES_LIMIT
      ) this.#services.pause();
      return;
    }
    this.#sendTo(w, frames);
    if (this.#heldBytes >= PENDING_BYTES_LIMIT) this.#services.pause();
  }

  #pickWorker(): WorkerState | undefined {
    let best: WorkerState | undefined;
    for (const w of this.#workers.values()) {
      if (!w.leaving && !w.isolating && w.credit > 0 && (!best || w.credit > best.credit)) best = w;
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
    this.#pumpSuspects();
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
    if (type === CONTROL.RESULTS) {
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
        if (f.worker !== key) {
          // Only the worker a step was sent to may answer it (dispatch numbers can be guessed).
          this.#drop("bad_result", "a result for a step sent to another worker");
          continue;
        }
        this.#inflight.delete(d);
        this.#heldBytes -= bytesOf(f.frames);
        const owner = this.#workers.get(f.worker);
        if (owner) {
          owner.inflight.delete(d);
          owner.credit++;
          owner.lastSeen = now;
          this.#maybeForget(owner);
        }
        if (this.#plainDone(batch, i, f.frames)) {
          this.#imBatch.addRecord(batch, i, 0, 0); // as it came, without views of its frames
          this.#addedToIM();
          continue;
        }
        const [topic, header, values] = batch.frames(i);
        const refused = this.#refuseResult(batch.kind(i), topic, header, f.frames);
        if (refused !== undefined) {
          this.#drop("bad_result", refused);
          const step = this.#topicInfo.get(text(f.frames[0]));
          const h = decodeHeader(f.frames[1]);
          if (step && typeof h !== "string") {
            this.#errorPublish(
              step.fields.flow,
              h,
              f.frames[2],
              "handler_error",
              `the worker's result was refused: ${refused}`,
            );
          }
        } else if (batch.kind(i) === KIND_CODES.pause) this.#pauseResult(topic, header, values);
        else {
          this.#imBatch.addRecord(batch, i, 0, 0); // as it came, without views of its frames
          this.#addedToIM();
        }
      }
      this.#pump();
      return;
    }
    if (type === CONTROL.READY || type === CONTROL.HB) {
      const status = decodeWorkerStatus(frames[2]);
      const credit = status.credit;
      if (!w) {
        w = {
          key,
          idFrame: frames[0].slice(),
          batch: new BatchWriter(4096),
          credit: 0,
          inflight: new Set(),
          lastSeen: 0,
          leaving: false,
          isolating: false,
        };
        this.#workers.set(key, w);
        this.#log.info("Worker {worker} joined with {credit} credits", { worker: key, credit });
      }
      w.lastSeen = performance.now();
      if (status.watch !== undefined) w.watch = status.watch;
      if (type === CONTROL.HB && status.holding && status.last !== undefined) {
        const last = status.last;
        this.#reconcile(w, new Set(status.holding), last);
        // The worker's free credit as of this heartbeat, less the steps on their way to it
        // (sent after the last one it received; results travel ahead of the heartbeat). This
        // also counts steps it runs for a Subject before this one (a restart): their
        // credit comes back here as they finish, their results being late ones.
        let onTheWay = 0;
        for (const d of w.inflight) if (d > last) onTheWay++;
        w.credit = Math.max(0, credit - onTheWay);
      } else if (type === CONTROL.READY || w.credit + w.inflight.size === 0) {
        w.credit = Math.max(0, credit - w.inflight.size);
      }
      this.#pump();
      return;
    }
    if (type === CONTROL.STUCK) {
      // From a worker's watchdog thread, on a socket of its own named after the worker.
      const r = decodeStuck(frames[2]);
      const named = r && this.#workers.get(r.worker);
      if (r && named?.watch !== undefined && r.token === named.watch && key === `${r.worker}!watchdog`) {
        return this.#onStuck(r.worker, r.d, r.ms);
      }
      return this.#drop("bad_worker_message", "STUCK");
    }
    if (type === CONTROL.BYE) {
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

  /**
   * Why a worker's result for the step `step` (its frames as dispatched) cannot be published, or
   * `undefined` (see `result_check.ts`): a worker is a trust boundary.
   */
  #refuseResult(
    kind: number,
    topic: Uint8Array,
    header: Uint8Array,
    step: readonly Uint8Array[],
  ): string | undefined {
    const flow = this.#stepFlows.get(step) ?? this.#topicInfo.get(text(step[0]))?.flow;
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

  /**
   * The common result, checked without parsing or views: a `done` on its flow's done topic whose
   * header starts as the step's did, up to the end of the id (as this project's workers write it).
   * `false` means only "not shown so": the result is then checked in full.
   */
  #plainDone(batch: BatchView, i: number, step: readonly Uint8Array[]): boolean {
    if (batch.kind(i) !== KIND_CODES.done) return false;
    const flow = this.#stepFlows.get(step);
    if (!flow || !batch.frameIs(i, 0, this.#topics.done(flow), true)) return false;
    const id = idPrefix(step[1]);
    return id !== undefined && batch.frameIs(i, 1, id, false);
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
      const ms = Math.round(now - w.lastSeen);
      const why = `worker ${w.key} went silent for ${ms} ms (it died, hung or was stopped)`;
      const held = this.#takeSteps(w);
      const lost = held.filter((f) => this.#deliveryFailed(f, why, held.length === 1));
      this.#log.warn("Worker {worker} silent for {ms} ms: giving its {n} steps to other workers", {
        worker: w.key,
        ms,
        n: lost.length,
      });
      this.#redeliver(lost);
    }
    this.#pump();
  }

  /**
   * A worker's watchdog reports that the handler of step `d` has blocked the worker's event
   * loop for `ms` ms. That step alone counts a failed delivery; the worker's other steps are
   * innocent and go to other workers at once. The worker gets no more steps until it speaks
   * again (its watchdog kills it once the handler runs past its timeout).
   */
  #onStuck(key: string, d: number, ms: number): void {
    const w = this.#workers.get(key);
    if (!w || !w.inflight.has(d)) return; // its steps were given away already
    const culprit = this.#inflight.get(d)!.frames;
    const steps = this.#takeSteps(w).filter((f) =>
      f !== culprit ||
      this.#deliveryFailed(f, `worker ${key}: the handler blocked its event loop for ${ms} ms`, true)
    );
    this.#log.warn(
      "Worker {worker}: a handler has blocked its event loop for {ms} ms; giving its {n} steps to other workers",
      {
        worker: key,
        ms,
        n: steps.length,
      },
    );
    this.#redeliver(steps);
    this.#pump();
  }

  /**
   * Sends suspect steps one at a time to a worker reserved for them: it gets no other step, and
   * the suspect goes once its steps in flight have finished. One worker at most is reserved;
   * it goes back to ordinary work when no suspect is left.
   */
  #pumpSuspects(): void {
    let reserved: WorkerState | undefined;
    for (const w of this.#workers.values()) if (w.isolating) reserved = w;
    if (!this.#suspects.length) {
      if (reserved && reserved.inflight.size === 0) reserved.isolating = false;
      return;
    }
    if (!reserved) {
      for (const w of this.#workers.values()) {
        if (!w.leaving && (!reserved || w.inflight.size < reserved.inflight.size)) reserved = w;
      }
      if (!reserved) return;
      reserved.isolating = true;
    }
    if (reserved.inflight.size === 0 && reserved.credit > 0) this.#sendTo(reserved, this.#suspects.shift()!);
  }

  /** Forgets a worker and takes back its steps in flight, in dispatch order. */
  #takeSteps(w: WorkerState): (readonly Uint8Array[])[] {
    this.#workers.delete(w.key);
    return [...w.inflight].sort((a, b) => a - b).map((d) => {
      const f = this.#inflight.get(d)!;
      this.#inflight.delete(d);
      return f.frames;
    });
  }

  /** Puts steps taken back from a worker at the front of the queue, in their order. */
  #redeliver(steps: (readonly Uint8Array[])[]): void {
    this.#stats.redelivered += steps.length;
    this.#pending = [...steps, ...this.#pending.slice(this.#pendingHead)];
    this.#pendingHead = 0;
    this.#pendingBytes += steps.reduce((n, f) => n + bytesOf(f), 0);
  }

  /**
   * Records that a delivery of a step ended in its worker's failure. Returns `true` if it is to
   * be delivered again as usual. After `maxDeliveries` failures the step is poisoned (a `poisoned`
   * error publication ends its request) when the last failure is pinned on it: its worker's
   * watchdog named it, or it was the only step its worker held. A step whose worker died holding
   * other steps too may only have been unlucky: it gets one more delivery, alone on a worker
   * (see `#pumpSuspects`), so innocent steps that shared two dying workers with a poison one are
   * not poisoned with it.
   */
  #deliveryFailed(frames: readonly Uint8Array[], why: string, pinned: boolean): boolean {
    let whys = this.#failures.get(frames);
    if (!whys) this.#failures.set(frames, whys = []);
    whys.push(why);
    if (whys.length < this.#o.maxDeliveries) return true;
    if (!pinned) {
      this.#suspects.push(frames);
      this.#stats.redelivered++;
      return false;
    }
    this.#stats.poisoned++;
    this.#heldBytes -= bytesOf(frames);
    const topic = text(frames[0]);
    const h = decodeHeader(frames[1]);
    const header = typeof h === "string" ? { id: "" } : h;
    const message = `step ${topic} was delivered ${whys.length} times and its worker failed each time: ` +
      whys.map((w, i) => `(${i + 1}) ${w}`).join("; ");
    this.#log.error("Request {id} poisoned: {message}", { id: header.id, message });
    this.#errorPublish(parseTopic(topic)?.flow ?? "", header, frames[2], "poisoned", message);
    return false;
  }

  /**
   * Stops taking requests (new ones get an `overloaded` error publication), waits until every
   * accepted request has left the Subject, then closes. Resolves `true` if all work finished
   * within `timeoutMs`.
   */
  async drain(timeoutMs = 10_000): Promise<boolean> {
    this.#draining = true;
    const deadline = performance.now() + timeoutMs;
    // Accepted work has left once every step is done and the IM acknowledged every publication.
    const busy = () =>
      this.#inflight.size + (this.#pending.length - this.#pendingHead) + this.#suspects.length +
          this.#outbox.size > 0;
    while (busy() && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const clean = !busy();
    await this.close();
    return clean;
  }

  /** Closes at once; in-flight steps are abandoned. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#timer);
      clearInterval(this.#imTimer);
      clearInterval(this.#helloTimer);
      if (this.#ownsReactor) await this.#reactor.close();
      else {
        await Promise.all([this.#services.close(), this.#workersSock.close(), this.#im.close()]);
      }
      this.#store.close();
    })().finally(() => this.#done.resolve());
    return this.#closed;
  }

  /** Resolves once closed (by {@linkcode Subject.close}, {@linkcode Subject.drain} or disposal). */
  closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Same as {@linkcode Subject.drain}: disposal finishes accepted work first. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.drain();
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

/** The error codes of PROTOCOL.md, the only ones a service's error continuation may carry. */
const ERROR_CODES = new Set<string>([
  "unknown_flow",
  "no_step",
  "no_handler",
  "handler_error",
  "timeout",
  "step_limit",
  "bad_resume",
  "bad_request",
  "overloaded",
  "poisoned",
]);

/** The id of a header that is not valid otherwise, when it has a usable one (to refuse it by). */
function readableId(frame: Uint8Array): string | undefined {
  try {
    const h = JSON.parse(text(frame));
    const id = h?.id;
    return typeof id === "string" && id.length > 0 && id.length <= 200 ? id : undefined;
  } catch {
    return undefined;
  }
}
