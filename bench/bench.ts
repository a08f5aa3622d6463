/**
 * `deno task bench`: the raw ZeroMQ ceiling of this machine (the project's own binding, one
 * hop between two processes) and end-to-end flows through real role processes, with the
 * ratio between the two. Prints a table; `--json FILE` writes the figures.
 *
 * The load generator talks the wire protocol on raw sockets (no client library), in this
 * process; the roles run as `start` runs them, each in its own process. The parts, one job each:
 * `raw.ts` (the raw ZeroMQ ceiling), `generator.ts` (the load generator), `proc.ts` (CPU and
 * memory from `/proc`), `bare.ts` (the bare pipeline), `report.ts` (the figures and the table);
 * `bench_peer.ts` is the other process of the raw and bare measurements.
 *
 * @module
 */

import { type Deployment, rolePids, spawnDeployment } from "../testing/deployment.ts";
import { delay } from "../src/_async.ts";
import { libzmq } from "../src/zmq/ffi.ts";
import type { CurveClientKeys } from "../src/zmq/curve.ts";
import { writeKeyPair } from "../src/roles/security.ts";
import { parseKeyFile } from "../src/roles/zap.ts";
import { barePipeline } from "./bare.ts";
import { gatewayRun } from "./gateway_bench.ts";
import { Generator } from "./generator.ts";
import { contextSwitches, kernelMemoryMonitors, peakRssMiB, roleProcesses, withCpu } from "./proc.ts";
import { machine, nodeZeromq, rawPubSub, rawPushPull, rawRoundTrip } from "./raw.ts";
import { type BenchResult, type FlowRun, percentile, printTable, round2, round3, sum } from "./report.ts";

export type { BenchResult, FlowRun } from "./report.ts";

/** Options of {@linkcode runBench}. */
export interface BenchOptions {
  /** Write the figures as JSON to this file. */
  readonly json?: string;
  /** Seconds of each closed-loop measurement. @default {3} */
  readonly seconds?: number;
  /** Print progress lines. */
  readonly progress?: (line: string) => void;
}

const FILES = ["./component/flows.ini", "./component/mapping.ini"].map((f) =>
  decodeURIComponent(new URL(f, import.meta.url).pathname)
);

/**
 * A deployment of the bench flows, once every worker has joined; with `curve`, over tcp on
 * loopback with CURVE keys (its `curve` field: the generator's keys).
 */
export async function deploy(
  workers: number,
  sandbox = true,
  curve = false,
): Promise<Deployment & { curve?: CurveClientKeys }> {
  if (curve) return await deployCurve(workers);
  const d = await spawnDeployment({ files: FILES, workers, args: sandbox ? [] : ["--no-sandbox"] });
  for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) await delay(50);
  return d;
}

async function deployCurve(workers: number): Promise<Deployment & { curve: CurveClientKeys }> {
  const keys = await Deno.makeTempDir({ prefix: "zmk" });
  await writeKeyPair(`${keys}/hub`);
  const bench = await writeKeyPair(`${keys}/bench`);
  await Deno.mkdir(`${keys}/allow`);
  await Deno.copyFile(`${keys}/bench.pub`, `${keys}/allow/bench.pub`);
  const d = await spawnDeployment({
    files: FILES,
    workers,
    transport: "tcp",
    args: [
      "--curve-secret-key",
      `${keys}/hub.key`,
      ...["services", "workers", "subscribers"].flatMap((k) => [`--curve-allow-${k}`, `${keys}/allow`]),
    ],
  });
  for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) await delay(50);
  const secret = parseKeyFile(await Deno.readTextFile(`${keys}/bench.key`), "bench.key");
  const serverKey = parseKeyFile(await Deno.readTextFile(`${keys}/hub.pub`), "hub.pub");
  const stop = d.stop;
  return Object.assign(d, {
    curve: { publicKey: bench, secretKey: secret, serverKey },
    stop: async () => {
      const code = await stop();
      await Deno.remove(keys, { recursive: true });
      return code;
    },
  });
}

async function flowRun(
  steps: number,
  workers: number,
  seconds: number,
  latency: boolean,
  sandbox = true,
  curve = false,
): Promise<
  FlowRun & {
    latency?: {
      rate: number;
      p50: number;
      p90: number;
      p99: number;
      n: number;
      sequential: number[];
      busyCores: number;
      monitorCores: number | null;
      low: number[];
      lowRate: number;
      idleCpu: number;
      idleSwitches: number;
    };
  }
