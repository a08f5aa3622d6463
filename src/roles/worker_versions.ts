/**
 * A worker's configuration versions (PROTOCOL.md, _Reloading_): the Subject sends each version's
 * files (`CONFIG`); the worker checks them, imports their handler modules (in new sandbox threads
 * when sandboxed: a new thread imports every module afresh; on its own thread the target modules
 * are imported again under a `?zmanager_version=N-I` URL, I naming the Subject incarnation) and
 * answers `LOADED`, or why not. A step runs with the version its `STEPS` record names (the record's
 * kind byte is the version's slot); a version the Subject retires is closed.
 *
 * @module
 */

import { buildCatalog, type Catalog, hasErrors } from "../topic/catalog.ts";
import { formatDiagnostic } from "../topic/diagnostics.ts";
import { decodeObject, type LoadedMessage } from "../wire/control.ts";
import { TIMED_OUT, withTimeout } from "../_async.ts";
import type { logger } from "../log.ts";
import { versionSlot } from "./config_versions.ts";
import type { HandlerCalls } from "./handler_calls.ts";
import { sandboxGroups, SandboxPool, type SandboxPoolOptions } from "./sandbox.ts";
import type { StepRunner } from "./step_runner.ts";
import { HandlerRegistry, parseTarget } from "../handler.ts";
import type { Flow } from "../topic/flow_file.ts";
import { pathToFileUrl } from "../load.ts";

/** What runs a version's steps: a runner on the worker's thread, or sandbox threads. */
export interface Runtime {
  /** Its version (0: the worker's own files, before the Subject named them). */
  readonly version: number;
  /** Runs steps on this thread (`--no-sandbox`). */
  readonly runner?: StepRunner;
  /** Its handler calls on this thread, stopped when it is closed. */
  readonly calls?: HandlerCalls;
  /** Runs steps in sandboxes. */
  readonly pool?: SandboxPool;
}

/** How a worker runs a version's steps: in sandboxes started so, or on its thread. */
export interface RuntimeMaker {
  /** How its sandboxes start, when handlers run in sandboxes. */
  readonly sandbox?: Omit<SandboxPoolOptions, "groups">;
  /** A runner on the worker's thread for these handlers, flows and per-action timeouts. */
  readonly onThread: (
    handlers: HandlerRegistry,
    flows: ReadonlyMap<string, Flow>,
    timeouts: ReadonlyMap<string, number>,
  ) => { readonly calls: HandlerCalls; readonly runner: StepRunner };
}

/**
 * The runtime of configuration `version` made of `catalog`: its handler modules imported in new
 * sandboxes, or on the worker's thread under URLs tagged `instance` (one per version and Subject
 * incarnation: Deno keeps a module per URL). A string says why it could not be: a
 * `module#Export` target that does not load (Python paths answer `no_handler`, as at start).
 */
export async function makeRuntime(
  catalog: Catalog,
  version: number,
  maker: RuntimeMaker,
  instance: string = String(version),
): Promise<Runtime | string> {
  const timeouts = new Map([...catalog.timeouts].map(([lookup, t]) => [lookup, t.ms]));
  const failed = (u: readonly { entry: { file: string; line: number; target: string }; reason: string }[]) =>
    u.filter((x) => typeof parseTarget(x.entry.target) !== "string")
      .map((x) => `${x.entry.file}:${x.entry.line}: ${x.entry.target}: ${x.reason}`).join("; ");
  if (maker.sandbox) {
    const { pool, unresolved } = await SandboxPool.start({
      ...maker.sandbox,
      groups: sandboxGroups(catalog),
      flows: catalog.flows,
      timeouts,
    });
    const bad = failed(unresolved);
    if (bad) pool.close();
    return bad || { version, pool };
  }
  const handlers = new HandlerRegistry();
  const bad = failed(await handlers.loadEntries(catalog.mappings.values(), pathToFileUrl, instance));
  return bad || { version, ...maker.onThread(handlers, catalog.flows, timeouts) };
}

/** Options of {@linkcode WorkerVersions}. */
export interface WorkerVersionsOptions {
  /** The runtime of the worker's own files. */
  readonly base: Runtime;
  /** How a version's runtime is made (see {@linkcode makeRuntime}). */
  readonly maker: RuntimeMaker;
  /** With the files' `[permissions]`: let components ask to run programs or for any network access. */
  readonly allowComponentPermissions?: boolean;
  /** Milliseconds a version's handler modules may take to import. */
  readonly importTimeout: number;
  /** Milliseconds to keep a replaced Subject incarnation's versions for the steps still running. */
  readonly closeAfter: number;
  /** The worker's logger. */
  readonly log: ReturnType<typeof logger>;
}

/** The configuration versions a worker holds. */
export class WorkerVersions {
  readonly #o: WorkerVersionsOptions;
  #base: Runtime | undefined;
  /** Version slot → runtime. */
  #slots = new Map<number, Runtime>();
  /** Loads under way, by version, of the current incarnation (see `#newIncarnation`). */
  #loading = new Map<number, Promise<LoadedMessage>>();
  /** Versions retired while they were loading (their rollout failed): closed once loaded. */
  #retiredWhileLoading = new Set<number>();
  #incarnation = "";

  /** The versions of a worker whose own files run as `options.base`. */
  constructor(options: WorkerVersionsOptions) {
    this.#o = options;
    this.#base = options.base;
  }

