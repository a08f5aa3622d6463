/**
 * Process mains of the roles, as the CLI runs them: load files, start a role, write its
 * counters to the runtime directory, and stop gracefully on SIGINT or SIGTERM. `start`
 * (`start.ts`) supervises one process per role and restarts any that dies.
 *
 * @module
 */

import { buildCatalog, type Catalog, hasErrors, type SourceFile } from "../topic/catalog.ts";
import type { Config } from "../config.ts";
import { ConfigError, ensureRuntimeDir } from "../config.ts";
import { formatDiagnostic } from "../topic/diagnostics.ts";
import { HandlerRegistry, parseTarget, type UnresolvedTarget } from "../handler.ts";
import { checkHandlerTargets } from "./handler_check.ts";
import { loadFiles, loadHandlers, readSources } from "../load.ts";
import { sourcesHash } from "../roles/config_versions.ts";
import { logger } from "../log.ts";
import { IntegrationManager } from "../roles/integration_manager.ts";
import { Subject } from "../roles/subject.ts";
import { Worker } from "../roles/worker.ts";
import { sandboxGroups } from "../roles/sandbox.ts";
import { publishMetrics } from "../roles/metrics.ts";
import { type Security, SecurityError, securityOrError, securityStats } from "../roles/security.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { PausedStore } from "../roles/paused_store.ts";
import { lockFile, type RuntimeLock } from "./supervisor.ts";
import type { CurveClientKeys } from "../zmq/curve.ts";

/** Creates and checks the runtime directory (see `ensureRuntimeDir`); prints why not and returns false. */
export async function runtimeDirOk(config: Config): Promise<boolean> {
  try {
    await ensureRuntimeDir(config);
    return true;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`error: ${e.message}`);
    return false;
  }
}

/** Starts a role; a {@linkcode SecurityError} (a tcp endpoint without its allowlist) is printed, `null` returned. */
async function started<T>(start: () => Promise<T>): Promise<T | null> {
  try {
    return await start();
  } catch (e) {
    if (e instanceof SecurityError) {
      console.error(`error: ${e.message}`);
      return null;
    }
    throw e;
  }
}

/** The bundled example component, loaded by `start` when no files are given. */
export const EXAMPLE_FILES: readonly string[] = [
  new URL("../../examples/hello/flows.ini", import.meta.url),
  new URL("../../examples/hello/action_mapping.ini", import.meta.url),
].map((u) => decodeURIComponent(u.pathname));

/** The file in the runtime directory that holds the Subject's reload key (`cli.ts reload` reads it). */
export const RELOAD_KEY_FILE = "reload.key";

/** Makes a new reload key and writes it to {@linkcode RELOAD_KEY_FILE} (mode 0600); returns it. */
async function newReloadKey(config: Config): Promise<string> {
  const key = Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const file = `${config.runtime_dir}/${RELOAD_KEY_FILE}`;
  await Deno.writeTextFile(`${file}.tmp`, key, { mode: 0o600 });
  await Deno.rename(`${file}.tmp`, file);
  return key;
}

/**
 * Whether this Subject may use `async_store`: it takes the file's lock (`FILE.lock`, held until
 * the process ends), so that two deployments never share one (the second would read back and
 * forget the first's kept finals, and resume its paused flows), and the file opens as a SQLite
 * database. Says what is wrong, naming the file and the fix, when not.
 */
