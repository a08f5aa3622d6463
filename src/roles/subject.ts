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
import { DEFAULT_STEP_LIMIT, nextStep } from "../topic/flow_step.ts";
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
  readBatch,
  sendBatch,
} from "../wire/batch.ts";
import { CONTROL, CONTROL_FRAMES, decodeStuck, decodeWorkerStatus } from "../wire/control.ts";
import { logger } from "../log.ts";
import {
  decodeHeader,
  decodeValues,
  type DropReason,
  encodeHeader,
  type ErrorCode,
  errorFrames,
  type Header,
  parseTopic,
  text,
  TopicCache,
  utf8,
} from "../wire/protocol.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { AckBook, type AckList, Intake, pressure } from "./intake.ts";
import { ImLink } from "./im_link.ts";
import { mergedValues, PauseBook } from "./pause_book.ts";
import { PausedStore } from "./paused_store.ts";
import { ResultGate, type Step } from "./result_gate.ts";
import { type Dropped, WorkerPool } from "./worker_pool.ts";
import { queueHwm as queueBudgetHwm } from "./byte_budget.ts";

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
const bytesOf = (frames: Step): number => frames.reduce((n, f) => n + f.length, 0);

/** What the Subject keeps with each worker: its routing id, and the steps to send it this turn. */
interface WorkerLink {
  readonly idFrame: Uint8Array;
  readonly batch: BatchWriter;
}

const { STEPS, ACK, NACK, RESUMED } = CONTROL_FRAMES;
const EMPTY_VALUES = utf8("{}");

