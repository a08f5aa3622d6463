/**
 * The Subject's side towards its workers: it reads their messages (`READY`, `HB`, `RESULTS`,
 * `BYE`, a watchdog's `STUCK`), lets the worker pool (`worker_pool.ts`) and the result gate
 * (`result_gate.ts`) decide, and carries the decisions out: steps written into each worker's
 * batch and sent at the end of the turn, results handed to the Subject to publish or pause,
 * poisoned requests ended with an error publication.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { BATCH_FLUSH_BYTES, BatchView, BatchWriter, sendBatch } from "../wire/batch.ts";
import { CONTROL, CONTROL_FRAMES, decodeStuck, decodeWorkerStatus } from "../wire/control.ts";
import { encodeHeader, routingKey, text, utf8 } from "../wire/protocol.ts";
import { METRICS_TOPIC } from "./metrics.ts";
import type { ReactorSocket } from "../zmq/reactor.ts";
import type { logger } from "../log.ts";
import type { ErrorSpec } from "./intake.ts";
import type { Reloads } from "./subject_reload.ts";
import { poisonedError, type ResultGate, type Step } from "./result_gate.ts";
import { type Dropped, WorkerPool } from "./worker_pool.ts";

/** What the worker side asks of the Subject. */
export interface WorkerSideHost {
  /** Publishes a ping as it came, after the Subject's announcement. */
  ping(topic: Uint8Array, header: Uint8Array, values: Uint8Array): void;
  /** Publishes record `i` of a worker's batch as it came. */
  publishRecord(batch: BatchView, i: number): void;
  /**
   * Publishes record `i` of a worker's batch as it came: the plain `done` final of request `id`
   * of flow `flow` (`ResultGate.plainDone`).
   */
  publishDone(batch: BatchView, i: number, id: string, flow: string): void;
  /** Pauses request `id` of `flow` at its `@ASYNC` step `position`. */
  pause(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void;
  /** Makes an error publication. */
  errorPublish(error: ErrorSpec): void;
  /** Counts (and first warns of) a message dropped for `reason`. */
  drop(reason: string, detail?: string): void;
  /** Steps wait in a worker's batch: send them at the end of the turn. */
  scheduleFlush(): void;
  /** The steps held changed: stop or start reading requests. */
  throttle(): void;
}

/** Options of {@linkcode WorkerSide}. */
export interface WorkerSideOptions {
  /** Milliseconds of worker silence before its steps are given to another. */
  readonly heartbeatTimeout: number;
  /** See `SubjectOptions.maxDeliveries`. */
  readonly maxDeliveries: number;
  /** See `SubjectOptions.packWindow`. */
  readonly packWindow: number;
  /** Checks results against their steps. */
  readonly gate: ResultGate;
  /** The Subject's logger. */
  readonly log: ReturnType<typeof logger>;
  /** The configuration versions: a joining worker is held until it has them. */
  readonly reloads: Reloads;
  /** The clock of the pool (ms), read per dispatch and per result batch. @default {performance.now} */
  readonly now?: () => number;
}

/** What the Subject keeps with each worker: its routing id, and the steps to send it this turn. */
interface WorkerLink {
  readonly idFrame: Uint8Array;
  readonly batch: BatchWriter;
}

const METRICS_TOPIC_FRAME = utf8(METRICS_TOPIC).slice();
const METRICS_HEADER = encodeHeader({ v: 1, id: "metrics-worker", k: "ping" }).slice();

/** Bytes of a step's frames. */
const bytesOf = (step: Step): number => step.size;

/** The Subject's workers, on its worker ROUTER socket. */
export class WorkerSide {
  /** The workers, their credit and the steps at them or waiting for them. */
  readonly pool: WorkerPool<Step, WorkerLink>;
  readonly #sock: ReactorSocket;
  readonly #host: WorkerSideHost;
  readonly #gate: ResultGate;
  readonly #log: ReturnType<typeof logger>;
  readonly #reloads: Reloads;
  /** Workers with steps to send at the end of this turn. */
  readonly #stepsFor = new Set<WorkerLink>();
  #warnedLost = false;
  #lateResults = 0;

