/**
 * The HTTP gateway's row of `deno task bench`: the 3-step bench flow posted over HTTP/1.1
 * keep-alive on 64 connections (a closed loop of `fetch` calls: Deno's own client keeps one
 * connection per concurrent request), through `start --http`, in the same run as the ZeroMQ
 * client's figures.
 *
 * @module
 */

import { rolePids, spawnDeployment } from "../testing/deployment.ts";

const FILES = ["./component/flows.ini", "./component/mapping.ini"].map((f) =>
  decodeURIComponent(new URL(f, import.meta.url).pathname)
);

/** The gateway row's figures. */
export interface GatewayRun {
  /** Concurrent HTTP/1.1 keep-alive connections. */
  readonly connections: number;
  /** Worker processes. */
  readonly workers: number;
  /** Flows per second over HTTP, closed loop. */
  readonly flowsPerSecond: number;
  /** Milliseconds per POST at that load (closed loop: at saturation, not at 50% of peak). */
  readonly p50_ms: number;
  /** The 99th percentile. */
  readonly p99_ms: number;
  /** POSTs that did not answer 200 (should be 0). */
  readonly failed: number;
  /** Cores the gateway process used meanwhile. */
  readonly gatewayCores: number;
  /** Cores the load generator (this process: `fetch`) used meanwhile. */
  readonly generatorCores: number;
}

/** CPU seconds (user + system) a process has used, from /proc (Linux); 0 elsewhere. */
function cpuSeconds(pid: number): number {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Runs the 3-step flow through the gateway for `seconds` (after a warm-up as long). */
export async function gatewayRun(seconds: number, workers = 2, connections = 64): Promise<GatewayRun> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const d = await spawnDeployment({ files: FILES, workers, args: ["--http", `127.0.0.1:${port}`] });
  try {
    for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const url = `http://127.0.0.1:${port}/v1/flows/Bench3`;
    const body = JSON.stringify({ n: 1 });
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: connections, http2: false });
    const loop = async (ms: number) => {
      const until = performance.now() + ms;
      const times: number[] = [];
      let failed = 0;
      await Promise.all(Array.from({ length: connections }, async () => {
        while (performance.now() < until) {
          const t = performance.now();
          const r = await fetch(url, { method: "POST", body, client });
          await r.arrayBuffer();
          if (r.status !== 200) failed++;
          times.push(performance.now() - t);
        }
      }));
      return { times, failed, seconds: ms / 1000 };
    };
    await loop(seconds * 1000); // warm-up, unmeasured
    const [gatewayPid] = await rolePids(d.dir, "gateway");
    const before = [cpuSeconds(gatewayPid), cpuSeconds(Deno.pid)];
    const run = await loop(seconds * 1000);
    const after = [cpuSeconds(gatewayPid), cpuSeconds(Deno.pid)];
    client.close();
    const sorted = run.times.sort((a, b) => a - b);
    return {
      connections,
      workers,
      flowsPerSecond: Math.round(run.times.length / run.seconds),
      p50_ms: Math.round(percentile(sorted, 50) * 1000) / 1000,
      p99_ms: Math.round(percentile(sorted, 99) * 1000) / 1000,
      failed: run.failed,
      gatewayCores: Math.round(((after[0] - before[0]) / run.seconds) * 100) / 100,
      generatorCores: Math.round(((after[1] - before[1]) / run.seconds) * 100) / 100,
    };
  } finally {
    await d.stop();
  }
}