> {
  const d = await deploy(workers, sandbox, curve);
  const g = new Generator(`Bench${steps}`);
  try {
    await g.open(d);
    const pids = await roleProcesses(d.dir);
    // The load generator (this process) shares the machine with the roles: shown beside them.
    pids.push(["load generator", Deno.pid]);
    // Steady state, as a long-running router sees it: throughput climbs over the first 5-10 s
    // after start (functions still being optimized, V8's young generation growing), so the same
    // load runs first; its figure is kept as the cold one.
    const warmUpFlowsPerSecond = await g.closedLoop(WARM_UP_SECONDS);
    const all = pids.map(([, pid]) => pid);
    const [flowsPerSecond, cores] = await withCpu(all, () => g.closedLoop(seconds));
    const roles: Record<string, { cpu: number; rssMiB: number }> = {};
    pids.forEach(([role, pid], i) => {
      const name = role === "worker"
        ? `worker ${pids.slice(0, i).filter(([r]) => r === "worker").length + 1}`
        : role;
      roles[name] = {
        cpu: round2(cores[i]),
        rssMiB: peakRssMiB(pid),
      };
    });
    let lat;
    let sequential: number[] | undefined;
    if (latency) {
      sequential = await g.sequential(500);
      const rate = Math.round(flowsPerSecond / 2);
      const monitors = kernelMemoryMonitors();
      const [rtt, busy] = await withCpu([...all, ...monitors], () => g.openLoop(rate, seconds));
      const lowRate = Math.round(flowsPerSecond / 10);
      const low = await g.openLoop(lowRate, seconds);
      // The deployment idle: what an edge box pays while nothing happens. Watched from 1.5 s after
      // the load, once the roles' reactors have handed their waits off-thread (after 1 s idle).
      const roleOnly = pids.filter(([role]) => role !== "load generator").map(([, pid]) => pid);
      await delay(1500);
      const switches = () => sum(roleOnly.map(contextSwitches));
      const switchesBefore = switches();
      const [, idle] = await withCpu(roleOnly, () => delay(IDLE_SECONDS * 1000));
      const idleSwitches = (switches() - switchesBefore) / IDLE_SECONDS;
      lat = {
        rate,
        p50: percentile(rtt, 50),
        p90: percentile(rtt, 90),
        p99: percentile(rtt, 99),
        n: rtt.length,
        sequential,
        busyCores: round2(sum(busy.slice(0, all.length))),
        monitorCores: monitors.length ? round2(sum(busy.slice(all.length))) : null,
        low,
        lowRate,
        idleCpu: round2(sum(idle)),
        idleSwitches: Math.round(idleSwitches),
      };
    }
    return { steps, workers, sandbox, flowsPerSecond, warmUpFlowsPerSecond, roles, latency: lat };
  } finally {
    await g.close();
    await d.stop();
  }
}

/** Seconds the main deployment is watched idle after its load. */
const IDLE_SECONDS = 3;

/** Seconds of closed-loop load each deployment runs before its peak is measured. */
const WARM_UP_SECONDS = 8;

