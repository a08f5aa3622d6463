/**
 * A worker: receives steps from the Subject, runs the mapped handlers, and keeps running the
 * following plain steps of the same flow itself. It hands the result back when the flow
 * ends, or when the next step is `@PUBLISH` or `@ASYNC`, or on an error.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { DEFAULT_STEP_LIMIT } from "../topic/flow_step.ts";
import {
  DEFAULT_HANDLER_TIMEOUT,
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_WORKER_CONCURRENCY,
} from "../config.ts";
import { withTimeout } from "../_async.ts";
import { logger } from "../log.ts";
import { internalFrameLimit, KIND_CODES, readBatch, TurnBatch } from "../wire/batch.ts";
import { CONTROL_FRAMES, decodeObject, isControl, stuckReport, workerStatus } from "../wire/control.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, utf8 } from "../wire/protocol.ts";
import { type StepResult, StepResults } from "../wire/step_result.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import type { SocketOptions } from "../zmq/socket.ts";
import { HandlerCalls } from "./handler_calls.ts";
import { type SandboxGroup, SandboxPool, type SandboxUnresolved } from "./sandbox.ts";
import { type Runtime, WorkerVersions } from "./worker_versions.ts";
import type { HandlerRegistry } from "../handler.ts";
import { StepRunner } from "./step_runner.ts";
import { watchWorker } from "./watchdog.ts";
import { connectSecure, type Security } from "./security.ts";
import { curveClientOptions } from "../zmq/curve.ts";

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
  /**
   * Run the handlers of these groups in sandbox threads (see `sandbox.ts`) instead of `handlers`
   * on this thread. The process needs `--unstable-worker-options`. A sandbox that was terminated
   * and cannot start again ends the process (exit 1), so that its supervisor replaces it.
   */
  readonly sandboxes?: readonly SandboxGroup[];
  /**
   * Configuration versions (`worker_versions.ts`): the hash of the worker's own files, which it
   * tells the Subject, and how it loads the versions the Subject sends. @default {versions from the Subject are loaded strictly, within 10 s}
   */
  readonly reload?: {
    readonly baseHash?: string;
    readonly allowComponentPermissions?: boolean;
    readonly importTimeout?: number;
  };
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
  /** Sandboxes terminated and started again (a handler blocked one, or it failed). */
  sandboxRestarts: number;
  /** The newest configuration version held (0: only the worker's own files). */
  version: number;
  /** The configuration versions held. */
  versions: number[];
}

const { RESULTS, BYE, LOADED } = CONTROL_FRAMES;

/**
 * Milliseconds synchronous handlers may hold a worker's thread (`--no-sandbox`) before the rest of
 * a batch of steps waits for a later task (see `Worker#runHere`).
 */
const LOCAL_TURN_MS = 50;

/** A step to run on the worker's thread: its dispatch number, version slot, runner and frames. */
interface LocalStep {
  readonly d: number;
  readonly kind: number;
  readonly runner: StepRunner | undefined;
  readonly frames: readonly [Uint8Array, Uint8Array, Uint8Array];
}

/** A running worker. */
export class Worker {
  readonly #o: Required<Omit<WorkerOptions, "reactor" | "watchdog" | "sandboxes" | "security" | "reload">>;
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #log = logger("worker");
  #sock!: ReactorSocket;
  #timer?: ReturnType<typeof setInterval>;
  /** Dispatch numbers of the steps this worker holds now (reported in every heartbeat). */
  readonly #holding = new Set<number>();
  /** The highest dispatch number received. */
  #lastDispatch = 0;
  /** Results to send at the end of this turn. */
  #results!: TurnBatch;
  readonly #encoder: StepResults;
  readonly #stats = { received: 0, steps: 0, results: 0, errors: 0, active: 0, sandboxRestarts: 0 };
  /** The configuration versions held, each with what runs its steps. */
  #versions!: WorkerVersions;
  /** The sandbox pools with steps out (see `SandboxPoolOptions.hold`). */
  readonly #busyPools = new Set<SandboxPool>();
  /** How a version's sandboxes are started (with sandboxes). */
  #sandboxStart?: Omit<Parameters<typeof SandboxPool.start>[0], "groups">;
  /** CURVE client options towards the Subject (none on ipc or without keys). */
  #curve: SocketOptions = {};
  #watch = "";
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  #id = "";
  #stopWatchdog?: () => void;

