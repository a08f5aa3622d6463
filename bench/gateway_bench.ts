/**
 * The HTTP gateway's rows of `deno task bench`: the 3-step bench flow posted over HTTP/1.1
 * keep-alive on 64 connections through `start --http` (closed loop, one request in flight per
 * connection, `http_load.ts`), in the same run as the ZeroMQ client's figures; beside it, on the
 * same deployment and alternated with it:
 *
 * - the floor: a bare `Deno.serve` answering a fixed body as long as the gateway's
 *   (`http_floor.ts`, its own process) under the same load generator, what HTTP/1.1 alone costs
 *   on this machine;
 * - the ZeroMQ generator with as many requests outstanding as there are connections: what the
 *   deployment gives at that concurrency with no HTTP at all, the ceiling of the gateway row.
 *
 * @module
 */

import { freePort, rolePids, spawnDeployment } from "../testing/deployment.ts";
import { Generator } from "./generator.ts";
import { httpClosedLoop, type HttpLoadRun } from "./http_load.ts";
import { percentile } from "./report.ts";

const FILES = ["./component/flows.ini", "./component/mapping.ini"].map((f) =>
  decodeURIComponent(new URL(f, import.meta.url).pathname)
);
const FLOOR = decodeURIComponent(new URL("./http_floor.ts", import.meta.url).pathname);

/** One HTTP server under the load generator, over the measured runs. */
export interface HttpRow {
  /** Requests (flows) per second, closed loop. */
  readonly perSecond: number;
  /** Milliseconds per request at that load (closed loop: at saturation). */
  readonly p50_ms: number;
  /** The 99th percentile. */
  readonly p99_ms: number;
  /** Requests that did not answer 200 (should be 0). */
  readonly failed: number;
  /** Cores the server process used meanwhile. */
  readonly serverCores: number;
  /** Microseconds of the server process's CPU per request. */
  readonly serverMicrosPerRequest: number;
  /** Microseconds of the load generator's CPU (the bench's process) per request. */
  readonly generatorMicrosPerRequest: number;
  /** Cores the deployment's role processes (Subject, IM, workers) used meanwhile. */
  readonly rolesCores: number;
  /** Microseconds of the role processes' CPU per request. */
  readonly rolesMicrosPerRequest: number;
}

