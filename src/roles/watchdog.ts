/**
 * A worker process's watchdog: a Web Worker (its own thread) that watches the worker's event
 * loop through a shared buffer. A handler that blocks the loop (`while (true) {}`, a long
 * synchronous computation) stops the worker's heartbeats, its other steps and every other
 * handler. When the loop has not turned for `stallAfter` ms while a handler was running, the
 * watchdog tells the Subject which step it was (`STUCK`, on a socket of its own), so the
 * Subject counts a failed delivery against that step alone and gives the worker's other steps
 * to other workers at once. When the loop stays blocked past `killAfter` ms (the handler
 * timeout), the watchdog kills the process, so its supervisor replaces it instead of leaving
 * a process spinning at 100% CPU forever.
 *
 * The shared buffer is written by the worker's thread ({@linkcode LoopMonitor}, in
 * `loop_monitor.ts`): when the loop last turned, and the step whose handler runs synchronously
 * now and since when.
 *
 * @module
 */

import { Context, type SocketOptions } from "../zmq/socket.ts";
import { stuckReport } from "../wire/control.ts";
import { loopBeatMs, LoopMonitor, SLOT } from "./loop_monitor.ts";

export { loopBeatMs, LoopMonitor } from "./loop_monitor.ts";

/** What the watchdog thread is started with. */
export interface WatchdogSetup {
  /** The monitor's shared buffer. */
  readonly buffer: SharedArrayBuffer;
  /** The Subject's worker endpoint. */
  readonly subjectAddress: string;
  /** The CURVE client options for that endpoint (none on ipc or without keys). */
  readonly curve?: SocketOptions;
  /** The worker's routing id, as the Subject knows it. */
  readonly worker: string;
  /** The secret the worker gave the Subject (`watch` in its `READY` and `HB`), sent with each report. */
  readonly token: string;
  /** Milliseconds of a blocked loop before the Subject is told which step blocks it. */
  readonly stallAfter: number;
  /** Milliseconds of a blocked loop before the process is killed. */
  readonly killAfter: number;
}

const { BEAT, STEP, SINCE } = SLOT;

/** Starts the watchdog thread for this process; returns a function that stops it. */
export function startWatchdog(setup: WatchdogSetup): () => void {
  const w = new Worker(new URL("./watchdog.ts", import.meta.url).href, { type: "module" });
  w.postMessage(setup);
  return () => w.terminate();
}

/** What {@linkcode watchWorker} needs to know of the worker. */
export interface WorkerWatch {
  /** The Subject's worker endpoint. */
  readonly subjectAddress: string;
  /** The worker's routing id. */
  readonly worker: string;
  /** The secret the worker gives the Subject. */
  readonly token: string;
  /** The worker's handler timeout, in milliseconds. */
  readonly handlerTimeout: number;
  /** The Subject's heartbeat timeout, in milliseconds. */
  readonly heartbeatTimeout: number;
  /** The CURVE client options for the Subject's endpoint (none on ipc or without keys). */
  readonly curve?: SocketOptions;
}

/**
 * Watches a worker process's event loop: a {@linkcode LoopMonitor} for the worker's thread, and
 * the watchdog thread. A blocking step is reported well before the Subject would take the worker
 * for dead (half its heartbeat timeout), so only that step is counted against; the process is
 * killed at the handler timeout. Returns the monitor and a function that stops both.
 */
export function watchWorker(
  w: WorkerWatch,
): { monitor: LoopMonitor; stallAfter: number; stop: () => void } {
  const stallAfter = Math.min(w.handlerTimeout, Math.floor(w.heartbeatTimeout / 2));
  const monitor = new LoopMonitor(loopBeatMs(stallAfter));
  const stopThread = startWatchdog({
    buffer: monitor.buffer,
    subjectAddress: w.subjectAddress,
    curve: w.curve,
    worker: w.worker,
    token: w.token,
    stallAfter,
    killAfter: Math.max(stallAfter, w.handlerTimeout),
  });
  return {
    monitor,
    stallAfter,
    stop: () => {
      monitor.stop();
      stopThread();
    },
  };
}

/** The watchdog thread's loop. */
function watch(setup: WatchdogSetup): void {
  const slots = new Float64Array(setup.buffer);
  let reported = 0; // the step reported for the current stall
  setInterval(() => {
    const now = Date.now();
    const blocked = now - slots[BEAT];
    if (blocked < setup.stallAfter) {
      reported = 0;
      return;
    }
    const d = slots[STEP];
    if (d && d !== reported && now - slots[SINCE] >= setup.stallAfter) {
      reported = d;
      report(setup, d, Math.round(now - slots[SINCE]));
    }
    if (blocked >= setup.killAfter) {
      console.error(
        `[watchdog] worker ${setup.worker}: its event loop has been blocked for ${Math.round(blocked)} ms ` +
          `(a handler that never returns${d ? `, step ${d}` : ""}); killing the process so it is replaced`,
      );
      Deno.kill(Deno.pid, "SIGKILL");
    }
  }, 2 * loopBeatMs(setup.stallAfter));
}

/** Tells the Subject which step blocks the worker, on a socket of the watchdog's own. */
function report(setup: WatchdogSetup, d: number, ms: number): void {
  try {
    const ctx = new Context();
    const s = ctx.socket("DEALER", { ...setup.curve, routingId: `${setup.worker}!watchdog`, linger: 1000 });
    s.connect(setup.subjectAddress);
    s.trySend(stuckReport({ worker: setup.worker, d, ms, token: setup.token }));
    s.close();
    void ctx.terminate(1000);
  } catch (e) {
    console.error(`[watchdog] could not tell the Subject: ${(e as Error).message}`);
  }
}

// Inside the Web Worker: wait for the setup, then watch.
if (typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  self.addEventListener("message", (e) => watch((e as MessageEvent<WatchdogSetup>).data), { once: true });
}