  private constructor(options: WorkerOptions) {
    // With sandboxes, results come back through shared memory, which an in-thread wait on the
    // sockets does not watch (measured: the 3-step flow's peak halved): while steps are in a
    // sandbox the reactor waits for their results on this thread for a moment, then off-thread
    // (`holdForEvents`, `waitForEventsWith`); else in-thread on the sockets.
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

  /** Connects to the Subject and starts taking steps (with `sandboxes`, once they have started). */
  static async start(options: WorkerOptions): Promise<Worker> {
    return (await Worker.startWith(options)).worker;
  }

  /** {@linkcode Worker.start}, also returning the sandboxes' mapping entries whose targets did not load. */
  static async startWith(
    options: WorkerOptions,
  ): Promise<{ worker: Worker; unresolved: readonly SandboxUnresolved[] }> {
    const w = new Worker(options);
    const routingId = `worker-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    // Proves a STUCK report comes from this worker's watchdog (sent only to the Subject).
    const watch = crypto.randomUUID();
    w.#id = routingId;
    w.#watch = watch;
    w.#curve = curveClientOptions(options.security?.keys, w.#o.subjectAddress);
    let unresolved: readonly SandboxUnresolved[] = [];
    let base: Runtime = { version: 0 };
    if (options.sandboxes) {
      w.#sandboxStart = {
        ...w.#o,
        onResult: (d, kind, a, b, c) => w.#replied(d, kind, a, b, c),
        onResultsEnd: () => w.#results.flush(),
        onStuck: (d, ms, why) => w.#reportStuck(d, ms, why),
        onLost: (ds) => w.#lost(ds),
        onRestart: () => w.#stats.sandboxRestarts++,
        onSteps: (n) => w.#stats.steps += n,
        onFatal: (message) => {
          w.#log.error("{message}: the worker stops", { message });
          void w.close().finally(() => Deno.exit(1));
        },
        hold: (pool) => {
          const release = w.#reactor.holdForEvents();
          w.#busyPools.add(pool);
          return () => {
            w.#busyPools.delete(pool);
            release();
          };
        },
      };
      // A sandbox's results come through shared memory: while one pool has steps out (of any
      // version, a closing incarnation's too), the reactor waits for them on this thread a
      // moment before it waits off-thread.
      w.#reactor.waitForEventsWith((ms) => {
        if (w.#busyPools.size !== 1) return false;
        const [pool] = w.#busyPools;
        return pool.waitResults(ms);
      });
      const started = await SandboxPool.start({ ...w.#sandboxStart, groups: options.sandboxes });
      base = { version: 0, pool: started.pool };
      unresolved = started.unresolved;
    }
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
    const watching = options.watchdog && !options.sandboxes
      ? watchWorker({
        ...w.#o,
        curve: w.#curve,
        worker: routingId,
        token: watch,
      })
      : undefined;
    w.#stopWatchdog = watching?.stop;
    w.#stallAfter = watching?.stallAfter ?? Infinity;
    const onThread = (
      handlers: HandlerRegistry,
      flows: ReadonlyMap<string, Flow>,
      timeouts = w.#o.timeouts,
    ) => {
      const calls = new HandlerCalls({ ...w.#o, handlers, timeouts, monitor: watching?.monitor });
      const runner = new StepRunner({
        ...w.#o,
        flows,
        encoder: w.#encoder,
        has: (flow, pos) => calls.has(flow, pos),
        call: (flow, pos, values, step) => calls.call(flow, pos, values, step),
        onSteps: (n) => w.#stats.steps += n,
      });
      return { calls, runner };
    };
    if (!options.sandboxes) base = { version: 0, ...onThread(w.#o.handlers, w.#o.flows) };
    w.#versions = new WorkerVersions({
      base,
      maker: { sandbox: w.#sandboxStart, onThread },
      allowComponentPermissions: options.reload?.allowComponentPermissions,
      importTimeout: options.reload?.importTimeout ?? 10_000,
      closeAfter: w.#o.handlerTimeout + 1000,
      log: w.#log,
    });
    const baseHash = options.reload?.baseHash;
    await connectSecure(w.#reactor, w.#sock, w.#o.subjectAddress, options.security);
    w.#sock.onMessage((f) => w.#onMessage(f));
    w.#reactor.afterReceive(() => w.#results.flush());
    w.#reactor.onIdle(() => w.#results.flush()); // results of async handlers that settled in microtasks
    await w.#sock.send(
      workerStatus("READY", { credit: w.#o.concurrency, pid: Deno.pid, watch, base: baseHash }),
    );
    w.#timer = setInterval(() => {
      // `holding` and `last` let the Subject find steps lost on the way in or out (a dropped
      // connection, a proxy): a step it sent that is at most `last` but not held, and whose
      // result has not arrived before this heartbeat, is gone.
      const hb = workerStatus("HB", {
        watch,
        credit: w.#o.concurrency - w.#stats.active,
        holding: [...w.#holding],
        last: w.#lastDispatch,
        base: baseHash,
      });
      if (!w.#sock.closed && !w.#sock.sendNow(hb)) void w.#sock.send(hb).catch(() => {});
    }, w.#o.heartbeatInterval);
    w.#log.info("Worker {pid} connected to {subject} with {credit} credits", {
      pid: Deno.pid,
      subject: w.#o.subjectAddress,
      credit: w.#o.concurrency,
    });
    return { worker: w, unresolved };
  }

  /** This worker's routing id, as the Subject knows it (and logs it). */
  get id(): string {
    return this.#id;
  }

  /** A snapshot of the counters. */
  stats(): WorkerStats {
    const versions = this.#versions.versions();
    return { ...this.#stats, version: versions[versions.length - 1], versions };
  }

  #onMessage(frames: Uint8Array[]): void {
    if (frames.length === 2 && isControl(frames[0], "CONFIG")) {
      const version = Number(decodeObject(frames[1])?.version) || 0;
      const failed = (e: unknown) => ({ version, error: String(e) });
      void this.#versions.config(frames[1]).catch(failed).then((loaded) => {
        const m = [LOADED, utf8(JSON.stringify(loaded)).slice()];
        if (!this.#sock.closed && !this.#sock.sendNow(m)) void this.#sock.send(m).catch(() => {});
      });
      return;
    }
    if (frames.length === 2 && isControl(frames[0], "RETIRE")) return this.#versions.retire(frames[1]);
    // [STEPS, batch of (d, version slot, topic, header, values)]
    const records = frames.length === 2 && isControl(frames[0], "STEPS") ? readBatch(frames[1]) : undefined;
    if (!records) {
      this.#log.warn("Ignored a message of {n} frames from the Subject", { n: frames.length });
      return;
    }
    let pool: SandboxPool | undefined;
    let pools: SandboxPool[] | undefined;
    /** Steps to run on this thread in a later task (see {@linkcode Worker.#runHere}). */
    let later: LocalStep[] | undefined;
    const stalls = this.#stalls;
    const started = performance.now();
    for (const { tag: d, kind, frames } of records) {
      // Every step of the batch is held from now on (the heartbeat says so), also those run later.
      this.#stats.received++;
      this.#stats.active++;
      this.#holding.add(d);
      if (d > this.#lastDispatch) this.#lastDispatch = d;
      const rt = this.#versions.forSlot(kind);
      if (rt?.pool) {
        rt.pool.send(d, frames[0], frames[1], frames[2]);
        if (rt.pool !== pool) {
          if (pool) (pools ??= []).push(pool);
          pool = rt.pool;
        }
        continue;
      }
      if (later || performance.now() - started >= LOCAL_TURN_MS) {
        (later ??= []).push({ d, kind, runner: rt?.runner, frames });
      } else if (this.#stalls !== stalls) this.#drop(d);
      else this.#runOne(d, kind, rt?.runner, frames);
    }
    pool?.flush();
    if (pools) { for (const p of pools) p.flush(); }
    if (later) setTimeout(() => this.#runHere(later, 0, stalls), 0);
  }

  /**
   * Runs steps on this thread (`--no-sandbox`), from `i`. Once synchronous handlers have held the
   * thread for {@linkcode LOCAL_TURN_MS}, the rest run in a later task: the results so far leave,
   * the heartbeat and the watchdog's mark move, between them. Before, a batch of steps ran back to
   * back: six 1.5 s handlers blocked the thread 9 s, the watchdog killed the worker, and every
   * step ran again elsewhere. `stalls`: {@linkcode Worker.#stalls} when the steps came.
   */
  #runHere(steps: readonly LocalStep[], i: number, stalls: number): void {
    const started = performance.now();
    for (; i < steps.length; i++) {
      if (this.#stalls !== stalls) {
        for (; i < steps.length; i++) this.#drop(steps[i].d);
        return;
      }
      if (i > 0 && performance.now() - started >= LOCAL_TURN_MS) {
        setTimeout(() => this.#runHere(steps, i, stalls), 0);
        return;
      }
      const { d, kind, runner, frames } = steps[i];
      this.#runOne(d, kind, runner, frames);
    }
  }

  /**
   * A step this worker got is not run here after all: a handler blocked the thread past the
   * watchdog's report since it came, and the Subject has given every step this worker held to
   * others (run on here, it would run twice).
   */
  #drop(d: number): void {
    if (this.#holding.delete(d)) this.#stats.active--;
  }

  /** Runs step `d`'s segment on this thread and replies; notes a handler that blocked it past the watchdog's report. */
  #runOne(
    d: number,
    kind: number,
    runner: StepRunner | undefined,
    [topic, header, values]: readonly [Uint8Array, Uint8Array, Uint8Array],
  ): void {
    let r: StepResult | Promise<StepResult>;
    const t = performance.now();
    try {
      if (!runner) {
        throw new Error(`this worker does not hold the step's configuration version (slot ${kind})`);
      }
      r = this.#segment(runner, topic, header, values, d);
    } catch (e) {
      r = this.#encoder.crashed(topic, header, e);
    }
    if (performance.now() - t >= this.#stallAfter) this.#stalls++;
    if (r instanceof Promise) {
      r.then((x) => this.#reply(d, x), (e) => this.#reply(d, this.#encoder.crashed(topic, header, e)));
    } else this.#reply(d, r);
  }

  /** When the watchdog reports a blocked loop (ms), if it runs (`--no-sandbox`). */
  #stallAfter = Infinity;
  /** Handlers that blocked this thread past {@linkcode Worker.#stallAfter}. */
  #stalls = 0;

  #reply(d: number, r: StepResult): void {
    this.#replied(d, KIND_CODES[r.kind], r.frames[0], r.frames[1], r.frames[2]);
  }

