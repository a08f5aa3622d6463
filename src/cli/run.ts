/**
 * Process mains of the roles, as the CLI runs them: load files, start a role, write its
 * counters to the runtime directory, and stop gracefully on SIGINT or SIGTERM. `start`
 * supervises one process per role and restarts any that dies.
 *
 * @module
 */

import { type Catalog, hasErrors } from "../topic/catalog.ts";
import { Client } from "../client/client.ts";
import type { Config } from "../config.ts";
import { ConfigError, ensureRuntimeDir } from "../config.ts";
import { formatDiagnostic } from "../topic/diagnostics.ts";
import { HandlerRegistry, parseTarget, type UnresolvedTarget } from "../handler.ts";
import { checkHandlerTargets } from "./handler_check.ts";
import { loadFiles, loadHandlers } from "../load.ts";
import { logger } from "../log.ts";
import { IntegrationManager } from "../roles/integration_manager.ts";
import { Subject } from "../roles/subject.ts";
import { Worker } from "../roles/worker.ts";
import { sandboxGroups } from "../roles/sandbox.ts";
import { LOCK_FILE, lockRuntimeDir, SupervisedProcess } from "./supervisor.ts";
import { publishMetrics } from "../roles/metrics.ts";
import { type Security, SecurityError, securityOrError, securityStats } from "../roles/security.ts";

