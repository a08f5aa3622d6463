// Test helpers: a real deployment (`cli.ts start` in its own process) per test, on ipc in a
// temporary directory or tcp on random loopback ports.
import { Client } from "../src/client.ts";

export const CLI = new URL("../cli.ts", import.meta.url).pathname;
export const RUNTIME_FIXTURE = [
  new URL("../fixtures/components/basic/flows.ini", import.meta.url).pathname,
  new URL("../fixtures/components/basic/mapping.ini", import.meta.url).pathname,
];

export interface Deployment extends AsyncDisposable {
  readonly dir: string;
  readonly subject: string;
  readonly publisher: string;
  /** Flags that point a CLI command at this deployment. */
  readonly flags: string[];
  readonly process: Deno.ChildProcess;
  connect(): Promise<Client>;
  /** Sends SIGINT and waits; returns the exit code. */
  stop(): Promise<number>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export async function startDeployment(
  options: { files?: string[]; workers?: number; transport?: "ipc" | "tcp"; args?: string[] } = {},
): Promise<Deployment> {
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
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CLI,
      "start",
      "--workers",
      String(options.workers ?? 2),
      ...flags,
      ...(options.args ?? []),
      "--",
      ...(options.files ?? RUNTIME_FIXTURE),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: Deno.env.get("ZMANAGER_TEST_LOGS") ? "inherit" : "null",
    env: { ZMANAGER_LOG: "warning" },
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`start exited before it was ready: ${out}`);
    out += value;
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
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
