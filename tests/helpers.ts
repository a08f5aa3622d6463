// Test helpers: a real deployment (`cli.ts start` in its own process) per test, on ipc in a
// temporary directory or tcp on free loopback ports (see testing/deployment.ts).
import { type Deployment, spawnDeployment, type SpawnOptions } from "../testing/deployment.ts";

export type { Deployment };
export const CLI = new URL("../cli.ts", import.meta.url).pathname;
export const RUNTIME_FIXTURE = [
  new URL("../fixtures/components/basic/flows.ini", import.meta.url).pathname,
  new URL("../fixtures/components/basic/mapping.ini", import.meta.url).pathname,
];

/** A deployment of the basic component unless other files are given. */
export function startDeployment(options: SpawnOptions = {}): Promise<Deployment> {
  return spawnDeployment({
    ...options,
    files: options.files ?? RUNTIME_FIXTURE,
    showLogs: Boolean(Deno.env.get("ZMANAGER_TEST_LOGS")),
  });
}

/**
 * The two places the Integration Manager can run, for tests that must hold for both: its own
 * process (the default), and the Subject's (`integration_manager_in_subject`).
 */
export const IM_PLACEMENTS: readonly { readonly label: string; readonly args: readonly string[] }[] = [
  { label: "", args: [] },
  { label: " (IM in the Subject's process)", args: ["--integration-manager-in-subject", "on"] },
];

export async function runCli(
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { ZMANAGER_LOG: "warning", ...options.env },
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/**
 * `cli.ts start --workers N --runtime-dir DIR` on the basic component, in its own process, for
 * tests that watch `start` itself (its output, its signals, its children); stdout piped, stderr
 * piped or dropped. `args` go before the files.
 */
export function spawnStart(
  dir: string,
  options: {
    workers?: number;
    args?: readonly string[];
    stderr?: "piped" | "null";
    /** Flow and mapping files. @default {RUNTIME_FIXTURE} */
    files?: readonly string[];
  } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CLI,
      "start",
      "--workers",
      String(options.workers ?? 1),
      "--runtime-dir",
      dir,
      ...(options.args ?? []),
      "--",
      ...(options.files ?? RUNTIME_FIXTURE),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: options.stderr ?? "null",
    env: { ZMANAGER_LOG: "warning" },
  }).spawn();
}