/** Creates and checks the runtime directory (see `ensureRuntimeDir`); prints why not and returns false. */
async function runtimeDirOk(config: Config): Promise<boolean> {
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
  const write = () => {
    try {
      Deno.mkdirSync(dir, { recursive: true });
      const tmp = `${file}.tmp`;
      Deno.writeTextFileSync(
        tmp,
        JSON.stringify({ role, pid: Deno.pid, at: Date.now(), ...snapshot() as object }),
      );
      Deno.renameSync(tmp, file);
    } catch { /* the runtime directory may be gone at shutdown */ }
  };
  write();
  const t = setInterval(write, 1000);
  return () => {
    clearInterval(t);
    write();
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
 * Keeps a started role running: writes its counters to the runtime directory until it is told
 * to stop (see {@linkcode waitForStop}), then runs `shutdown`. Returns the exit code.
 */
export async function serveUntilStopped(
  config: Config,
  role: string,
  supervised: boolean,
  snapshot: () => unknown,
  shutdown: (signal: string) => Promise<void>,
): Promise<number> {
  const stopStats = statsWriter(config, role, snapshot);
  const stopMetrics = publishMetrics({ subject: config.subject_pull_address, role, snapshot });
  await shutdown(await waitForStop(supervised));
  stopMetrics();
  stopStats();
  return 0;
}

/** `integration-manager`: runs until SIGINT/SIGTERM. */
export async function runIntegrationManager(config: Config, supervised = false): Promise<number> {
  const security = await securityOrError(config);
  if (security === null) return 1;
  if (!await runtimeDirOk(config)) return 1;
  const im = await started(() =>
    IntegrationManager.start({
      pullAddress: config.integration_manager_pull_address,
      pubAddress: config.integration_manager_pub_address,
      maxMessageSize: config.max_message_size,
      subscriberBuffer: config.subscriber_buffer,
      security,
    })
  );
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
  const catalog = await loadForRole(files, strict, allowComponentPermissions);
  if (!catalog) return 1;
  const security = await securityOrError(config);
  if (security === null) return 1;
  if (!await runtimeDirOk(config)) return 1;
  const subject = await started(() =>
    Subject.start({
      security,
      flows: catalog.flows,
      pullAddress: config.subject_pull_address,
      workerAddress: config.subject_worker_address,
      integrationManagerAddress: config.integration_manager_pull_address,
      stepLimit: config.step_limit,
      heartbeatTimeout: config.heartbeat_timeout,
      maxPending: config.max_pending,
      maxMessageSize: config.max_message_size,
      duplicateWindow: config.duplicate_window,
      pausedStore: config.async_store,
      asyncTimeout: config.async_timeout,
      maxDeliveries: config.max_deliveries,
    })
  );
  if (!subject) return 1;
  const snapshot = () => ({ ...subject.stats(), ...securityStats() });
  return await serveUntilStopped(config, "subject", supervised, snapshot, async (signal) => {
    const log = logger("subject");
    log.info("{signal}: draining (no new requests; finishing accepted ones)", { signal });
    if (!await subject.drain(config.handler_timeout + 5000)) {
      log.warn("Drain timed out with work still in flight");
    }
  });
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
      console.error(`${p.entry.file}:${p.entry.line}: error: ${p.entry.target}: ${p.reason}`);
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
  });
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

/** The roles `start --roles` can run on a host. */
export const START_ROLES = ["subject", "integration-manager", "workers"] as const;
/** One of {@linkcode START_ROLES}. */
export type StartRole = typeof START_ROLES[number];

/**
 * Parses `--roles`: a comma-separated subset of {@linkcode START_ROLES}.
 * @throws {RangeError} naming an unknown role.
 */
export function parseRoles(list: string): Set<StartRole> {
  const out = new Set<StartRole>();
  for (const r of list.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (!(START_ROLES as readonly string[]).includes(r)) {
      throw new RangeError(`unknown role "${r}" in --roles; the roles are ${START_ROLES.join(", ")}`);
    }
    out.add(r as StartRole);
  }
  if (out.size === 0) throw new RangeError(`--roles names no role; the roles are ${START_ROLES.join(", ")}`);
  return out;
}

/** Options of {@linkcode runStart}. */
export interface StartOptions {
  /** The roles this host runs (`--roles`). @default {all of START_ROLES} */
  readonly roles?: ReadonlySet<StartRole>;
  /** Arguments passed on to every role process (config, runtime dir, endpoints). */
  readonly roleArgs: readonly string[];
  /** Flow and mapping files. */
  readonly files: readonly string[];
  /** Load strictly. */
  readonly strict?: boolean;
  /** With `strict`: let components ask to run programs or for unrestricted network access. */
  readonly allowComponentPermissions?: boolean;
  /** Also run the HTTP gateway, listening on this `HOST:PORT`. */
  readonly http?: string;
}

/**
 * `start`: takes the runtime directory (a second `start` on it exits 1), checks every handler
 * target (see {@linkcode checkHandlers}), then runs the Integration Manager, the Subject and
 * `worker_count` workers as separate processes, each restarted when it dies (200 ms doubling
 * to 5 s, reset after a healthy minute). On SIGINT/SIGTERM it stops the Subject first (it
 * finishes accepted work), then the workers and the Integration Manager, killing any that does
 * not stop within its grace period. Prints one line, `ready`, on standard output once requests
 * can be sent.
 */
export async function runStart(config: Config, options: StartOptions): Promise<number> {
  let lock: ReturnType<typeof lockRuntimeDir>;
  try {
    if (!await runtimeDirOk(config)) return 1;
    lock = lockRuntimeDir(config.runtime_dir);
  } catch (e) {
    console.error(`error: cannot use the runtime directory ${config.runtime_dir}: ${(e as Error).message}`);
    return 1;
  }
  if ("heldBy" in lock) {
    console.error(
      `error: the runtime directory ${config.runtime_dir} is in use by another deployment (start, pid ${
        lock.heldBy ?? "unknown"
      }, ${config.runtime_dir}/${LOCK_FILE}); stop it or give another --runtime-dir`,
    );
    return 1;
  }
  try {
    return await supervise(config, options);
  } finally {
    lock.release();
  }
}

async function supervise(config: Config, options: StartOptions): Promise<number> {
  const log = logger("start");
  const catalog = await loadForRole(options.files, options.strict, options.allowComponentPermissions);
  if (!catalog) return 1;
  if (!await checkHandlers(catalog, config, options.strict)) return 1;
  const security = await securityOrError(config);
  if (security === null) return 1;
  const cli = new URL("../../cli.ts", import.meta.url).href;
  const files = options.files.length ? options.files : EXAMPLE_FILES;
  const common = [...options.roleArgs, "--supervised"];
  // Only the roles that load files take --strict.
  const strict = [
    ...(options.strict ? ["--strict"] : []),
    ...(options.allowComponentPermissions ? ["--allow-component-permissions"] : []),
  ];

  const spawner = (role: string, withFiles: boolean) => () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        // The IM collects garbage before it hands freed memory back (see IntegrationManager).
        ...(role === "integration-manager" ? ["--v8-flags=--expose-gc"] : []),
        // The only way Deno gives a thread permissions of its own (README, "Handler sandbox").
        ...(role === "worker" && config.sandbox ? ["--unstable-worker-options"] : []),
        cli,
        role,
        ...common,
        ...(withFiles ? [...strict, "--", ...files] : []),
      ],
      stdin: "piped", // closed to stop the role (see waitForStop)
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();

  const roles = options.roles ?? new Set(START_ROLES);
  const im = roles.has("integration-manager")
    ? new SupervisedProcess("The Integration Manager", spawner("integration-manager", false), log)
    : undefined;
  const subject = roles.has("subject")
    ? new SupervisedProcess("The Subject", spawner("subject", true), log)
    : undefined;
  const workers = Array.from(
    { length: roles.has("workers") ? config.worker_count : 0 },
    (_, i) => new SupervisedProcess(`Worker ${i}`, spawner("worker", true), log).supervise(),
  );
  const http = options.http;
  const gateway = http === undefined
    ? undefined
    : new SupervisedProcess("The gateway", () =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "gateway", "--listen", http, ...common, ...strict, "--", ...files],
        stdin: "piped",
        stdout: "null",
        stderr: "inherit",
      }).spawn(), log).supervise();
  // Grace periods: the Subject drains for up to handler_timeout + 5 s (its drain ends once every
  // accepted request has its final publication); then workers and the IM get STOP_MARGIN.
  const stopAll = async () => {
    await gateway?.stop(STOP_MARGIN);
    await subject?.stop(config.handler_timeout + 5000 + STOP_MARGIN);
    // Once the Subject is gone its workers' results have nowhere to go: a short grace, whatever
    // the handler timeout (a SIGSTOPped worker cannot read its stdin and is killed after it).
    await Promise.all(workers.map((w) => w.stop(STOP_MARGIN)));
    await im?.stop(STOP_MARGIN);
  };

  // Ready once a ping travels client -> Subject -> Integration Manager -> client; on a host that
  // runs only some roles, once each of its role processes has written its counters (its sockets
  // are bound or connected).
  const early = [im, subject, ...(subject && im ? [] : workers)].filter((p) => p !== undefined);
  const earlyExit = Promise.race(early.map((p) => p.child.status)).then(() => "exited" as const);
  const probe = subject && im
    ? pingProbe(config, security)
    : statsProbe(config, early.map((p) => p.child.pid));
  if ((await Promise.race([probe, earlyExit])) === "exited") {
    log.error("A role exited at start-up");
    await stopAll();
    return 1;
  }
  // From here on the Integration Manager and the Subject are restarted too (paused flows
  // survive in async_store); `start` ends only on a signal.
  im?.supervise();
  subject?.supervise();
  if (http !== undefined && !await gatewayListening(http)) {
    log.error("The gateway did not answer on {http} within 20 s", { http });
    await stopAll();
    return 1;
  }
  // Listening for SIGINT/SIGTERM before saying ready: a signal sent on seeing `ready` stops the
  // deployment gracefully, never kills `start` with the roles left behind.
  const stopped = waitForStop();
  console.log("ready");
  log.info("ZManager running in {dir}: {roles}, {workers} workers, {flows} flows", {
    dir: config.runtime_dir,
    roles: [...roles].join(", "),
    workers: workers.length,
    flows: catalog.flows.size,
  });

  const signal = await stopped;
  log.info("{signal}: stopping the Subject (it finishes accepted requests)", { signal });
  await stopAll();
  log.info("Stopped");
  return 0;
}

