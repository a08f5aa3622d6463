/**
 * How a worker calls a handler: the context it passes (the step, a logger, an abort signal), the
 * timeout of an async handler, and the mark the watchdog reads while a handler runs
 * synchronously. A handler that runs past its timeout fails with
 * {@linkcode StepTimeoutError}; a handler still running when the worker stops has its signal
 * aborted.
 *
 * @module
 */

import { type ActionKey, formatActionKey } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { resolveKey } from "../topic/resolve.ts";
import { NO_HANDLER, StepTimeoutError } from "../topic/segment.ts";
import type { BoundHandler, HandlerContext, HandlerLogger, HandlerRegistry, Values } from "../handler.ts";
import { logger } from "../log.ts";
import type { LoopMonitor } from "./loop_monitor.ts";

/** How often the running async steps are checked for timeouts: a timeout fires up to this late. */
const TIMEOUT_SWEEP_MS = 10;

/**
 * What a handler gets with its values. A class rather than an object literal with a getter:
 * one small object per step, no closures. The abort controller is made only when a handler
 * reads `signal`; one that reads it after a timeout or a stop gets an already aborted signal.
 */
class StepContext implements HandlerContext {
  #ac?: AbortController;
  #timedOut?: StepTimeoutError;
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
  timeOut(e: StepTimeoutError): void {
    this.#timedOut = e;
    this.#ac?.abort(e);
  }
}

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

/** Options of {@linkcode HandlerCalls}. */
export interface HandlerCallsOptions {
  /** The handlers. */
  readonly handlers: HandlerRegistry;
  /** Per-action timeouts by lookup key, resolved by the seven rules. */
  readonly timeouts: ReadonlyMap<string, number>;
  /** Milliseconds a handler may run where `timeouts` sets none. */
  readonly handlerTimeout: number;
  /** Marks each synchronous call for the watchdog thread, when there is one. */
  readonly monitor?: LoopMonitor;
}

/** Calls handlers for a worker, and times out and stops the async ones. */
export class HandlerCalls {
  readonly #o: HandlerCallsOptions;
  readonly #plans = new Map<Flow, StepPlan[]>();
  readonly #stop = new AbortController();
  /** Async steps still running, for their timeouts and for stopping them. */
  readonly #running = new Set<RunningStep>();
  #sweepTimer?: ReturnType<typeof setTimeout>;
  readonly #loggers = new Map<string, HandlerLogger>();

  /** Calls the handlers of `options.handlers`. */
  constructor(options: HandlerCallsOptions) {
    this.#o = options;
  }

  /** Whether a handler maps the step at `position` of `flow`. */
  has(flow: Flow, position: number): boolean {
    return this.#plan(flow, position).handler !== null;
  }

  /** The handler and timeout of a step, resolved once per flow position. */
  #plan(flow: Flow, position: number): StepPlan {
    let byPosition = this.#plans.get(flow);
    if (!byPosition) this.#plans.set(flow, byPosition = []);
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
   * Calls the handler of the step at `position` (dispatch number `d`, request `id`), or returns
   * {@linkcode NO_HANDLER}. A promise it returns joins the running steps, whose timeouts one timer
   * checks every {@linkcode TIMEOUT_SWEEP_MS} while any runs: a `setTimeout`, a `Promise.race`
   * and an abort listener per async step halved the throughput of async handlers.
   */
  call(
    flow: Flow,
    position: number,
    values: Values,
    step: { readonly id: string; readonly d: number },
  ): Values | Promise<Values> | typeof NO_HANDLER {
    const { handler, timeout } = this.#plan(flow, position);
    if (!handler) return NO_HANDLER;
    const key = flow.steps[position].key;
    const ctx = new StepContext(
      key,
      flow.name,
      step.id,
      position,
      this.#handlerLogger(flow.name),
      this.#stop.signal,
    );
    const monitor = this.#o.monitor;
    let result: Values | Promise<Values>;
    if (monitor) {
      monitor.enter(step.d, timeout);
      try {
        result = handler.call(values, ctx);
      } finally {
        monitor.leave();
      }
    } else result = handler.call(values, ctx);
    if (!(result instanceof Promise)) return result;
    return new Promise<Values>((resolve, reject) => {
      const running: RunningStep = { ctx, key, timeout, deadline: performance.now() + timeout, reject };
      this.#running.add(running);
      this.#sweepTimer ??= setTimeout(() => this.#sweepTimeouts(), TIMEOUT_SWEEP_MS);
      result.then(
        (v) => this.#running.delete(running) && resolve(v),
        (e) => this.#running.delete(running) && reject(e),
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
      const e = new StepTimeoutError(`handler for ${formatActionKey(step.key)} ran past ${step.timeout} ms`);
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

  /** Stops: running handlers are told through their signal; no more timeouts fire. */
  stop(): void {
    clearTimeout(this.#sweepTimer);
    this.#stop.abort(new Error("worker closing"));
    for (const step of this.#running) step.ctx.stopped();
  }
}
