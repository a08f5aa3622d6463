/**
 * Process mains of the roles, as the CLI runs them: load files, start a role, write its
 * counters to the runtime directory, and stop gracefully on SIGINT or SIGTERM. `start`
 * supervises one process per role and restarts workers that die.
 *
 * @module
 */

import { type Catalog, hasErrors } from "./catalog.ts";
import { Client } from "./client.ts";
import type { Config } from "./config.ts";
import { ensureRuntimeDir } from "./config.ts";
import { formatDiagnostic } from "./diagnostics.ts";
import { loadFiles, loadHandlers } from "./load.ts";
import { logger } from "./log.ts";
import { IntegrationManager } from "./roles/integration_manager.ts";
import { Subject } from "./roles/subject.ts";
import { Worker } from "./roles/worker.ts";

/** The bundled example component, loaded by `start` when no files are given. */
export const EXAMPLE_FILES: readonly string[] = [
  new URL("../examples/hello/flows.ini", import.meta.url),
  new URL("../examples/hello/action_mapping.ini", import.meta.url),
].map((u) => decodeURIComponent(u.pathname));

/** Loads files for a role; prints every error and returns `undefined` when any. */
export async function loadForRole(files: readonly string[], strict = false): Promise<Catalog | undefined> {
  const catalog = await loadFiles(files.length ? files : EXAMPLE_FILES, { strict });
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
function waitForStop(supervised = false): Promise<string> {
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
async function serveUntilStopped(
  config: Config,
  role: string,
  supervised: boolean,
  snapshot: () => unknown,
  shutdown: (signal: string) => Promise<void>,
): Promise<number> {
  const stopStats = statsWriter(config, role, snapshot);
  await shutdown(await waitForStop(supervised));
  stopStats();
  return 0;
}

/** `integration-manager`: runs until SIGINT/SIGTERM. */
export async function runIntegrationManager(config: Config, supervised = false): Promise<number> {
  await ensureRuntimeDir(config);
  const im = await IntegrationManager.start({
    pullAddress: config.integration_manager_pull_address,
    pubAddress: config.integration_manager_pub_address,
    maxMessageSize: config.max_message_size,
    subscriberBuffer: config.subscriber_buffer,
  });
  return await serveUntilStopped(
    config,
    "integration-manager",
    supervised,
    () => im.stats(),
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
): Promise<number> {
  const catalog = await loadForRole(files, strict);
  if (!catalog) return 1;
  await ensureRuntimeDir(config);
  const subject = await Subject.start({
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
  });
  return await serveUntilStopped(config, "subject", supervised, () => subject.stats(), async (signal) => {
    const log = logger("subject");
    log.info("{signal}: draining (no new requests; finishing accepted ones)", { signal });
    if (!await subject.drain(config.handler_timeout + 5000)) {
      log.warn("Drain timed out with work still in flight");
    }
  });
}

/** `worker`: runs until SIGINT/SIGTERM, then finishes running steps. */
export async function runWorker(
  config: Config,
  files: readonly string[],
  strict = false,
  supervised = false,
): Promise<number> {
  const catalog = await loadForRole(files, strict);
  if (!catalog) return 1;
  const { registry, unresolved } = await loadHandlers(catalog);
  const log = logger("worker");
  for (const u of unresolved) {
    log.warn("{file}:{line}: unresolved target {target}: {reason}", {
      file: u.entry.file,
      line: u.entry.line,
      target: u.entry.target,
      reason: u.reason,
    });
  }
  if (strict && unresolved.length) return 1;
  const worker = await Worker.start({
    flows: catalog.flows,
    handlers: registry,
    subjectAddress: config.subject_worker_address,
    concurrency: config.worker_concurrency,
    stepLimit: config.step_limit,
    handlerTimeout: config.handler_timeout,
    timeouts: new Map([...catalog.timeouts].map(([lookup, t]) => [lookup, t.ms])),
    heartbeatInterval: config.heartbeat_interval,
  });
  return await serveUntilStopped(config, "worker", supervised, () => worker.stats(), async (signal) => {
    log.info("{signal}: finishing running steps", { signal });
    await worker.drain(config.handler_timeout);
  });
}

/** Options of {@linkcode runStart}. */
export interface StartOptions {
  /** Arguments passed on to every role process (config, runtime dir, endpoints). */
  readonly roleArgs: readonly string[];
  /** Flow and mapping files. */
  readonly files: readonly string[];
  /** Load strictly. */
  readonly strict?: boolean;
}

/**
 * `start`: runs the Integration Manager, the Subject and `worker_count` workers as separate
 * processes, restarts workers that die, and on SIGINT/SIGTERM stops the Subject first (it
 * finishes accepted work), then the workers and the Integration Manager. Prints one line,
 * `ready`, on standard output once requests can be sent.
 */
export async function runStart(config: Config, options: StartOptions): Promise<number> {
  const log = logger("start");
  const catalog = await loadForRole(options.files, options.strict);
  if (!catalog) return 1;
  await ensureRuntimeDir(config);
  const cli = new URL("../cli.ts", import.meta.url).href;
  const files = options.files.length ? options.files : EXAMPLE_FILES;
  const common = [...options.roleArgs, "--supervised", ...(options.strict ? ["--strict"] : [])];
  let stopping = false;

  const spawn = (role: string, withFiles: boolean) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli, role, ...common, ...(withFiles ? ["--", ...files] : [])],
      stdin: "piped", // closed to stop the role (see waitForStop)
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();

  const im = spawn("integration-manager", false);
  // The Subject is restarted if it dies (paused flows survive in async_store); `subject`
  // always names the current process.
  let subject = spawn("subject", true);
  const superviseSubject = (backoff = 200) => {
    const p = subject;
    p.status.then((s) => {
      if (stopping || p !== subject) return;
      log.warn("The Subject (pid {pid}) exited with {code}; restarting in {ms} ms", {
        pid: p.pid,
        code: s.signal ?? s.code,
        ms: backoff,
      });
      setTimeout(() => {
        if (stopping) return;
        subject = spawn("subject", true);
        superviseSubject(Math.min(backoff * 2, 5000));
      }, backoff);
    });
  };
  const workers = new Set<Deno.ChildProcess>();
  const supervise = (slot: number, backoff = 200) => {
    const p = spawn("worker", true);
    workers.add(p);
    p.status.then((s) => {
      workers.delete(p);
      if (stopping) return;
      log.warn("Worker {slot} (pid {pid}) exited with {code}; restarting in {ms} ms", {
        slot,
        pid: p.pid,
        code: s.signal ?? s.code,
        ms: backoff,
      });
      setTimeout(() => !stopping && supervise(slot, Math.min(backoff * 2, 5000)), backoff);
    });
  };
  for (let i = 0; i < config.worker_count; i++) supervise(i);

  // Ready once a ping travels client -> Subject -> Integration Manager -> client.
  const earlyExit = Promise.race([im.status, subject.status]).then(() => "exited" as const);
  const probe = (async () => {
    const c = await Client.connect({
      subject: config.subject_pull_address,
      publisher: config.integration_manager_pub_address,
    });
    await c.subscribe("~~~~ready").then((it) => it.return?.());
    await c.close();
    return "ready" as const;
  })();
  if ((await Promise.race([probe, earlyExit])) === "exited") {
    log.error("The Subject or the Integration Manager exited at start-up");
    stopping = true;
    await Promise.all([im, subject, ...workers].map(stopChild));
    return 1;
  }
  superviseSubject();
  console.log("ready");
  log.info("ZManager running in {dir}: {workers} workers, {flows} flows", {
    dir: config.runtime_dir,
    workers: config.worker_count,
    flows: catalog.flows.size,
  });

  const signal = await Promise.race([waitForStop(), im.status.then(() => "integration manager exited")]);
  stopping = true;
  log.info("{signal}: stopping the Subject (it finishes accepted requests)", { signal });
  await stopChild(subject);
  await Promise.all([...workers].map(stopChild));
  await stopChild(im);
  log.info("Stopped");
  return signal === "integration manager exited" ? 1 : 0;
}

/** Asks a supervised role to stop (closes its stdin) and waits for it to exit. */
async function stopChild(p: Deno.ChildProcess): Promise<void> {
  await p.stdin.close().catch(() => {});
  await p.status;
}