/** A running Subject. */
export class Subject {
  readonly #o: Required<Omit<SubjectOptions, "reactor" | "maxMessageSize">> & { maxMessageSize?: number };
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("subject");
  #services!: ReactorSocket;
  #workersSock!: ReactorSocket;
  #im!: ImLink;
  #imSock!: ReactorSocket;
  #store!: PausedStore;
  #pauses!: PauseBook;
  readonly #pool: WorkerPool<Step, WorkerLink>;
  readonly #intake: Intake;
  readonly #acks = new AckBook(() => this.#scheduleFlush());
  readonly #topics = new TopicCache();
  readonly #gate: ResultGate;
  /** Workers with steps to send at the end of this turn. */
  readonly #stepsFor = new Set<WorkerLink>();
  #flushScheduled = false;
  #timers: ReturnType<typeof setInterval>[] = [];
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
  readonly #stats = { resumed: 0, received: 0, published: 0, errors: 0, lateResults: 0 };
  readonly #dropped: Record<string, number> = {};

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
      maxDeliveries: options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES,
    };
    this.#intake = new Intake(this.#o);
    this.#gate = new ResultGate(this.#topics, (t) => this.#intake.flowOf(t));
    this.#pool = new WorkerPool<Step, WorkerLink>({
      heartbeatTimeout: this.#o.heartbeatTimeout,
      maxDeliveries: this.#o.maxDeliveries,
      sizeOf: bytesOf,
      // Dispatch numbers grow from a base taken from the clock, so a restarted Subject never
      // reuses the numbers of the one before (workers report the highest number they received).
      firstDispatch: Date.now() * 1000,
      send: (w, d, step) => this.#send(w.link, d, step),
      observer: {
        joined: (worker, credit) =>
          this.#log.info("Worker {worker} joined with {credit} credits", { worker, credit }),
        left: (worker) => this.#log.info("Worker {worker} left", { worker }),
      },
    });
  }

  /** Binds the service and worker endpoints, connects to the Integration Manager, and runs. */
  static async start(options: SubjectOptions): Promise<Subject> {
    const s = new Subject(options);
    await s.#open();
    return s;
  }

  async #open(): Promise<void> {
    this.#store = new PausedStore(this.#o.pausedStore);
    this.#pauses = new PauseBook({ store: this.#store, timeout: this.#o.asyncTimeout });
    await this.#openSockets();
    this.#im = new ImLink(this.#imSock, {
      changed: () => this.#throttle(),
      drop: (reason) => this.#drop(reason),
      refused: () => this.#dropped.im_refused = (this.#dropped.im_refused ?? 0) + 1,
      log: this.#log,
    });
    this.#services.raw.onOversize = (f) => this.#onOversize(f);
    this.#workersSock.onMessage((f) => this.#onWorker(f));
    this.#services.onMessage((f) => this.#onService(f));
    this.#reactor.afterReceive(() => this.#flush());
    this.#reactor.onIdle(() => this.#flushAcks());
    this.#timers.push(
      setInterval(() => this.#tick(), Math.max(10, Math.floor(this.#o.heartbeatTimeout / 4))),
      setInterval(
        () => this.#im.unacked && void this.#reactor.exec(() => this.#im.ping()).catch(() => {}),
        IM_PING_MS,
      ),
      setInterval(() => this.#announce(), HELLO_EVERY_MS),
    );
    this.#announce();
    this.#log.info("Subject taking requests on {pull}, workers on {workers}, {flows} flows", {
      pull: this.#o.pullAddress,
      workers: this.#o.workerAddress,
      flows: this.#o.flows.size,
    });
  }

  /** Makes the Subject's sockets: binds the service and worker endpoints, connects to the IM. */
  async #openSockets(): Promise<void> {
    const r = this.#reactor;
    // Queues that could hold large messages are bounded in bytes: QUEUE_BYTES per connection,
    // in messages of up to max_message_size (byte_budget.ts). ROUTER send queues keep their
    // count: a ROUTER drops at its mark, and worker credit and acknowledgements bound them.
    const queueHwm = queueBudgetHwm(this.#o.maxMessageSize);
    // ZMQ_IMMEDIATE: nothing is queued to a connection that is not up (an IM that is away);
    // batches wait in the outbox instead, until the IM acknowledges them.
    this.#imSock = r.socket("DEALER", {
      sendHighWaterMark: queueHwm,
      receiveHighWaterMark: 100_000,
      linger: 5000,
      immediate: true,
    });
    await this.#imSock.connect(this.#o.integrationManagerAddress);
    this.#workersSock = r.socket("ROUTER", {
      // Workers send batches of results whose values are each up to the limit (see batch.ts).
      maxMessageSize: this.#o.maxMessageSize === undefined
        ? undefined
        : internalFrameLimit(this.#o.maxMessageSize),
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
  }

  /** Every quarter of the heartbeat timeout: silent workers, expired pauses, a first oversize drop. */
  #tick(): void {
    for (const s of this.#pool.expire()) {
      this.#log.warn("Worker {worker} silent for {ms} ms: giving its {n} steps to other workers", {
        worker: s.key,
        ms: s.ms,
        n: s.redelivered,
      });
      this.#poison(s);
    }
    this.#pump();
    for (const { paused: p, message } of this.#pauses.expire()) {
      this.#errorPublish(p.flow, { id: p.id, pos: p.position }, utf8(p.values), "timeout", message);
    }
    if (!this.#warned.has("oversize") && this.#services.oversizeDrops + this.#workersSock.oversizeDrops) {
      this.#warned.add("oversize");
      this.#log.warn("Dropped a message with a frame over max_message_size; further drops are only counted");
    }
  }

  /** A snapshot of the counters. */
  stats(): SubjectStats {
    const dropped = { ...this.#dropped };
    const oversize = this.#services.oversizeDrops + this.#workersSock.oversizeDrops;
    if (oversize > 0) dropped.oversize = oversize;
    const pool = this.#pool.counts();
    return {
      resumed: this.#stats.resumed,
      poisoned: pool.poisoned,
      received: this.#stats.received,
      dispatched: pool.dispatched,
      published: this.#stats.published,
      errors: this.#stats.errors,
      redelivered: pool.redelivered,
      lost: pool.lost,
      lateResults: this.#stats.lateResults,
      dropped,
      inFlight: this.#pool.inFlight,
      pending: this.#pool.pendingCount,
      pendingBytes: this.#pool.pendingBytes,
      heldBytes: this.#pool.heldBytes,
      workers: this.#pool.size,
      credit: this.#pool.credit,
      paused: this.#pauses.count,
      imUnacked: this.#im.unacked,
      imResent: this.#im.resent,
    };
  }

  #drop(reason: DropReason | string, detail?: string): void {
    this.#dropped[reason] = (this.#dropped[reason] ?? 0) + 1;
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
      const ack = this.#acks.list(frames[0]);
      for (const r of records) this.#onRequest(ack, r.frames);
      return;
    }
    if (frames.length !== 4) {
      this.#stats.received++;
      // Answered when a header with an id can be read where it belongs (the second frame).
      const h = frames.length > 2 ? decodeHeader(frames[2]) : undefined;
      if (h && typeof h !== "string") {
        this.#acks.refuse(
          this.#acks.list(frames[0]),
          h.id,
          "frame_count",
          `${frames.length - 1} frames, not 3`,
        );
      }
      return this.#drop("frame_count", `${frames.length - 1} frames after the identity`);
    }
    this.#onRequest(this.#acks.list(frames[0]), [frames[1], frames[2], frames[3]]);
  }

  #onRequest(ack: AckList, frames: readonly [Uint8Array, Uint8Array, Uint8Array]): void {
    this.#stats.received++;
    const a = this.#intake.admit(this.#acks, ack, frames, this.#draining);
    switch (a.do) {
      case "drop":
        return this.#drop(a.reason, a.detail);
      case "error":
        return this.#errorPublish(a.flow, a.header, a.values, a.code, a.message);
      case "ping":
        // The announcement first: once its ping is back, a client knows this incarnation.
        this.#announce();
        return this.#toIM(frames[0], frames[1], frames[2]);
      case "resume":
        return this.#resume(ack, a.flow, a.header, frames[2]);
      case "route":
        return this.#route(a.flow, a.position, a.header.id, a.header.n ?? 0, frames[2]);
    }
  }

  /** A message from a service had a frame over max_message_size: refuse it if its header can be read. */
  #onOversize(frames: (Uint8Array | null)[]): void {
    const [idFrame, , headerFrame] = frames;
    if (!idFrame || !headerFrame || frames.length !== 4) return;
    const h = decodeHeader(headerFrame);
    if (typeof h === "string") return;
    const why = `a frame is over max_message_size (${this.#o.maxMessageSize} bytes)`;
    this.#acks.refuse(this.#acks.list(idFrame.slice()), h.id, "oversize", why);
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
    this.#im.flush();
    // Acknowledgements go at most once per millisecond while busy (each is a message that
    // wakes the service), and at once when the Subject runs out of work (onIdle).
    if (this.#acks.due()) this.#flushAcks();
  }

  #flushSteps(w: WorkerLink): void {
    if (w.batch.count) void sendBatch(this.#workersSock, [w.idFrame, STEPS], w.batch)?.catch(() => {});
  }

  #flushAcks(): void {
    const send = (frames: Uint8Array[]) => {
      if (!this.#services.sendNow(frames)) void this.#services.send(frames).catch(() => {});
    };
    for (const { idFrame, ids, nacks, resumed } of this.#acks.take()) {
      // (no ids: a message whose requests were all dropped before they were read)
      if (ids.length) send([idFrame, ACK, utf8(JSON.stringify(ids))]);
      if (nacks) send([idFrame, NACK, utf8(JSON.stringify(nacks))]);
      if (resumed) send([idFrame, RESUMED, utf8(JSON.stringify(resumed))]);
    }
  }

  /** Sends a request at `position` of `flow` on its way (`nextStep`, as a worker's segment does). */
  #route(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const kind = nextStep(flow, position, n, this.#o.stepLimit);
    if (kind === "done") return this.#toIM(this.#topics.done(flow), encodeHeader({ v: 1, id, n }), values);
    if (kind === "step_limit") {
      const message = `request ran ${n} steps, the limit is ${this.#o.stepLimit}`;
      return this.#errorPublish(flow.name, { id, pos: position, n }, values, "step_limit", message);
    }
    if (kind === "pause") return this.#pause(flow, position, id, n, values);
    const topic = this.#topics.step(flow, position);
    const header = encodeHeader({ v: 1, id, pos: position, n });
    if (kind === "publish") return this.#toIM(topic, header, values);
    this.#dispatch([topic, header, values], flow);
  }

  /**
   * Pauses a flow at its `@ASYNC` step: saves its state (on disk before anything is
   * published), then publishes the values so far on the step's topic with the resume token.
   */
  #pause(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const token = this.#pauses.pause(flow.name, position, id, n, text(values));
    this.#toIM(
      this.#topics.step(flow, position),
      encodeHeader({ v: 1, id, pos: position, n, resume: token }),
      values,
    );
  }

  /**
   * Resumes a paused flow. Its answers go under the resume message's own id, on the flow of the
   * topic it came on (the one its sender subscribed to): `bad_request` for values that are not
   * a JSON object (the token is not used), `bad_resume` for a token that is malformed, unknown,
   * expired or already used; the one resume that takes the token is told so on its sender's
   * connection (`RESUMED`, with the acknowledgements), and the original request's final
   * publication follows. So of two resumes of one token, each learns which won.
   */
  #resume(ack: AckList, topicFlow: string, header: Header, values: Uint8Array): void {
    const token = typeof header.resume === "string" ? header.resume : "";
    const r = this.#pauses.resume(token, decodeValues(values));
    if (r.kind === "bad_request") return this.#errorPublish(topicFlow, header, undefined, r.kind, r.message);
    if (r.kind === "bad_resume") return this.#errorPublish(topicFlow, header, values, r.kind, r.message);
    const { paused } = r;
    this.#acks.resumed(ack, header.id, paused.id);
    const flow = this.#o.flows.get(paused.flow);
    if (!flow) {
      const message = `flow "${paused.flow}" is no longer loaded`;
      return this.#errorPublish(paused.flow, { id: paused.id }, utf8(paused.values), "unknown_flow", message);
    }
    this.#stats.resumed++;
    this.#dispatch([
      this.#topics.step(flow, paused.position),
      encodeHeader({ v: 1, id: paused.id, pos: paused.position, n: paused.n, r: 1 }),
      utf8(mergedValues(paused, r.added)),
    ], flow);
  }

  /** One error publication (`errorFrames`); values as sent that are not a JSON object are left out. */
  #errorPublish(
    flow: string,
    h: Pick<Header, "id" | "pos" | "n">,
    values: Uint8Array | undefined,
    code: ErrorCode,
    message: string,
  ): void {
    this.#stats.errors++;
    const body = values && typeof decodeValues(values) !== "string" ? values : EMPTY_VALUES;
    const [topic, header] = errorFrames(flow, h, code, message, body);
    this.#toIM(topic, header, body);
  }

  /** Publishes the incarnation announcement (not counted in `published`). */
  #announce(): void {
    this.#im.add(this.#hello[0], this.#hello[1], this.#hello[2]);
    this.#scheduleFlush();
  }

  #toIM(topic: Uint8Array, header: Uint8Array, values: Uint8Array): void {
    this.#im.add(topic, header, values);
    this.#addedToIM();
  }

  /** A publication went into the IM batch. */
  #addedToIM(): void {
    this.#stats.published++;
    if (this.#im.full) this.#im.flush();
    else this.#scheduleFlush();
  }

  /**
   * Stops reading requests while too many wait for worker credit or for room towards the
   * Integration Manager; reads again once both are below half their limits.
   */
  #throttle(): void {
    const p = pressure(
      { queued: this.#pool.queued, backlog: this.#im.backlog, held: this.#pool.heldBytes },
      { maxPending: this.#o.maxPending, backlog: IM_BACKLOG_LIMIT, held: PENDING_BYTES_LIMIT },
    );
    if (p === "pause") this.#services.pause();
    else if (p === "resume") this.#services.resume();
  }

  // ---- workers ----------------------------------------------------------------------------

  #dispatch(step: Step, flow: Flow): void {
    this.#gate.sent(step, flow);
    const sent = this.#pool.submit(step);
    if (this.#pool.heldBytes >= PENDING_BYTES_LIMIT || (!sent && this.#pool.queued >= this.#o.maxPending)) {
      this.#services.pause();
    }
  }

  /** Writes a step the pool gave worker `w` into its batch, sent at the end of the turn (or now, when full). */
  #send(w: WorkerLink, d: number, step: Step): void {
    w.batch.add(d, 0, step[0], step[1], step[2]);
    if (w.batch.size >= BATCH_FLUSH_BYTES) this.#flushSteps(w);
    else {
      this.#stepsFor.add(w);
      this.#scheduleFlush();
    }
  }

  #pump(): void {
    this.#pool.pump();
    this.#throttle();
  }

  #onWorker(frames: Uint8Array[]): void {
    if (frames.length < 2) return this.#drop("frame_count", "worker message without a type");
    const key = text(frames[0]);
    const type = text(frames[1]);
    if (type === CONTROL.RESULTS) {
      // [id, RESULTS, batch of (d, kind, topic, header, values)]
      if (frames.length !== 3) return this.#drop("frame_count", "worker RESULTS");
      const batch = BatchView.of(frames[2]);
      if (!batch) return this.#drop("bad_batch", "worker RESULTS");
      const now = this.#pool.now();
      for (let i = 0; i < batch.count; i++) this.#onResult(key, batch, i, now);
      return this.#pump();
    }
    if (type === CONTROL.READY || type === CONTROL.HB) {
      const link = () => ({ idFrame: frames[0].slice(), batch: new BatchWriter(4096) });
      const lost = this.#pool.status(key, type, decodeWorkerStatus(frames[2]), link);
      if (lost && !this.#warned.has("lost")) {
        this.#warned.add("lost");
        this.#log.warn(
          "Worker {worker} does not hold {n} steps sent to it: sending them again (further cases are counted in stats.lost)",
          { worker: key, n: lost },
        );
      }
      return this.#pump();
    }
    if (type === CONTROL.STUCK) {
      // From a worker's watchdog thread, on a socket of its own named after the worker.
      const r = decodeStuck(frames[2]);
      if (!r || !this.#pool.isWatchdog(key, r.worker, r.token)) {
        return this.#drop("bad_worker_message", "STUCK");
      }
      const out = this.#pool.stuck(r.worker, r.d, r.ms);
      if (!out) return; // its steps were given away already
      this.#log.warn(
        "Worker {worker}: a handler has blocked its event loop for {ms} ms; giving its {n} steps to other workers",
        { worker: r.worker, ms: r.ms, n: out.redelivered },
      );
      this.#poison(out);
      return this.#pump();
    }
    if (type === CONTROL.BYE) return this.#pool.bye(key);
    this.#drop("bad_worker_message", type.slice(0, 20));
  }

  /** Result `i` of a worker's batch: retire its step, then publish it (or pause, or refuse it). */
  #onResult(key: string, batch: BatchView, i: number, now: number): void {
    const step = this.#pool.retire(key, batch.tag(i), now);
    if (step === "late") return void this.#stats.lateResults++;
    // Only the worker a step was sent to may answer it (dispatch numbers can be guessed).
    if (step === "foreign") return this.#drop("bad_result", "a result for a step sent to another worker");
    if (this.#gate.plainDone(batch, i, step)) {
      this.#im.addRecord(batch, i); // as it came, without views of its frames
      return this.#addedToIM();
    }
    const [topic, header, values] = batch.frames(i);
    const refused = this.#gate.refusal(batch.kind(i), topic, header, step);
    if (refused !== undefined) {
      this.#drop("bad_result", refused);
      const flow = this.#intake.flowName(text(step[0]));
      const h = decodeHeader(step[1]);
      if (flow !== undefined && typeof h !== "string") {
        this.#errorPublish(flow, h, step[2], "handler_error", `the worker's result was refused: ${refused}`);
      }
    } else if (batch.kind(i) === KIND_CODES.pause) {
      // A worker reached an `@ASYNC` step: pause the flow here, where the state is kept.
      const fields = parseTopic(text(topic));
      const h = decodeHeader(header);
      const flow = fields && this.#o.flows.get(fields.flow);
      if (!flow || typeof h === "string" || h.pos === undefined) {
        return this.#drop("bad_worker_message", "pause");
      }
      this.#pause(flow, h.pos, h.id, h.n ?? 0, values);
    } else {
      this.#im.addRecord(batch, i);
      this.#addedToIM();
    }
  }

  /** Ends the requests of the steps a failed worker's pool decision poisoned. */
  #poison(d: Dropped<Step>): void {
    for (const { step, whys } of d.poisoned) {
      const topic = text(step[0]);
      const h = decodeHeader(step[1]);
      const header = typeof h === "string" ? { id: "" } : h;
      const message = `step ${topic} was delivered ${whys.length} times and its worker failed each time: ` +
        whys.map((w, i) => `(${i + 1}) ${w}`).join("; ");
      this.#log.error("Request {id} poisoned: {message}", { id: header.id, message });
      this.#errorPublish(parseTopic(topic)?.flow ?? "", header, step[2], "poisoned", message);
    }
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
    const busy = () => this.#pool.busy || this.#im.unacked > 0;
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
      for (const t of this.#timers) clearInterval(t);
      if (this.#ownsReactor) await this.#reactor.close();
      else {
        await Promise.all([this.#services.close(), this.#workersSock.close(), this.#imSock.close()]);
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
