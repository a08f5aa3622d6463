/**
 * A whole deployment (`cli.ts start`: Integration Manager, Subject, workers) run as a child
 * process, for the conformance suite, the benchmark and tests; plus fault-injection helpers
 * that find and kill its role processes.
 *
 * @module
 */

import { Client } from "../src/client/client.ts";
import { readUntil } from "../src/_async.ts";

/** Options of {@linkcode spawnDeployment}. */
export interface SpawnOptions {
  /** Flow and mapping files (default: the bundled example). */
  readonly files?: readonly string[];
  /** Worker processes. @default {2} */
  readonly workers?: number;
  /** `ipc` in a temporary directory, or `tcp` on free loopback ports. @default {"ipc"} */
  readonly transport?: "ipc" | "tcp";
  /** More `start` arguments (e.g. `--step-limit 4`). */
  readonly args?: readonly string[];
  /** `ZMANAGER_LOG` of the roles. @default {"warning"} */
  readonly logLevel?: string;
  /** Show the roles' logs on this process's stderr. @default {false} */
  readonly showLogs?: boolean;
}

/** A running deployment. */
export interface Deployment extends AsyncDisposable {
  /** Its runtime directory. */
  readonly dir: string;
  /** The Subject's request endpoint. */
  readonly subject: string;
  /** The Integration Manager's publish endpoint. */
  readonly publisher: string;
  /** CLI flags that point a command (`send`, `tap`, `stats`) at this deployment. */
  readonly flags: readonly string[];
  /** The `start` process. */
  readonly process: Deno.ChildProcess;
  /** Connects a client. */
  connect(): Promise<Client>;
  /** Sends SIGINT, waits for the exit and removes the directory; returns the exit code. */
  stop(): Promise<number>;
}

/**
 * A free TCP port on loopback (bound, then let go: another process may take it meanwhile). It is
 * drawn at random from below the kernel's ephemeral range (`ip_local_port_range`), where neither
 * a `port: 0` bind nor the source port of an outgoing connection lands, so a busy machine running
 * many tests at once seldom takes it first; port 0's choice if none of 50 draws is free. A port
 * is handed out once per process, and not while another process holds it from here: it is locked
 * (`zmanager-test-ports/PORT` in the temporary folder) until this process ends. (A test that drew
 * the same port for two of its endpoints failed with EADDRINUSE in a CI run.)
 */
