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
 * This file is wiring: the services side (`subject_services.ts`) and the workers side
 * (`subject_workers.ts`) read the sockets, pure parts decide (`intake.ts`, `worker_pool.ts`,
 * `pause_book.ts`, `result_gate.ts`), and the IM link (`im_link.ts`) holds what goes to the
 * Integration Manager until it is acknowledged.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { nextStep } from "../topic/flow_step.ts";
import { type BatchView, internalFrameLimit } from "../wire/batch.ts";
import { logger } from "../log.ts";
import {
  decodeValues,
  type DropReason,
  encodeHeader,
  errorFrames,
  type Header,
  newIncarnation,
  stepHeader,
  text,
  TopicCache,
  utf8,
} from "../wire/protocol.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { queueHwm as queueBudgetHwm } from "./byte_budget.ts";
import { ImLink } from "./im_link.ts";
import { FinalReplay } from "./final_replay.ts";
import { REFUSAL_KIND, RequestMetrics } from "./request_metrics.ts";
import { RequestTable } from "./request_table.ts";
import { bindSecure, connectSecure } from "./security.ts";
import { type ErrorSpec, type LoadLimits, pressure } from "./intake.ts";
import { PauseBook } from "./pause_book.ts";
import { PausedStore } from "./paused_store.ts";
import { KeptStore } from "./kept_store.ts";
import { ResultGate, Step } from "./result_gate.ts";
import {
  HELLO_EVERY_MS,
  IM_BACKLOG_LIMIT,
  IM_PING_MS,
  PENDING_BYTES_LIMIT,
  type ResolvedSubjectOptions,
  resolveSubjectOptions,
  type SubjectOptions,
  type SubjectStats,
} from "./subject_options.ts";
import { ServiceSide, type ServiceSideHost } from "./subject_services.ts";
import { sourcesHash, VersionBook, versionSlot } from "./config_versions.ts";
import { Reloads } from "./subject_reload.ts";
import { WorkerSide, type WorkerSideHost } from "./subject_workers.ts";

export type { SubjectOptions, SubjectStats } from "./subject_options.ts";

const EMPTY_VALUES = utf8("{}");