  /** The worker side on `sock` (bound). */
  constructor(sock: ReactorSocket, host: WorkerSideHost, options: WorkerSideOptions) {
    this.#sock = sock;
    this.#host = host;
    this.#gate = options.gate;
    this.#log = options.log;
    this.#reloads = options.reloads;
    this.pool = new WorkerPool<Step, WorkerLink>({
      heartbeatTimeout: options.heartbeatTimeout,
      maxDeliveries: options.maxDeliveries,
      packWindow: options.packWindow,
      sizeOf: bytesOf,
      now: options.now,
      // Dispatch numbers grow from a base taken from the clock, so a restarted Subject never
      // reuses the numbers of the one before (workers report the highest number they received).
      firstDispatch: Date.now() * 1000,
      send: (w, d, step) => this.#send(w.link, d, step),
      observer: {
        joined: (worker, credit) =>
          this.#log.info("Worker {worker} joined with {credit} credits", { worker, credit }),
        left: (worker) => {
          this.#log.info("Worker {worker} left", { worker });
          this.#reloads.left(worker);
        },
      },
    });
    sock.onMessage((f) => this.#onMessage(f));
  }

  /** Results that arrived for a step already given to another worker (ignored). */
  get lateResults(): number {
    return this.#lateResults;
  }

  /** Sends step `step` of `flow` and of request `id` to a worker with credit, or queues it; `true` if sent. */
  dispatch(step: Step, flow: Flow, id: string): boolean {
    this.#gate.sent(step, flow, id);
    return this.pool.submit(step);
  }

  /** Sends the steps this turn gave each worker. */
  flush(): void {
    for (const w of this.#stepsFor) this.#flushSteps(w);
    this.#stepsFor.clear();
  }

  /** The Subject did not run for `ms` milliseconds: not its workers' silence (`WorkerPool.paused`). */
  paused(ms: number): void {
    this.pool.paused(ms);
  }

  /** Drops the workers silent past the heartbeat timeout; their steps go to others. */
  expire(): void {
    for (const s of this.pool.expire()) {
      this.#reloads.left(s.key); // a rollout no longer waits for it; if it speaks again, it rejoins
      this.#log.warn(
        "Worker {worker} silent for {ms} ms: giving its {n} steps to other workers" + poisonedNote(s),
        {
          worker: s.key,
          ms: s.ms,
          n: s.redelivered,
          poisoned: s.poisoned.length,
        },
      );
      this.#poison(s);
    }
    this.#pump();
  }

  #flushSteps(w: WorkerLink): void {
    if (w.batch.count) {
      void sendBatch(this.#sock, [w.idFrame, CONTROL_FRAMES.STEPS], w.batch)?.catch(() => {});
    }
  }

  /** Writes a step the pool gave a worker into its batch, sent at the end of the turn (or now, when full). */
  #send(w: WorkerLink, d: number, step: Step): void {
    w.batch.add(d, step.slot, step.topic, step.header, step.values);
    if (w.batch.size >= BATCH_FLUSH_BYTES) this.#flushSteps(w);
    else {
      this.#stepsFor.add(w);
      this.#host.scheduleFlush();
    }
  }

  #pump(): void {
    this.pool.pump();
    this.#host.throttle();
  }