/** Locks this process holds until it ends (the files stay open). */
const heldLocks: RuntimeLock[] = [];
async function storeOk(config: Config): Promise<boolean> {
  const path = config.async_store;
  if (path === ":memory:") return true;
  try {
    // A Subject of this deployment may still be draining (its `start` was killed and another
    // started): wait for it to let go, as long as a drain may take.
    const until = performance.now() + config.handler_timeout + 10_000;
    let lock = lockFile(`${path}.lock`);
    while ("heldBy" in lock && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      lock = lockFile(`${path}.lock`);
    }
    if ("heldBy" in lock) {
      console.error(
        `error: async_store ${path} is in use by another Subject (pid ${
          lock.heldBy ?? "unknown"
        }, ${path}.lock); give each deployment its own --async-store`,
      );
      return false;
    }
    heldLocks.push(lock);
    // A lock another program holds on the database itself (a sqlite3 shell, a backup) goes away:
    // wait for it as long, saying so once.
    for (let said = false;; said = true) {
      try {
        new PausedStore(path).close();
        return true;
      } catch (e) {
        if (!isLocked(e)) throw e;
        const left = until - performance.now();
        if (left <= 0) {
          console.error(
            `error: async_store ${path} stays locked by another program (a sqlite3 shell, a backup?), not a ` +
              `Subject (none holds ${path}.lock); let it go, then start again`,
          );
          return false;
        }
        if (!said) {
          logger("subject").warn(
            "async_store {path} is locked by another program (not a Subject): waiting up to {s} s for it",
            { path, s: Math.ceil(left / 1000) },
          );
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } catch (e) {
    console.error(
      `error: async_store ${path}: ${
        (e as Error).message
      }; move the file away (its paused flows and kept finals go with it) or give another --async-store`,
    );
    return false;
  }
}

/** Whether `e` is SQLite's "database is locked" (`SQLITE_BUSY`). */
function isLocked(e: unknown): boolean {
  return (e as { errcode?: number }).errcode === 5 || /database is locked/.test((e as Error).message);
}

/**
 * The file in the runtime directory that keeps the files of the configuration version a reload
 * made current, so that a restarted Subject goes on with it (`start` removes it when it starts).
 */
export const RELOADED_FILE = "reloaded.json";

/** Writes {@linkcode RELOADED_FILE} (mode 0600). */
function writeReloaded(config: Config, sources: readonly SourceFile[]): void {
  const file = `${config.runtime_dir}/${RELOADED_FILE}`;
  try {
    Deno.writeTextFileSync(`${file}.tmp`, JSON.stringify(sources), { mode: 0o600 });
    Deno.renameSync(`${file}.tmp`, file);
  } catch (e) {
    logger("subject").warn("Could not keep the reloaded files in {file}: {message}", {
      file,
      message: (e as Error).message,
    });
  }
}

/** The files of {@linkcode RELOADED_FILE} and their catalog, if a reload left them (and they load). */
async function readReloaded(
  config: Config,
  strict: boolean,
  allowComponentPermissions: boolean,
): Promise<{ sources: SourceFile[]; catalog: Catalog } | undefined> {
  let sources: SourceFile[];
  try {
    sources = JSON.parse(await Deno.readTextFile(`${config.runtime_dir}/${RELOADED_FILE}`));
  } catch {
    return undefined;
  }
  const catalog = buildCatalog(sources, { strict, allowComponentPermissions });
  if (hasErrors(catalog.diagnostics)) return undefined;
  logger("subject").info("Going on with the files of the last reload ({file})", { file: RELOADED_FILE });
  return { sources, catalog };
}

/** Loads files for a role; prints every error and returns `undefined` when any. */
export async function loadForRole(
  files: readonly string[],
  strict = false,
  allowComponentPermissions = false,
): Promise<Catalog | undefined> {
  const catalog = await loadFiles(files.length ? files : EXAMPLE_FILES, {
    strict,
    allowComponentPermissions,
  });
  for (const d of catalog.diagnostics) {
    if (d.severity === "error" || strict) console.error(formatDiagnostic(d));
  }
  if (hasErrors(catalog.diagnostics)) return undefined;
  return catalog;
}

function statsWriter(config: Config, role: string, snapshot: () => unknown): () => void {
  const dir = `${config.runtime_dir}/stats`;
  const file = `${dir}/${role}-${Deno.pid}.json`;
  // A failure is said once (and again once writing works again): `stats --local`, the reload's
  // rollout and `start`'s liveness check read these files.
  let failing = false;
  const write = (quiet = false) => {
    try {
      Deno.mkdirSync(dir, { recursive: true });
      const tmp = `${file}.tmp`;
      Deno.writeTextFileSync(
        tmp,
        JSON.stringify({ role, pid: Deno.pid, at: Date.now(), ...snapshot() as object }),
      );
      Deno.renameSync(tmp, file);
      if (failing) logger(role).info("Writing its counters to {file} again", { file });
      failing = false;
    } catch (e) {
      // (Quiet at shutdown: the runtime directory may be gone.)
      if (!failing && !quiet) {
        logger(role).warn("Cannot write its counters to {file}: {error}", {
          file,
          error: (e as Error).message,
        });
      }
      failing = true;
    }
  };
  write();
  const t = setInterval(write, 1000);
  return () => {
    clearInterval(t);
    write(true);
    try {
      Deno.removeSync(file);
    } catch { /* already gone */ }
  };
}

function onSignals(fn: (signal: string) => void): () => void {
  const handlers: [Deno.Signal, () => void][] = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((
    s,
  ) => [s, () => fn(s)]);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  return () => {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  };
}

/**
 * Resolves when the process should stop. A standalone role stops on SIGINT or SIGTERM. A role
 * run by `start` (`supervised`) stops when its standard input closes: the supervisor closes it
 * in shutdown order, and it closes by itself if the supervisor dies, so no role is orphaned.
 * Supervised roles ignore SIGINT and SIGTERM, which a terminal's Ctrl-C sends to the whole
 * process group: the supervisor alone decides the order (Subject first, IM last).
 */
export function waitForStop(supervised = false): Promise<string> {
  if (!supervised) {
    return new Promise((resolve) => {
      const off = onSignals((s) => {
        off();
        resolve(s);
      });
    });
  }
  onSignals(() => {/* the supervisor handles signals */});
  return (async () => {
    const buf = new Uint8Array(64);
    try {
      while ((await Deno.stdin.read(buf)) !== null) { /* keep reading until EOF */ }
    } catch { /* closed */ }
    return "supervisor";
  })();
}

/**
 * Keeps a started role running: writes its counters to the runtime directory and publishes them
 * (`metrics.ts`, with `curve` keys on tcp) until it is told to stop (see {@linkcode waitForStop}),
 * then runs `shutdown`. Returns the exit code. `alsoRuns`: the other roles the process runs,
 * whose counters are written and published the same way, each under its own name.
 */
export async function serveUntilStopped(
  config: Config,
  role: string,
  supervised: boolean,
  snapshot: () => unknown,
  shutdown: (signal: string) => Promise<void>,
  curve?: CurveClientKeys,
  alsoRuns: readonly RoleCounters[] = [],
): Promise<number> {
  const stops = [{ role, snapshot }, ...alsoRuns].flatMap(({ role, snapshot }) => [
    statsWriter(config, role, snapshot),
    // A worker's key may join the worker endpoint only: its metrics go there (`METRICS`).
    role === "worker"
      ? publishMetrics({ subject: config.subject_worker_address, via: "workers", curve, role, snapshot })
      : publishMetrics({ subject: config.subject_pull_address, curve, role, snapshot }),
  ]);
  await shutdown(await waitForStop(supervised));
  for (const stop of stops.reverse()) stop();
  return 0;
}

/** A role a process runs besides its own, with its counters (the IM in the Subject's process). */
export interface RoleCounters {
  /** The role's name in `stats` and the runtime directory. */
  readonly role: string;
  /** Its counters. */
  readonly snapshot: () => unknown;
}

/**
 * Starts the Integration Manager on the config's endpoints; in the Subject's process
 * (`integration_manager_in_subject`), on its `reactor`, the pull socket binding `local` too.
 */
function startIntegrationManager(
  config: Config,
  security: Security | undefined,
  shared?: { reactor: Reactor; local: string },
): Promise<IntegrationManager | null> {
  return started(() =>
    IntegrationManager.start({
      pullAddress: config.integration_manager_pull_address,
      pubAddress: config.integration_manager_pub_address,
      maxMessageSize: config.max_message_size,
      subscriberBuffer: config.subscriber_buffer,
      security,
      reactor: shared?.reactor,
      localPullAddress: shared?.local,
    })
  );
}

/** `integration-manager`: runs until SIGINT/SIGTERM. */
export async function runIntegrationManager(config: Config, supervised = false): Promise<number> {
  const security = await securityOrError(config);
  if (security === null) return 1;
  if (!await runtimeDirOk(config)) return 1;
  const im = await startIntegrationManager(config, security);
  if (!im) return 1;
  return await serveUntilStopped(
    config,
    "integration-manager",
    supervised,
    () => ({ ...im.stats(), ...securityStats() }),
    async (signal) => {
      logger("integration-manager").info("{signal}: stopping", { signal });
      await im.close();
    },
    security?.keys,
  );
}

/** `subject`: runs until SIGINT/SIGTERM, then drains. */
export async function runSubject(
  config: Config,
  files: readonly string[],
  strict = false,
  supervised = false,
  allowComponentPermissions = false,
): Promise<number> {
  // A Subject restarted by `start` goes on with the version its predecessor had rolled out.
  const reloaded = await readReloaded(config, strict, allowComponentPermissions);
  const catalog = reloaded?.catalog ?? await loadForRole(files, strict, allowComponentPermissions);
  if (!catalog) return 1;
  const security = await securityOrError(config);
  if (security === null) return 1;
  if (!await runtimeDirOk(config)) return 1;
  if (!await storeOk(config)) return 1;
  const reload = {
    key: await newReloadKey(config).catch((e) => {
      // (A full disk, say.) The Subject serves; `reload` is refused until it is started again.
      logger("subject").error(
        "Cannot write the reload key ({error}): reload is refused until the Subject restarts",
        {
          error: (e as Error).message,
        },
      );
      return crypto.randomUUID();
    }),
    sources: reloaded?.sources ?? await readSources(files.length ? files : EXAMPLE_FILES),
    timeout: config.handler_import_timeout + 5000,
    allowComponentPermissions,
    onCurrent: (sources: readonly SourceFile[]) => writeReloaded(config, sources),
    restored: reloaded !== undefined,
  };
  // With the IM in this process, the two share one reactor and talk over inproc: the IM's
  // batches and acknowledgements cross no process and no kernel socket (README, "The Integration
  // Manager in the Subject's process").
  const shared = config.integration_manager_in_subject
    ? { reactor: new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS }), local: `inproc://zmanager-im-${Deno.pid}` }
    : undefined;
  const im = shared ? await startIntegrationManager(config, security, shared) : undefined;
  if (im === null) {
    await shared?.reactor.close();
    return 1;
  }
  const subject = await started(() =>
    Subject.start({
      reactor: shared?.reactor,
      imInProcess: shared !== undefined,
      security,
      flows: catalog.flows,
      pullAddress: config.subject_pull_address,
      workerAddress: config.subject_worker_address,
      integrationManagerAddress: shared?.local ?? config.integration_manager_pull_address,
      stepLimit: config.step_limit,
      heartbeatTimeout: config.heartbeat_timeout,
      maxPending: config.max_pending,
      maxInFlightPerConnection: config.max_in_flight_per_connection,
      maxMessageSize: config.max_message_size,
      duplicateWindow: config.duplicate_window,
      replayBuffer: config.replay_buffer,
      pausedStore: config.async_store,
      asyncTimeout: config.async_timeout,
      maxDeliveries: config.max_deliveries,
      packWindow: config.worker_pack_window,
      reload,
    })
  );
  if (!subject) {
    await im?.close();
    await shared?.reactor.close();
    return 1;
  }
  const snapshot = () => ({ ...subject.stats(), ...securityStats() });
  // The gatekeeper's counts are the process's: in the Subject's row only.
  const imRow = im ? [{ role: "integration-manager", snapshot: () => im.stats() }] : [];
  return await serveUntilStopped(
    config,
    "subject",
    supervised,
    snapshot,
    async (signal) => {
      const log = logger("subject");
      log.info("{signal}: draining (no new requests; finishing accepted ones)", { signal });
      if (!await subject.drain(config.handler_timeout + 5000)) {
        log.warn("Drain timed out with work still in flight");
      }
      // The IM last: the drain waited for its acknowledgement of every publication.
      await im?.close();
      await shared?.reactor.close();
    },
    security?.keys,
    imRow,
  );
}

/**
 * Checks every handler target of a catalog before the deployment says `ready` (SPEC §6): a
 * TypeScript target whose module is missing, fails to import, does not finish importing within
 * `handler_import_timeout` ms, or lacks the mapped export is an error, printed as
 * `file:line: error: <target>: <reason>`. Targets that are not `module#Export` (DigitalPy's
 * Python paths) are warnings (their steps answer `no_handler`), errors in strict mode.
 * Returns `false` when there is an error.
 */
export async function checkHandlers(catalog: Catalog, config: Config, strict = false): Promise<boolean> {
  const problems = await checkHandlerTargets(catalog.mappings.values(), {
    timeout: config.handler_import_timeout,
  });
  let errors = 0;
  let foreign = 0;
  for (const p of problems) {
    if (p.error || strict) {
      errors++;
      console.error(
        `${p.entry.file}:${p.entry.line}:${p.entry.column}: error: ${p.entry.target}: ${p.reason}`,
      );
    } else foreign++;
  }
  if (foreign) {
    logger("handlers").warn(
      "{n} mapping targets are not module#Export targets (Python paths?): their steps answer no_handler",
      { n: foreign },
    );
  }
  return errors === 0;
}

/**
 * `worker`: runs until SIGINT/SIGTERM, then finishes running steps. Run alone, it first checks
 * its handler targets (see {@linkcode checkHandlers}); under `start`, which checked them, it
 * imports them directly. Either way a TypeScript target that does not load makes it exit 1.
 */
export async function runWorker(
  config: Config,
  files: readonly string[],
  strict = false,
  supervised = false,
  allowComponentPermissions = false,
): Promise<number> {
  const catalog = await loadForRole(files, strict, allowComponentPermissions);
  if (!catalog) return 1;
  if (!supervised && !await checkHandlers(catalog, config, strict)) return 1;
  const log = logger("worker");
  const security = await securityOrError(config);
  if (security === null) return 1;
  const options = {
    security,
    flows: catalog.flows,
    subjectAddress: config.subject_worker_address,
    concurrency: config.worker_concurrency,
    stepLimit: config.step_limit,
    handlerTimeout: config.handler_timeout,
    timeouts: new Map([...catalog.timeouts].map(([lookup, t]) => [lookup, t.ms])),
    heartbeatInterval: config.heartbeat_interval,
    heartbeatTimeout: config.heartbeat_timeout,
    watchdog: true,
    maxMessageSize: config.max_message_size,
    reload: {
      baseHash: await sourcesHash(await readSources(files.length ? files : EXAMPLE_FILES)),
      allowComponentPermissions,
      importTimeout: config.handler_import_timeout,
    },
  };
  let worker: Worker;
  let unresolved: readonly UnresolvedTarget[];
  if (config.sandbox) {
    // The handlers are imported by their sandboxes only, never on this thread (it holds FFI).
    try {
      const started = await Worker.startWith({
        ...options,
        handlers: new HandlerRegistry(),
        sandboxes: sandboxGroups(catalog),
      });
      worker = started.worker;
      const foreign = [...catalog.mappings.values()].flatMap((entry) => {
        const ref = parseTarget(entry.target);
        return typeof ref === "string" ? [{ entry, reason: ref }] : [];
      });
      unresolved = [...started.unresolved, ...foreign];
    } catch (e) {
      log.error("The handler sandboxes did not start: {message}", { message: (e as Error).message });
      return 1;
    }
    if (!reportUnresolved(unresolved, strict)) {
      await worker.close();
      return 1;
    }
  } else {
    const loaded = await loadHandlers(catalog);
    if (!reportUnresolved(loaded.unresolved, strict)) return 1;
    worker = await Worker.start({ ...options, handlers: loaded.registry });
  }
  // (credit: what the worker may still take, for the metrics)
  const snapshot = () => ({ ...worker.stats(), credit: config.worker_concurrency - worker.stats().active });
  return await serveUntilStopped(config, "worker", supervised, snapshot, async (signal) => {
    log.info("{signal}: finishing running steps", { signal });
    await worker.drain(config.handler_timeout);
  }, security?.keys);
}

/**
 * Logs the mapping targets that did not load: a TypeScript target is an error, a foreign one
 * (a Python path) a warning. Returns `false` when the worker must not run.
 */
function reportUnresolved(unresolved: readonly UnresolvedTarget[], strict: boolean): boolean {
  const log = logger("worker");
  let failed = 0;
  for (const u of unresolved) {
    const props = { file: u.entry.file, line: u.entry.line, target: u.entry.target, reason: u.reason };
    if (typeof parseTarget(u.entry.target) !== "string") {
      failed++;
      log.error("{file}:{line}: target {target} does not load: {reason}", props);
    } else log.warn("{file}:{line}: unresolved target {target}: {reason}", props);
  }
  return !(failed || (strict && unresolved.length));
}
