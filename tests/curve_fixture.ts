// Test tools for CURVE deployments: key pairs, allowlist folders, per-host config files, role
// processes, and their counters (read from the stats files each role writes).
import { readUntil } from "../src/_async.ts";
import { freePort } from "../testing/deployment.ts";

export const CLI = new URL("../cli.ts", import.meta.url).pathname;

/**
 * Writes `dir/keys/NAME.key` and `.pub` for each name with `cli.ts keygen` (in a process of its
 * own: this one may have loaded a libzmq without CURVE already); returns the public keys.
 */
export async function makeKeys(dir: string, names: readonly string[]): Promise<Record<string, string>> {
  await Deno.mkdir(`${dir}/keys`, { recursive: true });
  const out: Record<string, string> = {};
  for (const n of names) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "keygen", `${dir}/keys/${n}`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(`keygen ${n}: ${new TextDecoder().decode(r.stderr)}`);
    out[n] = new TextDecoder().decode(r.stdout).trim();
  }
  return out;
}

/** Creates the allowlist folders `dir/allow/{services,workers,subscribers}` holding the named keys. */
export async function makeAllowlists(
  dir: string,
  lists: { services: string[]; workers: string[]; subscribers: string[] },
): Promise<void> {
  for (const [kind, names] of Object.entries(lists)) {
    await Deno.mkdir(`${dir}/allow/${kind}`, { recursive: true });
    for (const n of names) await Deno.copyFile(`${dir}/keys/${n}.pub`, `${dir}/allow/${kind}/${n}.pub`);
  }
}

/** The endpoints of a deployment. */
export interface Endpoints {
  readonly subject: string;
  readonly workers: string;
  readonly imPull: string;
  readonly imPub: string;
}

/** Free tcp ports on one loopback address. */
export function loopbackEndpoints(): Endpoints {
  const port = () => `tcp://127.0.0.1:${freePort()}`;
  return { subject: port(), workers: port(), imPull: port(), imPub: port() };
}

/**
 * A `[ZManager]` config file for one host: the endpoints, and (when `key` is given) its key, the
 * hub's public key, and on the hub the allowlist folders.
 */
export async function writeHostConfig(
  file: string,
  dir: string,
  ep: Endpoints,
  options: { key?: string; hub?: boolean; extra?: Record<string, string | number> } = {},
): Promise<void> {
  const lines = [
    "[ZManager]",
    `subject_pull_address = ${ep.subject}`,
    `subject_worker_address = ${ep.workers}`,
    `integration_manager_pull_address = ${ep.imPull}`,
    `integration_manager_pub_address = ${ep.imPub}`,
  ];
  if (options.key) {
    lines.push(`curve_secret_key = ${dir}/keys/${options.key}.key`, `curve_server_key = ${dir}/keys/hub.pub`);
  }
  if (options.hub) {
    for (const k of ["services", "workers", "subscribers"]) {
      lines.push(`curve_allow_${k} = ${dir}/allow/${k}`);
    }
  }
  for (const [k, v] of Object.entries(options.extra ?? {})) lines.push(`${k} = ${v}`);
  await Deno.writeTextFile(file, lines.join("\n") + "\n");
}

/** A running `cli.ts` process (`start --roles …` or a role alone). */
export interface RoleProcess extends AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly runtimeDir: string;
  /** SIGINT, then the exit code (SIGKILL after 30 s). */
  stop(): Promise<number>;
}

/**
 * Runs `prefix… deno run -A cli.ts args…` with its own runtime directory; with `ready`, resolves
 * once it prints `ready` (`start`), else at once.
 */
export async function runRole(
  args: readonly string[],
  options: { prefix?: readonly string[]; ready?: boolean; runtimeDir: string; logs?: boolean },
): Promise<RoleProcess> {
  const prefix = options.prefix ?? [];
  const cmd = [
    ...prefix,
    Deno.execPath(),
    "run",
    "-A",
    CLI,
    args[0],
    "--runtime-dir",
    options.runtimeDir,
    ...args.slice(1),
  ];
  const showLogs = options.logs || Boolean(Deno.env.get("ZMANAGER_TEST_LOGS"));
  const process = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: showLogs ? "inherit" : "piped",
    env: { ZMANAGER_LOG: Deno.env.get("ZMANAGER_TEST_LOGS") ? "info" : "warning" },
  }).spawn();
  // The last 4 KiB of its log, for the error when it exits before it is ready.
  let tail = "";
  const logRead = !showLogs
    ? (async () => {
      for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
        tail = `${tail}${chunk}`.slice(-4096);
      }
    })()
    : Promise.resolve();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  if (options.ready && await readUntil(reader, "ready\n") === undefined) {
    const { code } = await process.status;
    await logRead;
    throw new Error(`${args.join(" ")} exited (${code}) before it was ready; its log ends:\n${tail}`);
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  let stopped: Promise<number> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        process.kill("SIGINT");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          process.kill("SIGKILL");
        } catch { /* gone */ }
      }, 30_000);
      const { code } = await process.status;
      clearTimeout(t);
      return code;
    })();
  return {
    process,
    runtimeDir: options.runtimeDir,
    stop,
    [Symbol.asyncDispose]: async () => void await stop(),
  };
}

/** The counters each role of a runtime directory wrote last, by role (`subject`, `integration-manager`, `worker`). */
export async function roleCounters(runtimeDir: string): Promise<Record<string, Record<string, unknown>[]>> {
  const out: Record<string, Record<string, unknown>[]> = {};
  try {
    for await (const e of Deno.readDir(`${runtimeDir}/stats`)) {
      if (!e.name.endsWith(".json")) continue;
      try {
        const row = JSON.parse(await Deno.readTextFile(`${runtimeDir}/stats/${e.name}`));
        (out[row.role] ??= []).push(row);
      } catch { /* being rewritten */ }
    }
  } catch { /* none yet */ }
  return out;
}

/** Polls `check` every 50 ms until it returns true; false after `ms`. */
export async function waitFor(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return await check();
}
