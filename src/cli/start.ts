/**
 * `start`: one host's share of a deployment (all roles by default, or `--roles`), each role in
 * its own supervised process, `ready` once requests can be sent, and an orderly stop on SIGINT
 * or SIGTERM. The role processes' mains are in `run.ts`.
 *
 * @module
 */

import { Client } from "../client/client.ts";
import type { Config } from "../config.ts";
import { logger } from "../log.ts";
import { type Security, securityOrError } from "../roles/security.ts";
import {
  checkHandlers,
  EXAMPLE_FILES,
  loadForRole,
  RELOADED_FILE,
  runtimeDirOk,
  waitForStop,
} from "./run.ts";
import { type Liveness, LOCK_FILE, lockRuntimeDir, RestartBackoff, SupervisedProcess } from "./supervisor.ts";
import { watchAndReload } from "./watch.ts";

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
  /** Reload when the files or their handler modules change on disk (`watch.ts`; needs the Subject here). */
  readonly watch?: boolean;
}

/** Milliseconds a worker must have run to be restarted without waiting longer than the last time. */
export const WORKER_HEALTHY_AFTER = 1000;

/** The V8 flags `start` runs the Subject with (its memory at peak load; README, _Commands_). */
export const SUBJECT_V8_FLAGS = "--max-semi-space-size=4,--heap-growing-percent=50";

/** The V8 flags `start` runs each worker with (its memory at peak load; README, _Commands_). */
export const WORKER_V8_FLAGS = "--max-semi-space-size=4";

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
    // A new deployment starts on its files, not on those a reload gave the one before (run.ts).
    await Deno.remove(`${config.runtime_dir}/${RELOADED_FILE}`).catch(() => {});
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

  // Listening for SIGINT/SIGTERM from the first role's spawn: a signal sent before `ready` (or on
  // seeing it) stops the roles in order, never kills `start` with the roles left behind.
  const stopped = waitForStop();
  const imInSubject = config.integration_manager_in_subject;
  const spawner = (role: string, withFiles: boolean) => () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        // The IM collects garbage before it hands freed memory back (see IntegrationManager).
        ...(role === "integration-manager" ? ["--v8-flags=--expose-gc"] : []),
        // The Subject's young generation capped at 4 MiB a semi-space (8 MiB: peak RSS 186-194 ->
        // 145-150 MiB; 4 MiB: 116-123 -> 109-115, no loss of peak seen), and its old generation let
        // grow to 1.5x what the last full collection kept, where V8 chose up to 4x: about 13 MiB
        // live, so it collects at about 20 MiB instead of 50-60 (peak RSS 150-163 -> 112-122 MiB,
        // the peak rate about 3% lower; a growth factor, not a limit: a Subject that holds more
        // grows with it). docs/performance.md, rounds 3, 5 and 16.
        ...(role === "subject" ? [`--v8-flags=${SUBJECT_V8_FLAGS}${imInSubject ? ",--expose-gc" : ""}`] : []),
        // A worker's young generation (its thread's and each sandbox's) capped the same way: peak
        // RSS 118-143 -> 102-111 MiB, no loss of peak seen (docs/performance.md, round 16).
        ...(role === "worker" ? [`--v8-flags=${WORKER_V8_FLAGS}`] : []),
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

  // A role stopped (SIGSTOP), or hung (its counters not rewritten once it has written them), for
  // liveness_timeout is killed and started again (supervisor.ts, LivenessClock). Without the
  // sandbox a worker's watchdog ends a blocked handler at handler_timeout: it gets that first.
  const statsDir = `${config.runtime_dir}/stats`;
  const statsWritable = writableProbe(statsDir);
  const liveness = (role: string, timeoutMs: number): Liveness => ({
    file: (pid) => `${statsDir}/${role}-${pid}.json`,
    timeoutMs,
    writable: statsWritable,
  });
  const workerLiveness = config.liveness_timeout > 0 && !config.sandbox
    ? Math.max(config.liveness_timeout, config.handler_timeout + 5000)
    : config.liveness_timeout;
  const roles = options.roles ?? new Set(START_ROLES);
  // The IM runs in the Subject's process: no process of its own, and it comes back with the Subject.
  const im = roles.has("integration-manager") && !imInSubject
    ? new SupervisedProcess(
      "The Integration Manager",
      spawner("integration-manager", false),
      log,
      { liveness: liveness("integration-manager", config.liveness_timeout) },
    )
    : undefined;
  const subject = roles.has("subject")
    ? new SupervisedProcess(
      "The Subject",
      spawner("subject", true),
      log,
      { liveness: liveness("subject", config.liveness_timeout) },
    )
    : undefined;
  const workers = Array.from(
    { length: roles.has("workers") ? config.worker_count : 0 },
    (_, i) =>
      new SupervisedProcess(
        `Worker ${i}`,
        spawner("worker", true),
        log,
        {
          liveness: liveness("worker", workerLiveness),
          // A worker killed for a blocked handler (`--no-sandbox`: by its watchdog, at the handler
          // timeout) was healthy; the doubling is for workers that die as they start. Doubled, a
          // few poison requests had every worker wait 5 s between kills while innocent requests
          // timed out (an outside attack: 2,295 of 2,682 past a 30 s timeout).
          backoff: new RestartBackoff({ healthyAfter: WORKER_HEALTHY_AFTER }),
        },
      ),
  );
  // Port 0 is resolved here, once: start must know where to probe, and a restarted gateway
  // comes back on the same port.
  const http = options.http === undefined ? undefined : withFreePort(options.http);
  const gateway = http === undefined ? undefined : new SupervisedProcess(
    "The gateway",
    () =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "gateway", "--listen", http, ...common, ...strict, "--", ...files],
        stdin: "piped",
        stdout: "null",
        stderr: "inherit",
      }).spawn(),
    log,
    { liveness: liveness("gateway", config.liveness_timeout) },
  ).supervise();
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

  // Ready once each of its role processes has written its counters (its sockets are bound or
  // connected: not another deployment's, on the same endpoints; a worker's handlers loaded in their
  // sandboxes) and, with the Subject and the IM here, a ping has travelled client -> Subject ->
  // Integration Manager -> client. A role that exits before is a failed start: a worker whose
  // handlers need a permission their sandbox lacks would otherwise start again and again behind a
  // `ready` (an outside attack).
  const imHere = im !== undefined || (subject !== undefined && imInSubject);
  const early = [im, subject, ...workers].filter((p) => p !== undefined);
  const earlyExit = Promise.race(
    early.map((p) => p.child.status.then((s) => ({ label: p.label, code: s.code }))),
  );
  const own = statsProbe(config, early.map((p) => p.child.pid));
  const probe = subject && imHere ? own.then(() => pingProbe(config, security)) : own;
  const beforeReady = await Promise.race([probe, earlyExit, stopped]);
  if (beforeReady !== "ready") {
    if (typeof beforeReady === "object") {
      log.error("{role} exited with {code} at start-up (its error is above): not ready, stopping", {
        role: beforeReady.label,
        code: beforeReady.code,
      });
      // Nothing was accepted: the workers need not wait for the Subject's drain.
      await Promise.all(workers.map((w) => w.stop(STOP_MARGIN)));
    } else log.info("{signal} before ready: stopping the roles", { signal: beforeReady });
    await stopAll();
    return typeof beforeReady === "object" ? 1 : 0;
  }
  // From here on every role is restarted when it dies (paused flows survive in async_store);
  // `start` ends only on a signal. Before `ready`, a role that exits fails the start instead (a
  // worker supervised from its spawn had a restart logged, then was stopped).
  im?.supervise();
  subject?.supervise();
  for (const w of workers) w.supervise();
  if (http !== undefined && !await gatewayListening(http)) {
    log.error("The gateway did not answer on {http} within 20 s", { http });
    await stopAll();
    return 1;
  }
  // With --watch, an edit made once `ready` is printed is reloaded: the files are watched first.
  const watching = options.watch && subject
    ? watchAndReload(config, files, {
      security,
      allowComponentPermissions: options.allowComponentPermissions,
      imports: config.sandbox,
    })
    : undefined;
  await watching?.ready;
  console.log("ready");
  log.info("ZManager running in {dir}: {roles}, {workers} workers, {flows} flows", {
    dir: config.runtime_dir,
    roles: [...roles].filter((r) => !(imInSubject && r === "integration-manager"))
      .map((r) => r === "subject" && imInSubject ? "subject (with the integration-manager)" : r).join(", "),
    workers: workers.length,
    flows: catalog.flows.size,
  });

  const signal = await stopped;
  watching?.stop();
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