/** Resolves once a ping travels client -> Subject -> Integration Manager -> client. */
async function pingProbe(config: Config, security: Security | undefined): Promise<"ready"> {
  const c = await Client.connect({
    subject: config.subject_pull_address,
    publisher: config.integration_manager_pub_address,
    curve: security?.keys,
  });
  await c.subscribe("~~~~ready").then((it) => it.return?.());
  await c.close();
  return "ready" as const;
}

/** Resolves once each of these role processes has written its counters to the runtime directory. */
async function statsProbe(config: Config, pids: readonly number[]): Promise<"ready"> {
  const files = pids.map((pid) => new RegExp(`^[a-z-]+-${pid}\\.json$`));
  for (;;) {
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(`${config.runtime_dir}/stats`)].map((e) => e.name);
    } catch { /* not written yet */ }
    if (files.every((f) => names.some((n) => f.test(n)))) return "ready";
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls the gateway's `/healthz` (every 100 ms, up to 20 s) until it answers. */
async function gatewayListening(listen: string): Promise<boolean> {
  const url = `http://${listen.replace(/^(0\.0\.0\.0|\[::\]|)(?=:\d+$)/, "127.0.0.1")}/healthz`;
  for (let i = 0; i < 200; i++) {
    const ok = await fetch(url).then(async (r) => (await r.body?.cancel(), r.ok), () => false);
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** Milliseconds a role gets past its own drain time to exit before it is killed. */
const STOP_MARGIN = 3000;