/** The gateway rows' figures. */
export interface GatewayRun {
  /** Concurrent HTTP/1.1 keep-alive connections (and outstanding ZeroMQ requests of `zeromqAtConnections`). */
  readonly connections: number;
  /** Worker processes. */
  readonly workers: number;
  /** Measured runs of each row, alternated (gateway, floor, ZeroMQ, gateway, …); figures are their mean. */
  readonly rounds: number;
  /** Flows per second over HTTP, closed loop. */
  readonly flowsPerSecond: number;
  /** Milliseconds per POST at that load. */
  readonly p50_ms: number;
  /** The 99th percentile. */
  readonly p99_ms: number;
  /** POSTs that did not answer 200 (should be 0). */
  readonly failed: number;
  /** Cores the gateway process used meanwhile. */
  readonly gatewayCores: number;
  /** The gateway row in full (CPU per request of each process). */
  readonly gateway: HttpRow;
  /** A bare `Deno.serve` (fixed body, no ZManager) under the same generator. */
  readonly floor: HttpRow;
  /** The ZeroMQ generator's flows per second with `connections` requests outstanding, same deployment. */
  readonly zeromqAtConnections: number;
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

const r2 = (n: number) => Math.round(n * 100) / 100;
const r3 = (n: number) => Math.round(n * 1000) / 1000;

/** Runs `load` and the CPU seconds each of `pids` used meanwhile. */
async function measured(
  pids: readonly number[],
  load: () => Promise<HttpLoadRun>,
): Promise<[HttpLoadRun, number[]]> {
  const before = pids.map(cpuSeconds);
  const run = await load();
  return [run, pids.map((p, i) => cpuSeconds(p) - before[i])];
}

/** The mean of several runs of one server, as a row. */
function row(runs: [HttpLoadRun, number[]][]): HttpRow {
  const n = runs.reduce((a, [r]) => a + r.times.length, 0);
  const seconds = runs.reduce((a, [r]) => a + r.seconds, 0);
  const cpu = (i: number) => runs.reduce((a, [, c]) => a + c[i], 0);
  const roles = runs.reduce((a, [, c]) => a + c.slice(2).reduce((x, y) => x + y, 0), 0);
  const all = runs.flatMap(([r]) => [...r.times]).sort((a, b) => a - b);
  return {
    perSecond: Math.round(n / seconds),
    p50_ms: r3(percentile(all, 50)),
    p99_ms: r3(percentile(all, 99)),
    failed: runs.reduce((a, [r]) => a + r.failed, 0),
    serverCores: r2(cpu(0) / seconds),
    serverMicrosPerRequest: Math.round((cpu(0) / n) * 1e6),
    generatorMicrosPerRequest: Math.round((cpu(1) / n) * 1e6),
    rolesCores: r2(roles / seconds),
    rolesMicrosPerRequest: Math.round((roles / n) * 1e6),
  };
}

/**
 * Runs the 3-step flow through the gateway, the floor and the ZeroMQ generator at the same
 * concurrency, `rounds` times each, alternated, for `seconds` each (after a warm-up as long).
 */
export async function gatewayRun(
  seconds: number,
  workers = 2,
  connections = 64,
  rounds = 2,
): Promise<GatewayRun> {
  const port = freePort();
  const d = await spawnDeployment({ files: FILES, workers, args: ["--http", `127.0.0.1:${port}`] });
  const floorPort = freePort();
  const floor = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FLOOR, String(floorPort)],
    stdout: "piped",
    stdin: "null",
  }).spawn();
  try {
    const reader = floor.stdout.getReader();
    await reader.read(); // "listening"
    reader.releaseLock();
    void floor.stdout.cancel().catch(() => {});
    for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const [gatewayPid] = await rolePids(d.dir, "gateway");
    const roles: number[] = [];
    for (const role of ["subject", "integration-manager", "worker"]) {
      roles.push(...await rolePids(d.dir, role));
    }
    const load = (p: number, s: number) => () =>
      httpClosedLoop({
        hostname: "127.0.0.1",
        port: p,
        path: "/v1/flows/Bench3",
        body: JSON.stringify({ n: 1 }),
        connections,
        seconds: s,
      });
    // Warm-up, unmeasured: the gateway's and the roles' code optimized, the floor's too.
    await load(port, seconds)();
    await load(floorPort, Math.min(seconds, 1))();
    const gw: [HttpLoadRun, number[]][] = [];
    const bare: [HttpLoadRun, number[]][] = [];
    let zmqFlows = 0;
    for (let i = 0; i < rounds; i++) {
      gw.push(await measured([gatewayPid, Deno.pid, ...roles], load(port, seconds)));
      bare.push(await measured([floor.pid, Deno.pid, ...roles], load(floorPort, seconds)));
      // A generator of its own each time, closed after: its SUB socket would receive the gateway's
      // publications too, and its reactor then waits in-thread (`ROLE_SYNC_WAIT_MS` at a time),
      // holding up the HTTP load generator's I/O in this same process. New ids each time: the
      // Subject drops an id it has seen.
      const zmq = new Generator("Bench3", 1000 * (i + 1));
      try {
        await zmq.open(d);
        zmqFlows += await zmq.closedLoop(seconds, connections);
      } finally {
        await zmq.close();
      }
    }
    const gateway = row(gw);
    return {
      connections,
      workers,
      rounds,
      flowsPerSecond: gateway.perSecond,
      p50_ms: gateway.p50_ms,
      p99_ms: gateway.p99_ms,
      failed: gateway.failed,
      gatewayCores: gateway.serverCores,
      gateway,
      floor: row(bare),
      zeromqAtConnections: Math.round(zmqFlows / rounds),
    };
  } finally {
    try {
      floor.kill();
    } catch { /* already gone */ }
    await floor.status;
    await d.stop();
  }
}