export function freePort(): number {
  const low = ephemeralLow();
  for (let i = 0; i < 50 && low > 10_000; i++) {
    const port = 10_000 + Math.floor(Math.random() * (low - 10_000));
    if (!reservePort(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch { /* taken: draw again */ }
  }
  for (;;) {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    if (reservePort(port)) return port;
  }
}

/** Ports this process has handed out, with the files that lock them for it. */
const reserved = new Map<number, Deno.FsFile | undefined>();

/** Reserves `port` for this process; false if this or another process (of these tests) has it. */
function reservePort(port: number): boolean {
  if (reserved.has(port)) return false;
  let file: Deno.FsFile | undefined;
  try {
    const dir = `${Deno.env.get("TMPDIR") ?? "/tmp"}/zmanager-test-ports`;
    Deno.mkdirSync(dir, { recursive: true });
    file = Deno.openSync(`${dir}/${port}`, { read: true, write: true, create: true });
    if (!file.tryLockSync(true)) {
      file.close();
      return false;
    }
  } catch { /* no such folder to share: this process's own reservations only */ }
  reserved.set(port, file);
  return true;
}

/** The first port of the kernel's ephemeral range (Linux's default 32768 elsewhere). */
function ephemeralLow(): number {
  try {
    const low = Number(
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim().split(/\s+/)[0],
    );
    return Number.isInteger(low) ? low : 32768;
  } catch {
    return 32768;
  }
}

/**
 * Runs `cli.ts start` and resolves once it prints `ready` and every worker has started (written
 * its counters; up to 15 s): `ready` means requests are taken, and a worker whose handler
 * sandboxes are still importing their modules may join a moment later.
 */
export async function spawnDeployment(options: SpawnOptions = {}): Promise<Deployment> {
  // Free tcp ports are found by binding port 0 and letting go; another process may take one
  // before `start` binds it. Then `start` exits at once: try again with new ports.
  for (let attempt = 1;; attempt++) {
    try {
      return await spawnOnce(options);
    } catch (e) {
      if (options.transport !== "tcp" || attempt === 3 || !(e instanceof StartFailed)) throw e;
    }
  }
}

class StartFailed extends Error {}

async function spawnOnce(options: SpawnOptions): Promise<Deployment> {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  const flags = ["--runtime-dir", dir];
  let subject = `ipc://${dir}/subject`;
  let publisher = `ipc://${dir}/im-pub`;
  if (options.transport === "tcp") {
    const [a, b, c, d] = [freePort(), freePort(), freePort(), freePort()];
    subject = `tcp://127.0.0.1:${a}`;
    publisher = `tcp://127.0.0.1:${d}`;
    flags.push(
      "--subject-pull-address",
      subject,
      "--subject-worker-address",
      `tcp://127.0.0.1:${b}`,
      "--integration-manager-pull-address",
      `tcp://127.0.0.1:${c}`,
      "--integration-manager-pub-address",
      publisher,
    );
  }
  const cli = new URL("../cli.ts", import.meta.url).href;
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "start",
      "--workers",
      String(options.workers ?? 2),
      ...flags,
      ...(options.args ?? []),
      ...(options.files?.length ? ["--", ...options.files] : []),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: options.showLogs ? "inherit" : "null",
    env: { ZMANAGER_LOG: options.logLevel ?? "warning" },
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  if (await readUntil(reader, "ready\n") === undefined) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new StartFailed(
      `start exited before it was ready (files: ${options.files?.join(" ") ?? "example"})`,
    );
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  const workers = options.workers ?? 2;
  for (let i = 0; i < 150 && (await rolePids(dir, "worker")).length < workers; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  let stopped: Promise<number> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        process.kill("SIGINT");
      } catch { /* already gone */ }
      const s = await process.status;
      await drained;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return s.code;
    })();
  return {
    dir,
    subject,
    publisher,
    flags,
    process,
    connect: () => Client.connect({ subject, publisher }),
    stop,
    [Symbol.asyncDispose]: async () => void (await stop()),
  };
}

/**
 * The live pids of a role (`subject`, `worker`, `integration-manager`) of a deployment, from the
 * counters each role writes to `<runtime_dir>/stats/<role>-<pid>.json`.
 */
export async function rolePids(dir: string, role: string): Promise<number[]> {
  const pids: number[] = [];
  try {
    for await (const e of Deno.readDir(`${dir}/stats`)) {
      const m = /^(.*)-(\d+)\.json$/.exec(e.name);
      if (!m || m[1] !== role) continue;
      try {
        Deno.kill(Number(m[2]), "SIGCONT"); // alive? (SIGCONT changes nothing for a running process)
        pids.push(Number(m[2]));
      } catch { /* a stale file of a dead process */ }
    }
  } catch { /* no stats yet */ }
  return pids;
}

/** The counters a role last wrote (the first live process of that role). */
export async function roleStats(dir: string, role: string): Promise<Record<string, unknown>> {
  const [pid] = await rolePids(dir, role);
  if (pid === undefined) throw new Error(`no live ${role} in ${dir}`);
  return JSON.parse(await Deno.readTextFile(`${dir}/stats/${role}-${pid}.json`));
}

/** Fault injection: SIGKILLs one live process of a role; returns its pid, or `undefined`. */
export async function killRole(dir: string, role: string, which = 0): Promise<number | undefined> {
  const pids = await rolePids(dir, role);
  if (!pids.length) return undefined;
  const pid = pids[which % pids.length];
  Deno.kill(pid, "SIGKILL");
  return pid;
}