  #replied(d: number, kind: number, topic: Uint8Array, header: Uint8Array, values: Uint8Array): void {
    this.#holding.delete(d);
    this.#stats.active--;
    this.#stats.results++;
    if (kind === KIND_CODES.error) this.#stats.errors++;
    this.#results.add(d, kind, topic, header, values);
  }

  /** Steps a terminated sandbox held: the Subject sends them again (see `sandbox.ts`). */
  #lost(ds: readonly number[]): void {
    for (const d of ds) {
      if (this.#holding.delete(d)) this.#stats.active--;
    }
  }

  /**
   * Tells the Subject that step `d`'s handler blocked its sandbox. It goes on this worker's own
   * connection, ahead of the heartbeat that no longer lists the sandbox's steps: sent on a socket
   * of its own (as the watchdog of `--no-sandbox` must, its main thread being blocked), it could
   * arrive after that heartbeat, which has the Subject take the steps for lost and send them
   * again uncounted, and the blocking step ran again and again (measured: 3 and 4 runs instead of
   * 2 in 3 of 8 runs of the poison test).
   */
  #reportStuck(d: number, ms: number, why?: string): void {
    if (this.#sock.closed) return;
    this.#results.flush(); // results already made go first: their steps need not run again
    const report = stuckReport({ worker: this.#id, d, ms, token: this.#watch, ...(why ? { why } : {}) });
    this.#sock.send(report).catch((e) =>
      this.#log.warn("Could not tell the Subject of a stuck handler: {why}", { why: (e as Error).message })
    );
    // On this report the Subject takes back every step this worker holds and sends them to
    // others: none goes on here. Running on, a poison step in another sandbox, handed to the
    // restarted one, blocked it again uncounted, and that sandbox's next steps were taken for
    // lost (an outside attack: 13 blocked runs for 12 counted, and 35 steps through `lost`).
    for (const r of this.#versions.all()) this.#lost(r.pool?.abandon() ?? []);
  }

  /** Runs the segment a step message starts on this thread (see {@linkcode StepRunner}). */
  #segment(
    runner: StepRunner,
    topicFrame: Uint8Array,
    headerFrame: Uint8Array,
    valuesFrame: Uint8Array,
    d: number,
  ): StepResult | Promise<StepResult> {
    const out = runner.run(topicFrame, headerFrame, valuesFrame, d) as StepResult | Promise<StepResult>;
    if (!(out instanceof Promise)) return out;
    const release = this.#reactor.holdSyncWait();
    return out.finally(release);
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
      for (const r of this.#versions?.all() ?? []) {
        r.calls?.stop();
        r.pool?.close();
      }
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