/** `HOST:0` with a free port of HOST in place of 0 (bound, then let go); any other address as given. */
function withFreePort(listen: string): string {
  const m = listen.match(/^(.*):0$/);
  if (!m) return listen;
  const hostname = m[1].replace(/^\[(.*)\]$/, "$1") || "0.0.0.0";
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `${m[1]}:${port}`;
}

/**
 * Whether the roles can write their counters into `dir` now: `start` writes a probe file of its
 * own there, at most once a second. While it cannot (a full disk, a read-only or missing folder),
 * the roles' files age without their being hung, and are not judged (see `liveness_timeout`).
 */
function writableProbe(dir: string): () => boolean {
  let last = { at: -Infinity, ok: true };
  return () => {
    const now = performance.now();
    if (now - last.at < 1000) return last.ok;
    let ok = true;
    // As the roles write theirs: a new file, then renamed (rewriting an existing small file can
    // succeed on a full disk, where the roles' new files cannot be written).
    try {
      Deno.mkdirSync(dir, { recursive: true });
      Deno.writeTextFileSync(
        `${dir}/.start-probe.tmp`,
        `${JSON.stringify({ pid: Deno.pid, at: Date.now() })}\n`,
      );
      Deno.renameSync(`${dir}/.start-probe.tmp`, `${dir}/.start-probe`);
    } catch {
      ok = false;
    }
    last = { at: now, ok };
    return ok;
  };
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
