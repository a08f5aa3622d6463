/**
 * The peer in the bench: Moleculer (`npm:moleculer`, pinned in deno.json) with its built-in TCP
 * transporter, three processes on this machine (a caller and two worker nodes, each a
 * `moleculer_node.ts` under Deno), the caller calling `chain.a`, which calls `chain.b` then
 * `chain.c` (the 3-step flow's shape). No broker, no discovery traffic: static peers on loopback.
 *
 * @module
 */

import { delay } from "../src/_async.ts";
import { CLOSED_LOOP_WINDOW } from "./generator.ts";
import { freePort } from "../testing/deployment.ts";

const NODE = decodeURIComponent(new URL("./moleculer_node.ts", import.meta.url).pathname);

/** Figures of {@linkcode moleculerRun}. */
export interface MoleculerRun {
  /** Closed-loop peak, calls/s. */
  readonly flows_per_s: number;
  /** CPU (cores) of the caller, then each worker node, at the peak. */
  readonly cores_at_peak: number[];
  /** Peak RSS (MiB) of the caller, then each worker node. */
  readonly rss_mib: number[];
  /** One call at a time, back to back. */
  readonly one_at_a_time_p50_ms: number;
  /** See `one_at_a_time_p50_ms`. */
  readonly one_at_a_time_p99_ms: number;
  /** Open loop at each offered rate: round trips and the CPU of all three processes. */
  readonly open: {
    rate: number;
    p50_ms: number;
    p99_ms: number;
    busy_cores: number;
    cpu_us_per_flow: number;
  }[];
  /** Calls the closed loop keeps outstanding. */
  readonly window: number;
}

/**
 * Calls the closed loop keeps outstanding: the same window as the flows' generator; of 64, 256
 * and 2,000 it gave Moleculer its best peak here (21.0k, 19.8k and 37.2k calls/s, one run each).
 */
export const MOLECULER_WINDOW = CLOSED_LOOP_WINDOW;

/**
 * Runs the Moleculer peer: warm-up, then the peak over `seconds`, 500 calls one at a time, and an
 * open loop at each of `rates`.
 */
export async function moleculerRun(
  seconds: number,
  warmUp: number,
  rates: readonly number[],
  window = MOLECULER_WINDOW,
): Promise<MoleculerRun> {
  const ports = [freePort(), freePort(), freePort()];
  const ids = ["caller", "w1", "w2"];
  const peers = ports.map((p, i) => `127.0.0.1:${p}/${ids[i]}`).join(",");
  const spawn = (args: string[], stdout: "piped" | "null") =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", NODE, ...args], stdout, stderr: "null" }).spawn();
  const workers = [1, 2].map((i) => spawn(["worker", ids[i], String(ports[i]), peers], "piped"));
  try {
    // Each worker node prints "ready" once it listens.
    for (const w of workers) {
      const reader = w.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await Promise.race([reader.read(), delay(60_000).then(() => undefined)]);
      if (!first || first.done) throw new Error("bench: a Moleculer worker node did not start");
      reader.releaseLock();
    }
    const caller = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        NODE,
        "caller",
        String(ports[0]),
        peers,
        workers.map((w) => w.pid).join(","),
        String(seconds),
        String(warmUp),
        String(window),
        ...rates.map(String),
      ],
      stderr: "null",
    });
    const out = await caller.output();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (!out.success || !line.startsWith("{")) throw new Error("bench: the Moleculer caller failed");
    return { ...JSON.parse(line), window };
  } finally {
    for (const w of workers) {
      try {
        w.kill("SIGKILL");
      } catch { /* gone */ }
      await w.status;
    }
  }
}

if (import.meta.main) {
  const window = Number(Deno.args[0] ?? MOLECULER_WINDOW);
  console.log(JSON.stringify(await moleculerRun(3, 8, [10_000], window), null, 2));
}