/** Runs the benchmark and prints the table; returns the figures. */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const say = options.progress ?? ((l: string) => console.error(l));
  const seconds = options.seconds ?? 3;
  const m = machine();
  const dir = await Deno.makeTempDir({ prefix: "zmb" });
  say("bench 1/11: raw PUSH->PULL one hop between two processes (ipc)");
  const rawHop = await rawPushPull(dir, 1_000_000, "1");
  const rawHop3 = await rawPushPull(dir, 500_000, "3");
  say("bench 2/11: raw PUB->SUB one hop between two processes (ipc)");
  const rawPub = await rawPubSub(dir, 300_000);
  say("bench 3/11: raw round trips between two processes (ipc), and zeromq.js on Node if present");
  const rtt = await rawRoundTrip(dir, 2000);
  const idleRtt = await rawRoundTrip(dir, 200, 2);
  const inThreadRtt = await rawRoundTrip(dir, 2000, 0, true);
  const node = await nodeZeromq(dir);
  await Deno.remove(dir, { recursive: true });
  const runs: Awaited<ReturnType<typeof flowRun>>[] = [];
  let stage = 4;
  // The handler sandbox (the default) on, then the main shape again with it off, one after the
  // other so that the machine's drift touches both alike.
  const shapes: [number, number, boolean][] = [[1, 1, true], [1, 2, true], [3, 1, true], [3, 2, true], [
    3,
    2,
    false,
  ]];
  for (const [steps, workers, sandbox] of shapes) {
    const latency = steps === 3 && workers === 2 && sandbox;
    say(
      `bench ${stage++}/11: ${steps}-step flow, ${workers} worker${workers > 1 ? "s" : ""}${
        sandbox ? "" : ", --no-sandbox"
      }, closed loop${latency ? " then open loop at 50% of peak" : ""}`,
    );
    runs.push(await flowRun(steps, workers, seconds, latency, sandbox));
  }
  const main = runs.find((r) => r.steps === 3 && r.workers === 2 && r.sandbox)!;
  const unboxed = runs.find((r) => r.steps === 3 && r.workers === 2 && !r.sandbox)!;
  say("bench 9/11: 3-step flow, 2 workers, tcp with CURVE on loopback, closed loop");
  const curve = libzmq().curve ? await flowRun(3, 2, seconds, false, true, true) : undefined;
  say("bench 10/11: the bare pipeline (the deployment's shape, no framework) at the same offered rates");
  const bare = await barePipeline([main.latency!.rate, main.latency!.lowRate], seconds);
  say(
    "bench 11/11 (gateway): 3-step flow over HTTP/1.1 keep-alive, 64 connections, 2 workers, closed loop; " +
      "alternated with a bare Deno.serve and the ZeroMQ generator at 64 outstanding",
  );
  const gateway = await gatewayRun(seconds);
  const toZmq = Math.round((gateway.flowsPerSecond / main.flowsPerSecond) * 1000) / 1000;
  say(
    `  gateway: ${gateway.flowsPerSecond} flows/s (${toZmq} of the ZeroMQ client's ${
      Math.round(main.flowsPerSecond)
    }), p50 ${gateway.p50_ms} ms, p99 ${gateway.p99_ms} ms; bare Deno.serve ${gateway.floor.perSecond} req/s; ` +
      `ZeroMQ at ${gateway.connections} outstanding ${gateway.zeromqAtConnections} flows/s`,
  );
  const result: BenchResult = {
    machine: m,
    raw_hop_msgs_per_s: Math.round(rawHop),
    raw_hop_3frame_msgs_per_s: Math.round(rawHop3),
    raw_pubsub_msgs_per_s: Math.round(rawPub),
    raw_rtt_p50_ms: round3(percentile(rtt, 50)),
    raw_rtt_p99_ms: round3(percentile(rtt, 99)),
    raw_rtt_idle_p50_ms: round3(percentile(idleRtt, 50)),
    raw_rtt_in_thread_p50_ms: round3(percentile(inThreadRtt, 50)),
    raw_rtt_in_thread_p99_ms: round3(percentile(inThreadRtt, 99)),
    sequential_p50_ms: round3(percentile(main.latency!.sequential ?? [], 50)),
    sequential_p99_ms: round3(percentile(main.latency!.sequential ?? [], 99)),
    node_zeromq: node,
    flows_per_s: Math.round(main.flowsPerSecond),
    curve_flows_per_s: curve ? Math.round(curve.flowsPerSecond) : null,
    curve_cost: curve ? Math.round((main.flowsPerSecond / curve.flowsPerSecond) * 100) / 100 : null,
    no_sandbox_flows_per_s: Math.round(unboxed.flowsPerSecond),
    sandbox_cost: Math.round((1 - main.flowsPerSecond / unboxed.flowsPerSecond) * 1000) / 1000,
    ratio: Math.round((main.flowsPerSecond / rawHop) * 10000) / 10000,
    p50_ms: round3(main.latency!.p50),
    p90_ms: round3(main.latency!.p90),
    p99_ms: round3(main.latency!.p99),
    latency_rate: main.latency!.rate,
    busy_cores_at_50pct: main.latency!.busyCores,
    kdamond_cores_at_50pct: main.latency!.monitorCores,
    latency_rate_10pct: main.latency!.lowRate,
    p50_ms_at_10pct: round3(percentile(main.latency!.low, 50)),
    p99_ms_at_10pct: round3(percentile(main.latency!.low, 99)),
    idle_cpu_cores: main.latency!.idleCpu,
    idle_context_switches_per_s: main.latency!.idleSwitches,
    bare_sequential_p50_ms: round3(percentile(bare.sequential, 50)),
    bare_p50_ms: round3(percentile(bare.runs[0].rtt, 50)),
    bare_p99_ms: round3(percentile(bare.runs[0].rtt, 99)),
    bare_busy_cores: bare.runs[0].busyCores,
    bare_p50_ms_at_10pct: round3(percentile(bare.runs[1].rtt, 50)),
    bare_p99_ms_at_10pct: round3(percentile(bare.runs[1].rtt, 99)),
    gateway: { ...gateway, ratio_to_zeromq_client: toZmq },
    seconds,
    warm_up_seconds: WARM_UP_SECONDS,
    runs: runs.map(({ latency: _l, ...r }) => ({
      ...r,
      flowsPerSecond: Math.round(r.flowsPerSecond),
      warmUpFlowsPerSecond: Math.round(r.warmUpFlowsPerSecond),
    })),
  };
  say("bench: done");
  printTable(result);
  if (options.json) await Deno.writeTextFile(options.json, JSON.stringify(result, null, 2) + "\n");
  return result;
}