  /**
   * The runtime of a `STEPS` record's kind byte (0: the newest version). A worker that was never
   * sent a version (it does not tell the Subject its `base`) runs every step on its own files.
   */
  forSlot(slot: number): Runtime | undefined {
    if (slot !== 0 && this.#slots.size) return this.#slots.get(slot);
    let newest: Runtime | undefined;
    for (const r of this.#slots.values()) if (!newest || r.version > newest.version) newest = r;
    return newest ?? this.#base;
  }

  /** The versions held, oldest first (0: only the worker's own files). */
  versions(): number[] {
    const vs = [...this.#slots.values()].map((r) => r.version).sort((a, b) => a - b);
    return vs.length ? vs : [0];
  }

  /** Every runtime held (for closing the worker). */
  all(): Runtime[] {
    const out = new Set([...this.#slots.values()]);
    if (this.#base) out.add(this.#base);
    return [...out];
  }

  /** A `CONFIG` message: loads its version; resolves with the `LOADED` answer. */
  config(body: Uint8Array | undefined): Promise<LoadedMessage> {
    const m = decodeObject(body);
    const version = Number(m?.version);
    const incarnation = typeof m?.incarnation === "string" ? m.incarnation : "";
    if (!Number.isInteger(version) || version < 1) {
      return Promise.resolve({ version: 0, error: "no version" });
    }
    if (incarnation !== this.#incarnation) this.#newIncarnation(incarnation);
    const slot = versionSlot(version);
    if (this.#slots.get(slot)?.version === version) return Promise.resolve({ version });
    if (!Array.isArray(m!.files)) {
      // The Subject found its files to be this worker's own.
      if (!this.#base) return Promise.resolve({ version, error: "this worker's own files are closed" });
      this.#slots.set(slot, { ...this.#base, version });
      return Promise.resolve({ version });
    }
    let p = this.#loading.get(version);
    if (!p) {
      const loading = this.#loading;
      p = this.#load(version, m!.files as unknown[], incarnation).finally(() => loading.delete(version));
      loading.set(version, p);
    }
    return p;
  }

  async #load(version: number, files: unknown[], incarnation: string): Promise<LoadedMessage> {
    const sources = files.filter((f): f is { file: string; text: string } =>
      typeof (f as { file?: unknown })?.file === "string" &&
      typeof (f as { text?: unknown })?.text === "string"
    );
    const catalog = buildCatalog(sources, {
      strict: true,
      allowComponentPermissions: this.#o.allowComponentPermissions,
    });
    if (hasErrors(catalog.diagnostics)) {
      const first = catalog.diagnostics.find((d) => d.severity === "error")!;
      return { version, error: formatDiagnostic(first) };
    }
    // A restarted Subject numbers from 1 again: its version N is another module instance.
    const instance = incarnation ? `${version}-${incarnation.slice(0, 8)}` : String(version);
    const making = makeRuntime(catalog, version, this.#o.maker, instance).catch((e) =>
      `cannot load: ${(e as Error).message}`
    );
    const made = await withTimeout(making, this.#o.importTimeout);
    if (made === TIMED_OUT) {
      void making.then((r) => typeof r !== "string" && this.#close(r));
      return { version, error: `its handler modules did not import within ${this.#o.importTimeout} ms` };
    }
    if (typeof made === "string") return { version, error: made };
    if (incarnation !== this.#incarnation) {
      // The Subject that sent it died while it loaded: its successor numbers afresh, and a
      // version of the same number from it has other files. Held, this one would have been
      // taken for that one (an outside attack: a reload reported success, and the workers ran
      // the code of a rollout that had died with its Subject).
      this.#close(made);
      return { version, error: "its Subject restarted while it loaded" };
    }
    if (this.#retiredWhileLoading.delete(version)) {
      this.#close(made);
      return { version, error: "retired while it loaded" };
    }
    const slot = versionSlot(version);
    const before = this.#slots.get(slot);
    if (before && before !== made) this.#close(before);
    this.#slots.set(slot, made);
    this.#o.log.info("Loaded configuration version {version}", { version });
    return { version };
  }

  /** A `RETIRE` message: the version is closed. */
  retire(body: Uint8Array | undefined): void {
    const version = Number(decodeObject(body)?.version);
    const slot = versionSlot(version);
    const r = this.#slots.get(slot);
    if (this.#loading.has(version)) this.#retiredWhileLoading.add(version);
    if (!r || r.version !== version) return;
    this.#slots.delete(slot);
    this.#close(r);
  }

  /** Closes a runtime no slot holds any more (the worker's own files', once nothing uses them). */
  #close(r: Runtime): void {
    for (const other of this.#slots.values()) if (other.runner === r.runner && other.pool === r.pool) return;
    if (this.#base && this.#base.runner === r.runner && this.#base.pool === r.pool) this.#base = undefined;
    r.calls?.stop();
    r.pool?.close();
  }

  /** A new Subject incarnation numbers versions anew: the old ones close once their steps have had time. */
  #newIncarnation(incarnation: string): void {
    const old = [...this.#slots.values()];
    this.#slots = new Map();
    this.#incarnation = incarnation;
    // Loads of the old numbering still under way end unheld (see `#load`); the new one's own
    // load of a version of the same number must not share them.
    this.#loading = new Map();
    this.#retiredWhileLoading = new Set();
    if (!old.length) return;
    const t = setTimeout(() => {
      for (const r of old) this.#close(r);
    }, this.#o.closeAfter);
    Deno.unrefTimer(t);
  }
}