/** A running Subject. */
export class Subject {
  readonly #o: ResolvedSubjectOptions;
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("subject");
  #services!: ReactorSocket;
  #serviceSide!: ServiceSide;
  #workersSock!: ReactorSocket;
  #im!: ReactorSocket;
  #imLink!: ImLink;
  #workerSide!: WorkerSide;
  #store!: PausedStore;
  #pauses!: PauseBook;
  #reloads!: Reloads;
  readonly #topics = new TopicCache();
  #flushScheduled = false;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** The period of `#tick` and when it last ran (ms). */
  #tickMs = 0;
  #tickAt = 0;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  readonly #warned = new Set<string>();
  readonly #stats = { resumed: 0, errors: 0, refused: 0 };
  readonly #dropped: Record<string, number> = {};
  readonly #limits: LoadLimits;
  /**
   * The requests in flight, one entry each for the connection cap, the request metrics and the
   * configuration versions (request_table.ts).
   */
  readonly #inFlight = new RequestTable();
  /** Per-flow outcomes and latency, acceptance to final publication (in `stats().requests`). */
  readonly #requests: RequestMetrics;
  /** A request ended here (its final left, or it paused): its connection's count and its version let go. */
  readonly #ended = (id: string) => {
    this.#serviceSide.quota.release(id);
    this.#reloads.ended(id);
  };
  /** Finals kept for requests sent with `"keep":1` (`final_replay.ts`). */
  #replay!: FinalReplay;
  /** Where the kept finals are kept across restarts (none when `replayBuffer` is 0). */
  #kept?: KeptStore;
  /** The tokens taken by resumes, by the request they resumed, until its flow ends or pauses again. */
  readonly #resumedTokens = new Map<string, string>();
  /** A final publication leaves for the IM: the request ended; a resumed one's token is finished once the IM has it. */
  readonly #finalSent = (id: string, view: BatchView, i: number) => {
    this.#ended(id);
    // (Called as the batch leaves for the IM: a throw here would keep the batch from leaving.)
    if (this.#replay.wanting) this.#keepSafely(() => this.#replay.final(id, view.frames(i)));
    if (this.#resumedTokens.size === 0) return;
    const token = this.#resumedTokens.get(id);
    if (token === undefined) return;
    this.#resumedTokens.delete(id);
    this.#imLink.whenTaken(() => this.#storeWrite(() => this.#pauses.finish(token)));
  };

  private constructor(options: SubjectOptions) {
    this.#reactor = options.reactor ?? new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
    this.#ownsReactor = !options.reactor;
    // Timed by the reactor's pass: one clock reading for all the requests and finals of a pass.
    this.#requests = new RequestMetrics(() => this.#reactor.now(), undefined, this.#inFlight);
    this.#o = resolveSubjectOptions(options);
    this.#limits = { maxPending: this.#o.maxPending, backlog: IM_BACKLOG_LIMIT, held: PENDING_BYTES_LIMIT };
  }

  /** Binds the service and worker endpoints, connects to the Integration Manager, and runs. */
  static async start(options: SubjectOptions): Promise<Subject> {
    const s = new Subject(options);
    await s.#open();
    return s;
  }

  async #open(): Promise<void> {
    const o = this.#o;
    this.#store = new PausedStore(o.pausedStore);
    this.#replay = this.#keptFinals(o.pausedStore, o.replayBuffer);
    const sources = o.reload.sources ?? [];
    const book = new VersionBook(
      { flows: o.flows, sources, hash: await sourcesHash(sources) },
      undefined,
      this.#inFlight,
    );
    const incarnation = newIncarnation();
    this.#pauses = new PauseBook({
      store: this.#store,
      flows: o.flows,
      timeout: o.asyncTimeout,
      resumeOn: (p) => book.resumeOn(p.version, p.flow),
      incarnation,
      rerunEnded: o.imInProcess,
    });
    await this.#openSockets();
    const sendTo = (sock: () => ReactorSocket) => (idFrame: Uint8Array, frames: Uint8Array[]) => {
      const s = sock();
      if (!s.closed && !s.sendNow([idFrame, ...frames])) void s.send([idFrame, ...frames]).catch(() => {});
    };
    this.#reloads = new Reloads(book, {
      toWorker: sendTo(() => this.#workersSock),
      toService: sendTo(() => this.#services),
      admit: (key, type, status, idFrame) => this.#workerSide.admit(key, type, status, idFrame),
    }, {
      key: o.reload.key,
      timeoutMs: o.reload.timeout ?? 30_000,
      silentAfterMs: o.heartbeatTimeout,
      allowComponentPermissions: o.reload.allowComponentPermissions,
      onCurrent: o.reload.onCurrent,
      restored: o.reload.restored,
      log: this.#log,
    });
    const host: ServiceSideHost & WorkerSideHost = {
      // Plain parameters, no rest and spread: these run once per request or result.
      route: (flow, position, id, n, values) => this.#route(flow, position, id, n, values),
      resume: (topicFlow, header, values, connection) => this.#resume(topicFlow, header, values, connection),
      ping: (topic, header, values) => {
        // The announcement first: once its ping is back, a client knows this incarnation.
        this.#imLink.announce();
        this.#imLink.publish(topic, header, values);
      },
      publishRecord: (batch, i) => this.#imLink.publishRecord(batch, i),
      publishDone: (batch, i, id, flow) => this.#imLink.publishDone(batch, i, id, flow),
      pause: (flow, position, id, n, values) => this.#pause(flow, position, id, n, values),
      errorPublish: (e) => this.#errorPublish(e),
      drop: (reason, detail) => this.#drop(reason, detail),
      scheduleFlush: () => this.#scheduleFlush(),
      throttle: () => this.#throttle(),
      accepted: (id, keep) => {
        this.#requests.accepted(id);
        book.begin(id);
        if (keep) this.#replay.want(id);
      },
      duplicate: (id, keep, flow) => {
        const f = this.#replay.replay(id);
        if (f) this.#imLink.publish(f[0], f[1], f[2]);
        else if (keep) this.#forgotten(id, flow);
      },
      reload: (idFrame, body) => void this.#reloads.onReload(idFrame, body),
    };
    this.#imLink = new ImLink(this.#im, {
      incarnation,
      maxMessageSize: this.#o.maxMessageSize,
      changed: host.throttle,
      scheduleFlush: host.scheduleFlush,
      drop: host.drop,
      refused: () => this.#dropped.im_refused = (this.#dropped.im_refused ?? 0) + 1,
      log: this.#log,
      onBatch: (batch, finals) => {
        this.#requests.published(batch, this.#finalSent, finals);
        // The finals it keeps are on disk before the batch leaves: one that anybody got is kept.
        if (this.#kept?.pending) this.#commitKept();
      },
    });
    // A continuation goes on with its request's configuration version; a new request, the current one.
    const flowsFor = (h: Header | undefined) => book.flowsFor(h?.pos === undefined ? undefined : h.id);
    this.#serviceSide = new ServiceSide(this.#services, host, {
      ...o,
      flowsFor,
      incarnation,
      requests: this.#inFlight,
      kept: (id) => this.#replay.has(id) || this.#pausedBefore(id),
    });
    const gate = new ResultGate(this.#topics, (t) => this.#serviceSide.intake.flowOf(t), o.flows);
    this.#workerSide = new WorkerSide(this.#workersSock, host, {
      ...o,
      gate,
      log: this.#log,
      reloads: this.#reloads,
      now: () => this.#reactor.now(),
    });
    this.#reactor.afterReceive(() => this.#flush());
    this.#reactor.onIdle(() => this.#serviceSide.flush());
    this.#tickMs = Math.max(10, Math.floor(o.heartbeatTimeout / 4));
    this.#tickAt = performance.now();
    this.#timers.push(
      setInterval(() => this.#tick(), this.#tickMs),
      setInterval(
        () => this.#imLink.unacked && void this.#reactor.exec(() => this.#imLink.ping()).catch(() => {}),
        IM_PING_MS,
      ),
    );
    this.#imLink.announce();
    // Every second, half a second out of phase with the role's counters (written each second from
    // start): a snapshot then never lands in the millisecond an announcement waits for its ACK.
    const phase = setTimeout(() => {
      this.#imLink.announce();
      this.#timers.push(setInterval(() => this.#imLink.announce(), HELLO_EVERY_MS));
    }, HELLO_EVERY_MS / 2);
    this.#timers.push(phase);
    this.#log.info("Subject taking requests on {pull}, workers on {workers}, {flows} flows", {
      pull: o.pullAddress,
      workers: o.workerAddress,
      flows: o.flows.size,
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
    this.#im = r.socket("DEALER", {
      sendHighWaterMark: queueHwm,
      receiveHighWaterMark: 100_000,
      linger: 5000,
      immediate: true,
    });
    const security = this.#o.security;
    await connectSecure(r, this.#im, this.#o.integrationManagerAddress, security);
    this.#workersSock = r.socket("ROUTER", {
      // Workers send batches of results whose values are each up to the limit (see batch.ts).
      maxMessageSize: this.#o.maxMessageSize === undefined
        ? undefined
        : internalFrameLimit(this.#o.maxMessageSize),
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: queueHwm,
    });
    await bindSecure(r, this.#workersSock, this.#o.workerAddress, "workers", security);
    this.#services = r.socket("ROUTER", {
      maxMessageSize: this.#o.maxMessageSize,
      receiveHighWaterMark: queueHwm,
      sendHighWaterMark: 100_000,
    });
    await bindSecure(r, this.#services, this.#o.pullAddress, "services", security);
  }

  /** Every quarter of the heartbeat timeout: silent workers, expired pauses, a first oversize drop. */
  #tick(): void {
    // Late by half a period or more: this process did not run meanwhile (SIGSTOP, a paused VM, a
    // blocked loop), and its workers' heartbeats of that time are still unread.
    const now = performance.now();
    const late = now - this.#tickAt - this.#tickMs;
    this.#tickAt = now;
    if (late >= this.#tickMs / 2) this.#workerSide.paused(late);
    if (this.#storeBacklog.length) this.#writeStore();
    this.#workerSide.expire();
    this.#reloads.tick();
    // The paused flows' store may be locked from outside (a `sqlite3` shell): try at the next tick.
    let expired: ReturnType<PauseBook["expire"]> = [];
    try {
      expired = this.#pauses.expire();
      this.#warned.delete("paused_expire");
    } catch (e) {
      if (!this.#warned.has("paused_expire")) {
        this.#warned.add("paused_expire");
        this.#log.warn("Paused flows: cannot expire in {path} ({error}); trying again at each tick", {
          path: this.#o.pausedStore,
          error: (e as Error).message,
        });
      }
    }
    for (const e of expired) this.#errorPublish(e);
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
    const pool = this.#workerSide.pool;
    const counts = pool.counts();
    return {
      resumed: this.#stats.resumed,
      poisoned: counts.poisoned,
      overCap: this.#serviceSide.quota.refused,
      received: this.#serviceSide.received,
      dispatched: counts.dispatched,
      published: this.#imLink.published,
      errors: this.#stats.errors,
      refused: this.#stats.refused,
      storeWaiting: this.#storeBacklog.length,
      redelivered: counts.redelivered,
      lost: counts.lost,
      lateResults: this.#workerSide.lateResults,
      dropped,
      inFlight: pool.inFlight,
      pending: pool.pendingCount,
      pendingBytes: pool.pendingBytes,
      heldBytes: pool.heldBytes,
      workers: pool.size,
      credit: pool.credit,
      paused: this.#pauses.count,
      imUnacked: this.#imLink.unacked,
      imResent: this.#imLink.resent,
      requests: this.#requests.snapshot(),
      version: this.#reloads.book.current,
      versions: this.#reloads.book.live().map((v) => v.version),
      files: this.#reloads.book.get(this.#reloads.book.current)!.sources.map((s) => s.file),
      reloadsFailed: this.#reloads.failed,
      replay: this.#replay.stats(),
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
    this.#workerSide.flush();
    this.#imLink.flush();
    if (this.#kept?.pending) this.#commitKept();
    // Acknowledgements go at most once per millisecond while busy (each is a message that
    // wakes the service), and at once when the Subject runs out of work (onIdle).
    this.#serviceSide.flushIfDue();
  }

  /** Sends a request at `position` of `flow` on its way (`nextStep`, as a worker's segment does). */
  #route(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    const kind = nextStep(flow, position, n, this.#o.stepLimit);
    if (kind === "done") {
      return this.#imLink.publish(this.#topics.done(flow), stepHeader(id, undefined, n), values);
    }
    if (kind === "step_limit") {
      const message = `request ran ${n} steps, the limit is ${this.#o.stepLimit}`;
      const header = { id, pos: position, n };
      return this.#errorPublish({ flow: flow.name, header, values, code: "step_limit", message });
    }
    if (kind === "pause") return this.#pause(flow, position, id, n, values);
    const topic = this.#topics.step(flow, position);
    const header = stepHeader(id, position, n);
    if (kind === "publish") return this.#imLink.publish(topic, header, values);
    const book = this.#reloads.book;
    this.#dispatch(new Step(topic, header, values), flow, id, book.versionOf(id) ?? book.current);
  }

  /**
   * Pauses a flow at its `@ASYNC` step: saves its state (on disk before anything is
   * published), then publishes the values so far on the step's topic with the resume token.
   */
  #pause(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void {
    if (typeof decodeValues(values) === "string") {
      // A flow resumes with the resume's values merged over these: they must be a JSON object.
      const message = "the values are not a JSON object: a flow cannot pause with them";
      const header = { id, pos: position, n };
      return this.#errorPublish({ flow: flow.name, header, values: undefined, code: "bad_request", message });
    }
    // A paused flow holds no configuration version: it records its own, and resumes on it if it
    // is still alive (`VersionBook.resumeOn`).
    const book = this.#reloads.book;
    // A resumed flow pausing again: the token its resume took is finished with this save.
    const ends = this.#resumedTokens.get(id);
    if (ends !== undefined) this.#resumedTokens.delete(id);
    const version = book.versionOf(id) ?? book.current;
    const json = text(values);
    const body = values.slice(); // (a view of the worker's batch; the save may wait)
    let token = "";
    // Published, and its request let go, once saved: a token is never handed out before it is on disk.
    this.#storeWrite(
      () => token = this.#pauses.pause(flow.name, position, id, n, json, version, ends),
      () => {
        this.#ended(id);
        const topic = this.#topics.step(flow, position);
        const header = encodeHeader({ v: 1, id, pos: position, n, resume: token });
        if (this.#replay.wanting) this.#keepSafely(() => this.#replay.paused(id, [topic, header, body]));
        this.#imLink.publish(topic, header, body);
      },
    );
  }

  /**
   * Writes to the paused flows' store (`async_store`) that could not be made yet (the file locked
   * from outside, a full disk), in order: the first is tried again at each tick, and the others
   * wait behind it; `then` runs once its write is made. Before, a failed save was thrown out of
   * the worker's result batch: its request was lost and the rest of the batch ran again.
   */
  readonly #storeBacklog: { write: () => void; then?: () => void }[] = [];

  #storeWrite(write: () => void, then?: () => void): void {
    this.#storeBacklog.push({ write, then });
    if (this.#storeBacklog.length === 1) this.#writeStore();
  }

  #writeStore(): void {
    const backlog = this.#storeBacklog;
    while (backlog.length) {
      const { write, then } = backlog[0];
      try {
        write();
      } catch (e) {
        if (!this.#warned.has("paused_store")) {
          this.#warned.add("paused_store");
          this.#log.warn(
            "Paused flows: cannot write {path} ({error}); the pauses and ends of resumed flows wait, tried again at each tick (stats: storeWaiting)",
            { path: this.#o.pausedStore, error: (e as Error).message },
          );
        }
        return;
      }
      backlog.shift();
      then?.();
    }
    if (this.#warned.delete("paused_store")) {
      this.#log.info("Paused flows: writing to {path} again", { path: this.#o.pausedStore });
    }
  }

  /**
   * A resume message (see `PauseBook.resume`). Returns the id of the request whose token it took,
   * if it took one (its sender is told so: `RESUMED`), now or before (a `repeat`).
   */
  #resume(topicFlow: string, header: Header, values: Uint8Array, connection: string): string | undefined {
    let r: ReturnType<PauseBook["resume"]>;
    try {
      r = this.#pauses.resume(topicFlow, header, values);
    } catch (e) {
      // The store locked from outside, say: nothing was taken; the resume may be sent again.
      const message = `cannot take the token now (async_store: ${
        (e as Error).message
      }): send the resume again`;
      this.#serviceSide.intake.refused("overloaded", message);
      this.#errorPublish({
        flow: topicFlow,
        header,
        values: undefined,
        code: "overloaded",
        message,
        refusal: true,
      });
      return undefined;
    }
    if (r.kind === "repeat") return r.id;
    // A taken token is finished once the IM has the final that ends its flow (`#finalSent`), or
    // with the save of its next pause (`#pause`).
    if (r.paused) this.#resumedTokens.set(r.paused.id, r.paused.token);
    if (r.kind === "error") {
      // Refused before it took a token (bad_request, bad_resume): it resumed nothing, and it is no
      // duplicate when sent again (with good values, say).
      if (!r.paused) this.#serviceSide.intake.refused(r.error.code, r.error.message);
      this.#errorPublish(r.paused ? r.error : { ...r.error, refusal: true });
      return r.paused?.id;
    }
    this.#stats.resumed++;
    const { paused, flow } = r;
    this.#replay.resumed(paused.id);
    this.#serviceSide.quota.admit(connection, paused.id); // room was checked: it is admitted
    this.#reloads.book.begin(paused.id, r.version);
    this.#dispatch(
      new Step(
        this.#topics.step(flow, paused.position),
        encodeHeader({ v: 1, id: paused.id, pos: paused.position, n: paused.n, r: 1 }),
        utf8(r.values),
      ),
      flow,
      paused.id,
      r.version,
    );
    return paused.id;
  }

  /**
   * Whether request `id` paused in this Subject or an earlier one (its row is in async_store): a
   * keyed copy of it is then a duplicate, never run from its start, though its pause is no longer
   * kept (a resume took its token: the flow runs on from its @ASYNC step, or will, when that resume
   * is sent again to this Subject). `false` when the store cannot be read.
   */
  #pausedBefore(id: string): boolean {
    try {
      return this.#pauses.known(id);
    } catch {
      return false;
    }
  }

  /** One error publication (`errorFrames`); values as sent that are not a JSON object are left out. */
  #errorPublish(e: ErrorSpec): void {
    this.#stats.errors++;
    if (e.refusal) this.#stats.refused++;
    const body = e.values && typeof decodeValues(e.values) !== "string" ? e.values : EMPTY_VALUES;
    // Marked refused where the message was refused, not acknowledged (`Intake.refused`).
    const refused = e.refusal === true && e.acknowledged !== true;
    const [topic, header] = errorFrames(e.flow, e.header, e.code, e.message, body, refused);
    this.#imLink.publish(topic, header, body, e.refusal ? REFUSAL_KIND : 0);
  }

  /**
   * Stops reading requests while too many wait for worker credit or for room towards the
   * Integration Manager; reads again once both are below half their limits.
   */
  #throttle(): void {
    const pool = this.#workerSide.pool;
    const p = pressure(
      { queued: pool.queued, backlog: this.#imLink.backlog, held: pool.heldBytes },
      this.#limits,
    );
    if (p === "pause") this.#services.pause();
    else if (p === "resume") this.#services.resume();
  }

  /**
   * Sends a step of configuration `version` to a worker (or queues it); stops reading requests
   * when too much is held.
   */
  #dispatch(step: Step, flow: Flow, id: string, version: number): void {
    step.slot = versionSlot(version);
    const sent = this.#workerSide.dispatch(step, flow, id);
    const pool = this.#workerSide.pool;
    if (pool.heldBytes >= PENDING_BYTES_LIMIT || (!sent && pool.queued >= this.#o.maxPending)) {
      this.#services.pause();
    }
  }

  /**
   * Stops taking requests (new ones get an `overloaded` error publication), waits until every
   * accepted request has left the Subject, then closes. Resolves `true` if all work finished
   * within `timeoutMs`.
   */
  async drain(timeoutMs = 10_000): Promise<boolean> {
    this.#serviceSide.draining = true;
    const deadline = performance.now() + timeoutMs;
    // Accepted work has left once every step is done, every pause is saved (a locked store is
    // tried again meanwhile) and the IM acknowledged every publication.
    const busy = () =>
      this.#workerSide.pool.busy || this.#storeBacklog.length > 0 || this.#imLink.unacked > 0;
    let retried = performance.now();
    while (busy() && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      if (this.#storeBacklog.length && performance.now() - retried >= 250) {
        retried = performance.now();
        this.#writeStore();
      }
    }
    const clean = !busy();
    await this.close();
    return clean;
  }

  /**
   * The kept finals: those an earlier Subject kept (in the `kept_finals` table of the paused
   * flows' file) first, then this one's, told to the table as they are kept and forgotten and
   * written before their batch leaves for the IM ({@linkcode Subject.#commitKept}). A store that cannot be
   * opened or read is logged, never fatal: the finals are then kept in memory only.
   */
  #keptFinals(path: string, maxBytes: number): FinalReplay {
    if (maxBytes <= 0) return new FinalReplay(maxBytes);
    let store: KeptStore;
    try {
      store = this.#kept = new KeptStore(path);
    } catch (e) {
      this.#keptFailed("open", path, e);
      return new FinalReplay(maxBytes);
    }
    // What is queued is written when this turn's sends are (a final may leave outside a pass);
    // while the Subject starts (nothing to send yet), at the end of the read below.
    let started = false;
    const written = () => started && this.#scheduleFlush();
    const replay = new FinalReplay(maxBytes, undefined, {
      put: (id, pause, frames) => {
        store.put(id, pause, frames);
        written();
      },
      remove: (id) => {
        store.remove(id);
        written();
      },
    });
    let n = 0;
    try {
      for (const r of store.all()) {
        replay.restore(r.id, r.frames, r.pause);
        n++;
      }
      store.commit(); // what the bounds forgot of them (a smaller replay_buffer than before)
    } catch (e) {
      this.#keptFailed("read", path, e);
    }
    started = true;
    if (n > 0) this.#log.info("{n} kept finals read back from {path}", { n, path });
    return replay;
  }

  /**
   * A copy sent with `keep` of request `id`, which this Subject has seen, has no kept final: if
   * the request is not running (its final not yet left), nor paused, its final was not kept or
   * has been forgotten (`replay_buffer`). The copy is answered with a `forgotten` error at once,
   * rather than with nothing (its caller would wait out its timeout); the request is not run again.
   */
  #forgotten(id: string, flow: string): void {
    if (this.#replay.wants(id) || this.#reloads.book.versionOf(id) !== undefined) return;
    try {
      if (this.#pauses.waiting(id)) return;
    } catch {
      return; // the store locked from outside: say nothing rather than something wrong
    }
    this.#errorPublish({
      flow,
      header: { id },
      values: undefined,
      code: "forgotten",
      refusal: true,
      acknowledged: true, // as a duplicate
      message: `request ${
        JSON.stringify(id.slice(0, 60))
      } has run, and its final is no longer kept (replay_buffer): it is not run again; send it with a new id to run it again`,
    });
  }

  /**
   * Writes the kept finals of this pass; a failed write is counted (`dropped.kept_store`), and
   * logged once until a write succeeds again.
   */
  #commitKept(): void {
    try {
      this.#kept!.commit();
    } catch (e) {
      this.#keptFailed("write", this.#o.pausedStore, e);
      return;
    }
    if (this.#warned.delete("kept_store")) {
      this.#log.info("Kept finals: writing to {path} again", { path: this.#o.pausedStore });
    }
  }

  /**
   * Keeps a final for replay; a failure (its ring cannot be allocated, say) is counted
   * (`dropped.kept_memory`) and logged once, never thrown: that final is not kept.
   */
  #keepSafely(keep: () => void): void {
    try {
      keep();
    } catch (e) {
      this.#dropped.kept_memory = (this.#dropped.kept_memory ?? 0) + 1;
      if (this.#warned.has("kept_memory")) return;
      this.#warned.add("kept_memory");
      this.#log.warn("Kept finals: cannot keep one ({error}); further failures are only counted", {
        error: (e as Error).message,
      });
    }
  }

  #keptFailed(what: string, path: string, e: unknown): void {
    this.#dropped.kept_store = (this.#dropped.kept_store ?? 0) + 1;
    if (this.#warned.has("kept_store")) return;
    this.#warned.add("kept_store");
    this.#log.warn(
      `Kept finals: cannot ${what} {path} ({error}); those stay in memory only (further failures are counted in dropped.kept_store until a write succeeds)`,
      { path, error: (e as Error).message },
    );
  }

  /** Closes at once; in-flight steps are abandoned. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const t of this.#timers) clearInterval(t);
      if (this.#ownsReactor) await this.#reactor.close();
      else {
        await Promise.all([this.#services.close(), this.#workersSock.close(), this.#im.close()]);
      }
      if (this.#storeBacklog.length) {
        this.#log.error(
          "Paused flows: {n} writes to {path} were not made before the Subject closed; those pauses are lost (their callers time out)",
          { n: this.#storeBacklog.length, path: this.#o.pausedStore },
        );
      }
      this.#store.close();
      try {
        this.#kept?.close();
      } catch (e) {
        this.#keptFailed("write", this.#o.pausedStore, e);
      }
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
