/**
 * Handler sandboxes: a worker process runs its handlers in Web Workers that Deno binds to their
 * components' permissions (`deno.permissions`, behind `--unstable-worker-options`), one per
 * distinct permission set, none holding FFI: the worker's main thread, which holds libzmq, runs
 * no handler code. Each sandbox runs whole segments (`sandbox_thread.ts`); the steps of a turn
 * go in as one batch and their results come back as one, through two rings in shared memory
 * (`ring.ts`; a batch too large for its ring goes as a message). A segment whose next step is
 * another sandbox's goes on there, through the main thread.
 *
 * The main thread's event loop stays free while a handler blocks its sandbox's loop, so it sees a
 * handler running synchronously past its timeout (the sandbox's `LoopMonitor` buffer),
 * tells the Subject which step it was (`STUCK`, as the watchdog of `--no-sandbox` does: the
 * Subject counts a failed delivery against that step and poisons it after `max_deliveries`),
 * terminates the sandbox, and starts a new one: the worker process keeps serving.
 *
 * @module
 */

import { resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import type { Catalog } from "../topic/catalog.ts";
import type { Flow } from "../topic/flow_file.ts";
import type { MappingEntry } from "../topic/mapping_file.ts";
import {
  type ComponentPermissions,
  componentPermissions,
  formatPermissions,
  type Grant,
  grantAdvice,
  permissionsKey,
} from "../topic/permissions.ts";
import { resolveKey } from "../topic/resolve.ts";
import { describeImportError, parseTarget, targetModuleUrl } from "../handler.ts";
import { logger } from "../log.ts";
import type { Logger } from "@logtape/logtape";
import { BatchView, BatchWriter, KIND_NAMES } from "../wire/batch.ts";
import { decodeHeader, parseTopic, text, TopicCache, TopicMemo } from "../wire/protocol.ts";
import { loopBeatMs, SLOT } from "./loop_monitor.ts";
import { newRing, type RingMessage, RingReader, RingWriter } from "./ring.ts";
import { claimProblem, segmentEnd } from "./segment_claim.ts";
import {
  type FromSandbox,
  HANDOFF_KIND,
  type Owners,
  type SandboxSetup,
  type ToSandbox,
} from "./sandbox_thread.ts";

/** The handlers of the components that share one permission set: one sandbox runs them. */
export interface SandboxGroup {
  /** What they may touch. */
  readonly permissions: ComponentPermissions;
  /** Their mapping files. */
  readonly components: readonly string[];
  /** Their winning mapping entries with TypeScript targets. */
  readonly entries: readonly MappingEntry[];
}

/**
 * Groups a catalog's handlers by their components' permission sets. Entries whose targets are not
 * `module#Export` (Python paths) are left out: their steps answer `no_handler`.
 */
export function sandboxGroups(catalog: Catalog): SandboxGroup[] {
  const groups = new Map<
    string,
    { permissions: ComponentPermissions; components: string[]; entries: MappingEntry[] }
  >();
  for (const entry of catalog.mappings.values()) {
    if (typeof parseTarget(entry.target) === "string") continue;
    const permissions = componentPermissions(resolvePath(entry.file), catalog.permissions.get(entry.file));
    const key = permissionsKey(permissions);
    let g = groups.get(key);
    if (!g) groups.set(key, g = { permissions, components: [], entries: [] });
    if (!g.components.includes(entry.file)) g.components.push(entry.file);
    g.entries.push(entry);
  }
  return [...groups.values()];
}

/** The permissions a sandbox's Web Worker gets: its components' grants; never FFI. */
export function workerPermissions(p: ComponentPermissions): Deno.PermissionOptionsObject {
  const g = (x: Grant) => x === true ? true : x.length ? [...x] : false;
  return {
    read: g(p.read),
    write: g(p.write),
    net: g(p.net),
    env: g(p.env),
    run: g(p.run),
    ffi: false,
    sys: false,
    import: false,
  };
}

/** Options of {@linkcode SandboxPool.start}. */
export interface SandboxPoolOptions {
  /** The sandboxes' handlers (see {@linkcode sandboxGroups}). */
  readonly groups: readonly SandboxGroup[];
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Per-action handler timeouts, by lookup key. */
  readonly timeouts: ReadonlyMap<string, number>;
  /** Milliseconds a handler may run where `timeouts` sets none. */
  readonly handlerTimeout: number;
  /** The largest number of steps a request may run. */
  readonly stepLimit: number;
  /** `max_message_size`. */
  readonly maxMessageSize: number;
  /** A result of step `d` (kind code and frames, as a `RESULTS` batch record carries them). */
  readonly onResult: (d: number, kind: number, a: Uint8Array, b: Uint8Array, c: Uint8Array) => void;
  /** The results of one sandbox message have all been given: send them. */
  readonly onResultsEnd: () => void;
  /**
   * A handler blocked its sandbox running step `d` for `ms` (or, `why`, its sandbox broke the
   * protocol answering it): tell the Subject.
   */
  readonly onStuck: (d: number, ms: number, why?: string) => void;
  /** Steps that will never have a result here (their sandbox was terminated). */
  readonly onLost: (ds: readonly number[]) => void;
  /** A sandbox was terminated, to be started again. */
  readonly onRestart?: () => void;
  /** Handlers run. */
  readonly onSteps: (n: number) => void;
  /** A sandbox that was terminated could not start again: the worker cannot go on. */
  readonly onFatal: (message: string) => void;
  /**
   * Makes the reactor wait for events while any step runs in one of `pool`'s sandboxes (its results
   * come through shared memory, or as a message); returns what ends that: see
   * `Reactor.holdForEvents` and `SandboxPool.waitResults`.
   */
  readonly hold: (pool: SandboxPool) => () => void;
}

/** A mapping entry that no sandbox could load. */
export interface SandboxUnresolved {
  /** The entry. */
  readonly entry: MappingEntry;
  /** Why. */
  readonly reason: string;
}

const THREAD_URL = new URL("./sandbox_thread.ts", import.meta.url).href;
const GUARD_URL = new URL("./sandbox_guard.ts", import.meta.url).href;

/**
 * Bytes of each of a sandbox's two rings: a turn's batch at the bench's peak is under 100 KB; a
 * larger one goes as a message.
 */
const RING_BYTES = 256 * 1024;

/** Where a step sent to a sandbox starts its segment: its flow and position. */
interface SegmentStart {
  readonly flow: Flow;
  readonly pos: number;
  /** The request's id. */
  readonly id: string;
}

/** Whether a message from a sandbox thread has the shape `FromSandbox` says (its code may post anything). */
function wellFormed(m: unknown, ready: boolean): m is FromSandbox {
  if (typeof m !== "object" || m === null) return false;
  const type = (m as { type?: unknown }).type;
  if (ready) {
    const r = m as { batch?: unknown; steps?: unknown };
    return type === "results" && r.batch instanceof Uint8Array && Number.isInteger(r.steps);
  }
  if (type === "listening") return true;
  const r = m as { loaded?: unknown; unresolved?: unknown; monitor?: unknown };
  return type === "ready" && Array.isArray(r.loaded) && Array.isArray(r.unresolved) &&
    r.monitor instanceof SharedArrayBuffer;
}

/** One sandbox thread, restarted when it is terminated. */
class Sandbox {
  /**
   * Steps sent to it and not answered, with where their segments start (known where the worker
   * has more than one sandbox: its results are checked against it).
   */
  readonly pending = new Map<number, SegmentStart | undefined>();
  readonly #out = new BatchWriter(64 * 1024);
  readonly log: Logger = logger("sandbox");
  #thread?: Worker;
  #ready = false;
  #steps?: RingWriter;
  #results?: RingReader;
  slots?: Float64Array;

  constructor(
    readonly index: number,
    readonly group: SandboxGroup,
    readonly setup: Omit<SandboxSetup, "index" | "entries" | "owners" | "rings">,
    readonly onMessage: (s: Sandbox, m: FromSandbox) => void,
    readonly onCrash: (s: Sandbox, message: string) => void,
    /** It broke the protocol (`what`), answering step `d` (0: none known). */
    readonly onBroken: (s: Sandbox, what: string, d: number) => void,
  ) {}

  /** What the logs call it. */
  get name(): string {
    return `sandbox ${this.index} (${this.group.components.join(", ")}: ${
      formatPermissions(this.group.permissions)
    })`;
  }

  /** Starts the thread; resolves with its `ready` message. */
  start(owners?: Owners): Promise<Extract<FromSandbox, { type: "ready" }>> {
    const ready = Promise.withResolvers<Extract<FromSandbox, { type: "ready" }>>();
    // The handler modules are imported statically by the entry module: Deno loads a worker's
    // module graph without checking its read permissions, and a handler's own reads are checked.
    const modules = new Set<string>();
    for (const e of this.group.entries) {
      const ref = parseTarget(e.target);
      if (typeof ref !== "string") {
        modules.add(targetModuleUrl(ref.specifier, new URL(this.setup.fileUrls[e.file])));
      }
    }
    const entry = [
      // First: it takes what the sandbox needs before any handler module runs.
      `import ${JSON.stringify(GUARD_URL)};`,
      `import { serveSandbox } from ${JSON.stringify(THREAD_URL)};`,
      ...[...modules].map((u) => `import ${JSON.stringify(u)};`),
      "serveSandbox();",
    ].join("\n");
    const thread = new Worker(`data:application/javascript,${encodeURIComponent(entry)}`, {
      type: "module",
      deno: { permissions: workerPermissions(this.group.permissions) },
    } as WorkerOptions);
    this.#thread = thread;
    this.#ready = false;
    const rings = { steps: newRing(RING_BYTES), results: newRing(RING_BYTES) };
    this.#steps = new RingWriter(rings.steps);
    const results = this.#results = new RingReader(rings.results);
    const setup: SandboxSetup = {
      ...this.setup,
      index: this.index,
      entries: this.group.entries,
      owners,
      rings,
    };
    let listening = false;
    thread.onmessage = (e: MessageEvent<unknown>) => {
      const m = e.data;
      // (A second `listening` is a handler module's: it would have the set-up sent twice.)
      if (!wellFormed(m, this.#ready) || (m.type === "listening" && listening)) {
        const what = `a message that is not the sandbox protocol's (${describe(m)})`;
        if (this.#ready) return this.onBroken(this, what, 0);
        return ready.reject(new Error(`${this.name} did not start: it posted ${what}`));
      }
      if (m.type === "listening") {
        listening = true;
        thread.postMessage({ type: "init", setup } satisfies ToSandbox);
      } else if (m.type === "ready") {
        this.slots = new Float64Array(m.monitor);
        this.#ready = true;
        ready.resolve(m);
        void results.serve(this.#onResults, this.#onCorrupt);
        this.flush();
      } else this.onMessage(this, m);
    };
    thread.onerror = (e) => {
      e.preventDefault();
      const message = e.message ?? String(e);
      if (!this.#ready) {
        // A module that does not load (a syntax error in an imported file, say) comes with a code
        // frame over several lines: say it on one, naming where (as handler loading elsewhere does).
        const error = new Error(message);
        // A module that throws while it is evaluated: the event names where (the message does not).
        error.stack = e.filename ? `${message}\n    at ${e.filename}:${e.lineno}:${e.colno}` : message;
        const advice = grantAdvice(message, this.group.components);
        const where = e.filename ? ` (at ${e.filename}:${e.lineno}:${e.colno})` : "";
        ready.reject(
          new Error(
            `${this.name} did not start: ${advice ? advice + where : describeImportError(error)}`,
          ),
        );
      } else this.onCrash(this, message);
    };
    return ready.promise;
  }

  readonly #onResults = (r: RingMessage) =>
    this.onMessage(this, { type: "results", batch: r.bytes, steps: r.tag });
  readonly #onCorrupt = (e: RangeError) => this.onBroken(this, e.message, 0);

  /**
   * Waits on this thread, up to `ms`, for results in the ring, and handles those there are:
   * whether any came.
   */
  waitResults(ms: number): boolean {
    const r = this.#results;
    if (!this.#ready || !r || !r.waitSync(ms)) return false;
    return r.drain(this.#onResults, this.#onCorrupt) > 0;
  }

  /** Gives it its owners table. */
  owners(owners: Owners): void {
    this.#thread?.postMessage({ type: "owners", owners } satisfies ToSandbox);
  }

  /** Queues a step message (its segment starting at `start`) for the next {@linkcode Sandbox.flush}. */
  add(
    d: number,
    topic: Uint8Array,
    header: Uint8Array,
    values: Uint8Array,
    start: SegmentStart | undefined,
  ): void {
    this.pending.set(d, start);
    this.#out.add(d, 0, topic, header, values);
  }

  /** Sends the queued step messages as one message (once the thread is ready). */
  flush(): void {
    if (!this.#ready || !this.#out.count) return;
    const batch = this.#out.take();
    if (this.#steps!.write(batch)) return;
    const copy = batch.slice();
    this.#thread!.postMessage(copy, [copy.buffer]);
  }

  /**
   * Forgets the steps it holds, and drops those not yet sent to the thread: results and
   * hand-offs of the others are ignored when they come. Returns them.
   */
  abandon(): number[] {
    this.#out.take();
    const gone = [...this.pending.keys()];
    this.pending.clear();
    return gone;
  }

  /** Ends the thread at once; returns the steps it held. */
  terminate(): number[] {
    this.#thread?.terminate();
    this.#thread = undefined;
    this.#ready = false;
    // Ends its results' reader (and refuses further writes to its steps).
    this.#steps?.close();
    this.#results?.close();
    this.#out.take();
    const lost = [...this.pending.keys()];
    this.pending.clear();
    return lost;
  }
}

/** A worker process's sandboxes. */
export class SandboxPool {
  readonly #o: SandboxPoolOptions;
  readonly #sandboxes: Sandbox[] = [];
  #owners: Owners = {};
  #watch?: ReturnType<typeof setInterval>;
  #pending = 0;
  /** A wait for results on the worker's thread found none (see `waitResults`). */
  #waitMissed = false;
  #release?: () => void;
  #closed = false;
  readonly #route = new TopicMemo<string | undefined>((t) => parseTopic(t)?.flow);
  /** The longest a handler may run, of `handlerTimeout` and every `[actiontimeout]`. */
  #longestTimeout = 0;
  /** Step topics, to check a hand-off's against. */
  readonly #topics = new TopicCache();

  private constructor(options: SandboxPoolOptions) {
    this.#o = options;
  }

  /**
   * Starts one sandbox per group, waits until each has imported its handlers, and works out which
   * sandbox runs each step. Returns the pool and the entries that did not load.
   */
  static async start(
    options: SandboxPoolOptions,
  ): Promise<{ pool: SandboxPool; unresolved: SandboxUnresolved[] }> {
    const pool = new SandboxPool(options);
    pool.#longestTimeout = Math.max(options.handlerTimeout, ...options.timeouts.values());
    const fileUrls: Record<string, string> = {};
    for (const g of options.groups) {
      for (const e of g.entries) fileUrls[e.file] ??= pathToFileURL(resolvePath(e.file)).href;
    }
    const setup = {
      fileUrls,
      flows: [...options.flows.values()],
      timeouts: [...options.timeouts],
      handlerTimeout: options.handlerTimeout,
      stepLimit: options.stepLimit,
      maxMessageSize: options.maxMessageSize,
      logLevel: Deno.env.get("ZMANAGER_LOG") ?? "info",
    };
    options.groups.forEach((g, i) =>
      pool.#sandboxes.push(
        new Sandbox(
          i,
          g,
          setup,
          (s, m) => pool.#onMessage(s, m),
          (s, why) => pool.#crashed(s, why),
          (s, what, d) => pool.#broken(s, what, d),
        ),
      )
    );
    let readies;
    try {
      readies = await Promise.all(pool.#sandboxes.map((s) => s.start()));
    } catch (e) {
      pool.close();
      throw e;
    }
    // Which sandbox runs each step: the seven rules over every handler that loaded.
    const owner = new Map<string, number>();
    const unresolved: SandboxUnresolved[] = [];
    // From each sandbox's own entries only: its `ready` is written after its handler modules ran,
    // and one that listed another component's key took that component's steps (an outside
    // re-attack).
    readies.forEach((r, i) => {
      const own = new Map(options.groups[i].entries.map((e) => [e.lookup, e]));
      for (const l of r.loaded) if (own.has(l)) owner.set(l, i);
      for (const u of r.unresolved) {
        const entry = own.get(u.lookup);
        if (entry) unresolved.push({ entry, reason: String(u.reason) });
      }
    });
    const owners: Record<string, (number | null)[]> = {};
    for (const f of options.flows.values()) {
      owners[f.name] = f.steps.map((s) => resolveKey(owner, s.key)?.entry ?? null);
    }
    pool.#owners = owners;
    for (const s of pool.#sandboxes) s.owners(owners);
    const beat = loopBeatMs(options.handlerTimeout);
    pool.#watch = setInterval(() => pool.#checkStuck(), beat);
    for (const s of pool.#sandboxes) {
      s.log.info("Handlers of {components} run in a sandbox: {permissions}", {
        components: s.group.components.join(", "),
        permissions: formatPermissions(s.group.permissions),
      });
    }
    return { pool, unresolved };
  }

  /**
   * While steps run in one sandbox only: waits on this thread up to `ms` for its results and
   * handles them (see `Reactor.waitForEventsWith`). Returns whether any came.
   */
  waitResults(ms: number): boolean {
    if (this.#pending === 0 || this.#waitMissed) return false;
    let busy: Sandbox | undefined;
    for (const s of this.#sandboxes) {
      if (s.pending.size === 0) continue;
      if (busy) return false;
      busy = s;
    }
    if (!busy) return false;
    // A wait that found nothing (a slow handler): none more until results come another way, so
    // that messages do not wait behind each.
    if (!busy.waitResults(ms)) this.#waitMissed = true;
    return !this.#waitMissed;
  }

  /** How many sandboxes run. */
  get size(): number {
    return this.#sandboxes.length;
  }

  /** Queues a step message for the sandbox that runs its first handler. */
  send(d: number, topic: Uint8Array, header: Uint8Array, values: Uint8Array): void {
    if (this.#sandboxes.length === 1) this.#sandboxes[0].add(d, topic, header, values, undefined);
    else {
      const start = this.#start(topic, header);
      this.#sandboxes[this.#firstOwner(start)].add(d, topic, header, values, start);
    }
    if (this.#pending++ === 0) this.#release = this.#o.hold(this);
  }

  /** Where a step message's segment starts (`undefined`: a step the sandbox will answer as bad). */
  #start(topic: Uint8Array, header: Uint8Array): SegmentStart | undefined {
    const name = this.#route.get(text(topic));
    const flow = name === undefined ? undefined : this.#o.flows.get(name);
    const h = decodeHeader(header);
    if (flow === undefined || typeof h === "string" || h.pos === undefined) return undefined;
    return { flow, pos: h.pos, id: h.id };
  }

  /** The sandbox whose handler a step message runs first (any, where none maps it: it answers). */
  #firstOwner(start: SegmentStart | undefined): number {
    if (!start) return 0;
    const o = this.#owners[start.flow.name];
    return o?.[start.pos] ?? o?.[start.pos + 1] ?? 0;
  }

  /**
   * Gives up every step the sandboxes hold (the worker reported a blocked handler, and the Subject
   * takes back all its steps on that report): steps not yet sent to a sandbox are dropped, and
   * the results and hand-offs of those running are ignored when they come, so that none goes on
   * here (a poison step handed to a restarted sandbox would block it again, uncounted). Returns
   * their dispatch numbers.
   */
  abandon(): number[] {
    const gone = this.#sandboxes.flatMap((s) => s.abandon());
    if (gone.length) this.#done(gone.length);
    return gone;
  }

  /** Sends every sandbox its queued steps. */
  flush(): void {
    for (const s of this.#sandboxes) s.flush();
  }

  /**
   * A sandbox's results. Its handlers' code can write anything there, so each record is checked:
   * it must answer a step this sandbox holds, with a kind the protocol has, and, where the
   * worker has several sandboxes, end where the segment this sandbox could run from that step
   * ends (`segment_claim.ts`): a sandbox can neither run another's handlers nor skip them. One
   * that does not is terminated and started again, the step it answered counted against its
   * request as a stuck handler would be.
   */
  #onMessage(s: Sandbox, m: FromSandbox): void {
    if (m.type !== "results") return;
    // (A count its handlers' code could have written: only for the stats, and never negative.)
    if (Number.isInteger(m.steps) && m.steps > 0) this.#o.onSteps(m.steps);
    const view = BatchView.of(m.batch);
    if (!view) return this.#broken(s, "a results batch that is not one", 0);
    let handedOff = false;
    for (let i = 0; i < view.count; i++) {
      const d = view.tag(i);
      if (!s.pending.has(d)) continue; // a sandbox since terminated and restarted: not ours
      const start = s.pending.get(d);
      const kind = view.kind(i);
      const [a, b, c] = view.frames(i);
      const why = this.#claimProblem(s, start, view, i, a, b, c);
      if (why !== undefined) {
        if (handedOff) this.flush();
        this.#o.onResultsEnd();
        return this.#broken(s, why, d);
      }
      s.pending.delete(d);
      if (kind >= HANDOFF_KIND) {
        const to = this.#sandboxes[kind - HANDOFF_KIND];
        to.add(d, a, b, c, start && { flow: start.flow, pos: headerPos(b)!, id: start.id });
        handedOff = true;
        continue;
      }
      this.#o.onResult(d, kind, a, b, c);
      this.#done(1);
    }
    if (handedOff) this.flush();
    this.#o.onResultsEnd();
  }

  /**
   * Why result `i` of `view` (its frames given) of sandbox `s`, for a step starting at `start`,
   * is not one it can give.
   */
  #claimProblem(
    s: Sandbox,
    start: SegmentStart | undefined,
    view: BatchView,
    i: number,
    topic: Uint8Array,
    header: Uint8Array,
    values: Uint8Array,
  ): string | undefined {
    // What the sandbox's encoder makes: values within max_message_size, a topic and header far
    // smaller (a larger one was dropped by the Subject, and its step sent again, uncounted).
    if (values.byteLength > this.#o.maxMessageSize || topic.byteLength + header.byteLength > 65_536) {
      const bytes = values.byteLength + topic.byteLength + header.byteLength;
      return `a result of ${bytes} bytes, over max_message_size`;
    }
    const kind = view.kind(i);
    if (kind >= HANDOFF_KIND) {
      const to = kind - HANDOFF_KIND;
      if (to >= this.#sandboxes.length || to === s.index) {
        return `a hand-off to sandbox ${to}, which is not another of this worker's`;
      }
      if (!start) return "a hand-off of a step it could not run";
      const h = decodeHeader(header);
      const pos = typeof h === "string" || !Number.isInteger(h.pos) ? undefined : h.pos;
      if (typeof h === "string" || pos === undefined) return "a hand-off without a step position";
      const end = segmentEnd(start.flow, this.#owners[start.flow.name] ?? [], start.pos, s.index);
      const why = claimProblem(end, "handoff", pos, to);
      if (why) return `${why} (step ${start.pos} of ${start.flow.name})`;
      // The hand-off goes on past the Subject: it must be this request's, on this flow's topic.
      if (h.id !== start.id) {
        return `a hand-off for request "${
          String(h.id).slice(0, 80)
        }", not "${start.id}" (step ${start.pos} of ${start.flow.name})`;
      }
      if (!view.frameIs(i, 0, this.#topics.step(start.flow, pos), true)) {
        return `a hand-off whose topic is not step ${pos} of ${start.flow.name}`;
      }
      return undefined;
    }
    const name = KIND_NAMES[kind];
    if (name !== "done" && name !== "publish" && name !== "pause" && name !== "error") {
      return `a result of kind ${kind}, which the protocol does not have`;
    }
    if (!start || name === "error") return undefined;
    const end = segmentEnd(start.flow, this.#owners[start.flow.name] ?? [], start.pos, s.index);
    if (end.kind === name && name === "done") return undefined; // the common case: no header read
    const why = claimProblem(end, name, name === "done" ? undefined : headerPos(header));
    return why && `${why} (step ${start.pos} of ${start.flow.name})`;
  }

  /**
   * Sandbox `s` broke the protocol (`what`), answering step `d` (0: none known): it is terminated
   * and started again; the Subject is told that step failed its delivery (as for a handler that
   * blocked its sandbox), and the steps it held go to other workers.
   */
  #broken(s: Sandbox, what: string, d: number): void {
    s.log.error("{sandbox} sent {what}; terminating it", { sandbox: s.name, what });
    // A message that answers no step is charged to the step whose handler runs, else to the one
    // the sandbox has held longest (the first in `pending`), so that each restart charges one:
    // uncharged, a handler that posts one at each run had its steps sent again for ever (an
    // outside re-attack: it waited for a second step, so that none was the only one held).
    if (!d) {
      const running = s.slots?.[SLOT.STEP] ?? 0;
      d = running && s.pending.has(running) ? running : s.pending.keys().next().value ?? 0;
    }
    this.#restart(s, d, 0, `its sandbox (${s.group.components.join(", ")}) sent ${what}`);
  }

  #done(n: number): void {
    this.#waitMissed = false;
    this.#pending -= n;
    if (this.#pending === 0) {
      this.#release?.();
      this.#release = undefined;
    }
  }

  /**
   * A handler that has run synchronously past its timeout blocks its sandbox: the Subject is told
   * which step (it takes back every step of this worker and counts a failed delivery against that
   * one), and the sandbox is terminated and started again. A loop blocked past the handler timeout
   * with no handler call marked (an async handler's continuation that never yields) has no step
   * to name: its sandbox's steps are given up, and the Subject sends them again.
   */
  #checkStuck(): void {
    const now = Date.now();
    for (const s of this.#sandboxes) {
      const slots = s.slots;
      if (!slots || !s.pending.size) continue;
      const d = slots[SLOT.STEP];
      const since = now - slots[SLOT.SINCE];
      // (The limit is the sandbox's to say, and its handler code can change what it says: never
      // past the longest the configuration gives.)
      const limit = Math.min(slots[SLOT.LIMIT] || this.#o.handlerTimeout, this.#longestTimeout);
      if (d && since >= limit) {
        s.log.error("{sandbox}: the handler of step {d} has blocked it for {ms} ms; terminating it", {
          sandbox: s.name,
          d,
          ms: since,
        });
        this.#restart(s, d, since);
      } else if (!d && now - slots[SLOT.BEAT] >= this.#o.handlerTimeout) {
        s.log.error("{sandbox}: its event loop has been blocked for {ms} ms; terminating it", {
          sandbox: s.name,
          ms: now - slots[SLOT.BEAT],
        });
        this.#restart(s, 0, 0);
      }
    }
  }

  #crashed(s: Sandbox, why: string): void {
    s.log.error("{sandbox} failed: {why}; starting it again", { sandbox: s.name, why });
    this.#restart(s, 0, 0);
  }

  #restart(s: Sandbox, d: number, ms: number, why?: string): void {
    s.slots = undefined;
    this.#o.onRestart?.();
    const lost = s.terminate();
    if (d && lost.includes(d)) this.#o.onStuck(d, Math.round(ms), why);
    if (lost.length) {
      this.#o.onLost(lost);
      this.#done(lost.length);
    }
    if (this.#closed) return;
    s.start(this.#owners).catch((e) =>
      this.#o.onFatal(`${s.name} could not start again: ${(e as Error).message}`)
    );
  }

  /** Terminates every sandbox. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#watch);
    for (const s of this.#sandboxes) s.terminate();
    this.#release?.();
    this.#release = undefined;
  }
}

/** The step position a header names, or `undefined`. */
function headerPos(header: Uint8Array): number | undefined {
  const h = decodeHeader(header);
  return typeof h === "string" || !Number.isInteger(h.pos) ? undefined : h.pos;
}

/** A short description of what a sandbox posted, for the log. */
function describe(m: unknown): string {
  if (m === null || typeof m !== "object") return String(m).slice(0, 40);
  const type = (m as { type?: unknown }).type;
  return typeof type === "string" ? `type "${type.slice(0, 40)}"` : "an object without a type";
}
