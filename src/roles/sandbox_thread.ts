/**
 * The inside of a handler sandbox (see `sandbox.ts`): a Web Worker of a worker process, bound by
 * Deno to its components' permissions, without FFI. It imports the handler modules of its
 * components, then runs whole segments ({@linkcode StepRunner}): the steps of a turn come in as
 * one batch frame, the results of a turn go back as one, each through a ring in shared memory
 * (`ring.ts`), or as a message where a batch does not fit. A segment whose next step's handler
 * lives in another sandbox ends with a hand-off record (kind `HANDOFF_KIND + sandbox`), which
 * the worker's main thread passes on.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import type { MappingEntry } from "../topic/mapping_file.ts";
import { deniedMessage } from "../topic/permissions.ts";
import { HandlerRegistry } from "../handler.ts";
import { logger, setupLogging } from "../log.ts";
import { BatchView, BatchWriter, KIND_CODES } from "../wire/batch.ts";
import { StepResults } from "../wire/step_result.ts";
import { HandlerCalls } from "./handler_calls.ts";
import { loopBeatMs } from "./loop_monitor.ts";
import { guardedMonitor, onMainMessage, postToMain } from "./sandbox_guard.ts";
import { RingReader, RingWriter } from "./ring.ts";
import { StepRunner } from "./step_runner.ts";

/** Result records of kind `HANDOFF_KIND + i` are step messages for sandbox `i`. */
export const HANDOFF_KIND = 16;

/** Which sandbox runs each step of each flow (`null`: no handler maps it), by flow name. */
export type Owners = Readonly<Record<string, readonly (number | null)[]>>;

/** What a sandbox thread is started with. */
export interface SandboxSetup {
  /** Its index among the worker's sandboxes. */
  readonly index: number;
  /** The mapping entries whose handlers it runs. */
  readonly entries: readonly MappingEntry[];
  /** Each entry file's URL, by file (the thread may not know its working directory). */
  readonly fileUrls: Readonly<Record<string, string>>;
  /** Every flow. */
  readonly flows: readonly Flow[];
  /** Per-action handler timeouts, by lookup key. */
  readonly timeouts: readonly (readonly [string, number])[];
  /** Milliseconds a handler may run where `timeouts` sets none. */
  readonly handlerTimeout: number;
  /** The largest number of steps a request may run. */
  readonly stepLimit: number;
  /** `max_message_size`. */
  readonly maxMessageSize: number;
  /** The log level (the thread cannot read `ZMANAGER_LOG`). */
  readonly logLevel: string;
  /** Which sandbox runs each step, once known (a restarted sandbox gets it at once). */
  readonly owners?: Owners;
  /** The rings its steps come in by and its results go out by (see `ring.ts`). */
  readonly rings: { readonly steps: SharedArrayBuffer; readonly results: SharedArrayBuffer };
}

/** Main thread → sandbox. */
export type ToSandbox =
  | { readonly type: "init"; readonly setup: SandboxSetup }
  | { readonly type: "owners"; readonly owners: Owners }
  | Uint8Array; // a batch of step messages, tagged with their dispatch numbers (too large for the ring)

/** Sandbox → main thread. */
export type FromSandbox =
  /** Its modules are evaluated and it listens: it can be sent its init. */
  | { readonly type: "listening" }
  | {
    readonly type: "ready";
    /** Lookup keys whose handlers loaded. */
    readonly loaded: readonly string[];
    /** Entries that did not load, and why. */
    readonly unresolved: readonly { readonly lookup: string; readonly reason: string }[];
    /** The loop monitor's buffer (see `loop_monitor.ts`). */
    readonly monitor: SharedArrayBuffer;
  }
  | {
    readonly type: "results";
    /** A batch of results, tagged with their dispatch numbers (too large for the ring). */
    readonly batch: Uint8Array;
    /** Handlers run since the last results. */
    readonly steps: number;
  };