  #onMessage(frames: Uint8Array[]): void {
    if (frames.length < 2) return this.#host.drop("frame_count", "worker message without a type");
    const key = routingKey(frames[0]);
    const type = text(frames[1]);
    if (type === CONTROL.RESULTS) {
      // [id, RESULTS, batch of (d, kind, topic, header, values)]
      if (frames.length !== 3) return this.#host.drop("frame_count", "worker RESULTS");
      const batch = BatchView.of(frames[2]);
      if (!batch) return this.#host.drop("bad_batch", "worker RESULTS");
      const now = this.pool.now();
      for (let i = 0; i < batch.count; i++) this.#onResult(key, batch, i, now);
      return this.#pump();
    }
    if (type === CONTROL.READY || type === CONTROL.HB) {
      if (this.#reloads.hold(key, frames[0], type, frames[2])) return;
      return this.admit(key, type, frames[2], frames[0]);
    }
    if (type === CONTROL.LOADED) return this.#reloads.onLoaded(key, frames[2]);
    if (type === CONTROL.STUCK) {
      // From a worker's watchdog thread, on a socket of its own named after the worker, or from
      // the worker itself when a handler blocked one of its sandboxes.
      const r = decodeStuck(frames[2]);
      if (!r || !this.pool.isStuckReport(key, r.worker, r.token)) {
        return this.#host.drop("bad_worker_message", "STUCK");
      }
      const out = this.pool.stuck(r.worker, r.d, r.ms, r.why);
      if (!out) return; // not in the pool: dropped already, its steps given away
      this.#reloads.left(r.worker);
      this.#log.warn(
        (r.why
          ? "Worker {worker}: {why}; giving its {n} steps to other workers"
          : "Worker {worker}: a handler has blocked its event loop for {ms} ms; giving its {n} steps to other workers") +
          poisonedNote(out),
        { worker: r.worker, ms: r.ms, why: r.why, n: out.redelivered, poisoned: out.poisoned.length },
      );
      this.#poison(out);
      return this.#pump();
    }
    if (type === CONTROL.BYE) return this.pool.bye(key);
    if (type === CONTROL.METRICS) {
      // [id, METRICS, values]: a worker process's metrics, on a socket of its own; published as
      // the metrics ping services send (PROTOCOL.md, _Metrics_), on that topic only.
      if (frames.length !== 3) return this.#host.drop("frame_count", "worker METRICS");
      return this.#host.ping(METRICS_TOPIC_FRAME, METRICS_HEADER, frames[2]);
    }
    this.#host.drop("bad_worker_message", type.slice(0, 20));
  }

  /**
   * A worker's `READY` or `HB` (`status`), taken: it joins the pool if new (the configuration
   * versions held it until it had them all), its credit and the steps it holds are updated.
   */
  admit(key: string, type: "READY" | "HB", status: Uint8Array | undefined, idFrame: Uint8Array): void {
    const link = () => ({ idFrame: idFrame.slice(), batch: new BatchWriter(4096) });
    const lost = this.pool.status(key, type, decodeWorkerStatus(status), link);
    if (lost && !this.#warnedLost) {
      this.#warnedLost = true;
      this.#log.warn(
        "Worker {worker} does not hold {n} steps sent to it: sending them again (further cases are counted in stats.lost)",
        { worker: key, n: lost },
      );
    }
    this.#pump();
  }

  /** Result `i` of a worker's batch: retire its step, then publish it (or pause, or refuse it). */
  #onResult(key: string, batch: BatchView, i: number, now: number): void {
    const step = this.pool.retire(key, batch.tag(i), now);
    if (step === "late") return void this.#lateResults++;
    // Only the worker a step was sent to may answer it (dispatch numbers can be guessed).
    if (step === "foreign") {
      return this.#host.drop("bad_result", "a result for a step sent to another worker");
    }
    const v = this.#gate.judge(batch, i, step);
    if (v.do === "publish") {
      if (v.done) this.#host.publishDone(batch, i, step.id!, step.flow!.name);
      else this.#host.publishRecord(batch, i);
    } else if (v.do === "pause") this.#host.pause(v.flow, v.position, v.id, v.n, v.values);
    else if (v.do === "drop") this.#host.drop("bad_worker_message", "pause");
    else {
      this.#host.drop("bad_result", v.why);
      if (v.error) this.#host.errorPublish(v.error);
    }
  }

  /** Ends the requests of the steps a failed worker's pool decision poisoned. */
  #poison(d: Dropped<Step>): void {
    for (const { step, whys } of d.poisoned) {
      const error = poisonedError(step, whys);
      this.#log.error("Request {id} poisoned: {message}", { id: error.header.id, message: error.message });
      this.#host.errorPublish(error);
    }
  }
}

/** The end of a log line about a failed worker that ended requests as poisoned (`{poisoned}`), if any. */
function poisonedNote(d: { readonly poisoned: readonly unknown[] }): string {
  return d.poisoned.length ? "; {poisoned} ended as poisoned (failed max_deliveries times)" : "";
}