/** Serves the sandbox thread: call once, from the thread's entry module. */
export function serveSandbox(): void {
  // Through what sandbox_guard.ts took before any handler module ran.
  const post = (m: FromSandbox, transfer: Transferable[] = []) => postToMain(m, transfer);
  let runner: StepRunner | undefined;
  let owners: Owners = {};
  let index = -1;
  let steps = 0;
  const out = new BatchWriter(64 * 1024);
  let results: RingWriter | undefined;
  let stepRing: RingReader | undefined;
  let flushing = false;
  const flush = () => {
    flushing = false;
    if (!out.count) return;
    const batch = out.take();
    if (!results?.write(batch, steps)) {
      const copy = batch.slice();
      post({ type: "results", batch: copy, steps }, [copy.buffer]);
    }
    steps = 0;
  };
  const run = (m: Uint8Array) => {
    const view = BatchView.of(m);
    if (!view || !runner) return;
    for (let i = 0; i < view.count; i++) {
      const d = view.tag(i);
      const [topic, header, values] = view.frames(i);
      const r = runner.run(topic, header, values, d);
      if (r instanceof Promise) r.then((x) => add(d, x));
      else add(d, r);
    }
  };
  // Steps are read from the ring once the owners table is known: the first steps may be written
  // there before the message that carries it is handled.
  let serving = false;
  const serveSteps = () => {
    if (!stepRing || serving) return;
    serving = true;
    void stepRing.serve((m) => run(m.bytes));
  };
  const add = (d: number, r: Awaited<ReturnType<StepRunner["run"]>>) => {
    out.add(d, r.kind === "handoff" ? HANDOFF_KIND + r.to : KIND_CODES[r.kind], ...r.frames);
    if (!flushing) {
      flushing = true;
      queueMicrotask(flush);
    }
  };
  // A handler's stray rejection or exception must not end the thread, and with it every step.
  const log = logger("sandbox");
  self.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log.warn("A handler left a promise rejected and unhandled: {reason}", { reason: String(e.reason) });
  });
  self.addEventListener("error", (e) => {
    e.preventDefault();
    log.warn("A handler's callback threw: {message}", { message: e.message });
  });

  onMainMessage(async (data) => {
    const m = data as ToSandbox;
    if (m instanceof Uint8Array) return run(m);
    if (m.type === "owners") {
      owners = m.owners;
      serveSteps();
      return;
    }
    const s = m.setup;
    setupLogging(s.logLevel as Parameters<typeof setupLogging>[0]);
    index = s.index;
    owners = s.owners ?? {};
    results = new RingWriter(s.rings.results);
    stepRing = new RingReader(s.rings.steps);
    const registry = new HandlerRegistry();
    const unresolved = await registry.loadEntries(s.entries, (file) => new URL(s.fileUrls[file]));
    const monitor = guardedMonitor(loopBeatMs(s.handlerTimeout));
    const calls = new HandlerCalls({
      handlers: registry,
      timeouts: new Map(s.timeouts),
      handlerTimeout: s.handlerTimeout,
      monitor,
    });
    const ownerOf = (flow: Flow, pos: number) => owners[flow.name]?.[pos] ?? null;
    runner = new StepRunner({
      flows: new Map(s.flows.map((f) => [f.name, f])),
      stepLimit: s.stepLimit,
      encoder: new StepResults(s.maxMessageSize),
      has: (flow, pos) => ownerOf(flow, pos) !== null,
      call: (flow, pos, values, step) => calls.call(flow, pos, values, step),
      elsewhere: (flow, pos) => {
        const o = ownerOf(flow, pos);
        return o !== null && o !== index ? o : undefined;
      },
      onSteps: (n) => steps += n,
      describeError: deniedMessage,
    });
    const failed = new Set(unresolved.map((u) => u.entry.lookup));
    post({
      type: "ready",
      loaded: s.entries.map((en) => en.lookup).filter((l) => !failed.has(l)),
      unresolved: unresolved.map((u) => ({ lookup: u.entry.lookup, reason: u.reason })),
      monitor: monitor.buffer,
    });
    if (s.owners) serveSteps();
  });
  // Listening now: the main thread sends its init only once told so. Sent earlier, it would be
  // dispatched while a handler module's top-level await runs, to no listener, and lost.
  post({ type: "listening" });
}
