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
import { CLOSED_LOOP_WINDOW, Generator } from "./generator.ts";
import { moleculerRun } from "./moleculer.ts";
import { contextSwitches, kernelMemoryMonitors, peakRssMiB, roleProcesses, withCpu } from "./proc.ts";
import {
  bareFigures,
  EFFICIENCY_RATE,
  goals,
  latencyFigures,
  type LatencyMeasures,
  roundTrips,
} from "./figures.ts";
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
  imInSubject = false,
): Promise<Deployment & { curve?: CurveClientKeys }> {
  if (curve) return await deployCurve(workers);
  const d = await spawnDeployment({
    files: FILES,
    workers,
    args: [
      ...(sandbox ? [] : ["--no-sandbox"]),
      ...(imInSubject ? ["--integration-manager-in-subject", "on"] : []),
    ],
  });
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

/** How {@linkcode flowRun} deploys and what it measures beyond the peak. */
interface FlowRunOptions {
  /** Measure latency too: one at a time, open loops, CPU per flow at 10,000/s, idle. */
  readonly latency?: boolean;
  /** Handlers in sandbox threads. @default {true} */
  readonly sandbox?: boolean;
  /** tcp with CURVE on loopback. */
  readonly curve?: boolean;
  /** `integration_manager_in_subject = on`. */
  readonly imInSubject?: boolean;
  /** The open loops' offered rates; by default 50% and 10% of this run's own peak. */
  readonly rates?: { readonly rate: number; readonly lowRate: number };
}

async function flowRun(
  steps: number,
  workers: number,
  seconds: number,
  options: FlowRunOptions = {},
): Promise<FlowRun & { latency?: LatencyMeasures }> {
  const { latency = false, sandbox = true, curve = false, imInSubject = false } = options;
  const d = await deploy(workers, sandbox, curve, imInSubject);
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
      const rate = options.rates?.rate ?? Math.round(flowsPerSecond / 2);
      const monitors = kernelMemoryMonitors();
      const [rtt, busy] = await withCpu([...all, ...monitors], () => g.openLoop(rate, seconds));
      const lowRate = options.rates?.lowRate ?? Math.round(flowsPerSecond / 10);
      const [low, lowBusy] = await withCpu(all, () => g.openLoop(lowRate, seconds));
      // The efficiency figure: CPU per flow at a fixed 10,000 flows/s (issue 23).
      const [at10k, at10kCores] = await withCpu(all, () => g.openLoop(EFFICIENCY_RATE, seconds));
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
        rtt,
        sequential,
        busyCores: round2(sum(busy.slice(0, all.length))),
        monitorCores: monitors.length ? round2(sum(busy.slice(all.length))) : null,
        low,
        lowRate,
        lowBusyCores: round2(sum(lowBusy)),
        at10k,
        at10kCores: sum(at10kCores),
        // `all` ends with the load generator (this process).
        at10kRoleCores: sum(at10kCores.slice(0, -1)),
        idleCpu: round2(sum(idle)),
        idleSwitches: Math.round(idleSwitches),
      };
    }
    return {
      steps,
      workers,
      sandbox,
      imInSubject,
      flowsPerSecond,
      warmUpFlowsPerSecond,
      roles,
      latency: lat,
    };
  } finally {
    await g.close();
    await d.stop();
  }
}

/**
 * The stages `runBench` announces: the raw hops (3), the closed-loop shapes (5), the other two
 * placements, CURVE, the bare pipeline, Moleculer, the gateway.
 */
const STAGES = 14;

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
  let stage = 0;
  /** Announces the next of the bench's {@linkcode STAGES} stages. */
  const step = (what: string) => say(`bench ${++stage}/${STAGES}: ${what}`);
  step("raw PUSH->PULL one hop between two processes (ipc)");
  const rawHop = await rawPushPull(dir, 1_000_000, "1");
  const rawHop3 = await rawPushPull(dir, 500_000, "3");
  step("raw PUB->SUB one hop between two processes (ipc)");
  const rawPub = await rawPubSub(dir, 300_000);
  step("raw round trips between two processes (ipc), and zeromq.js on Node if present");
  const rtt = await rawRoundTrip(dir, 2000);
  const idleRtt = await rawRoundTrip(dir, 200, 2);
  const inThreadRtt = await rawRoundTrip(dir, 2000, 0, true);
  const node = await nodeZeromq(dir);
  await Deno.remove(dir, { recursive: true });
  const runs: Awaited<ReturnType<typeof flowRun>>[] = [];
  // The handler sandbox (the default) on, then the main shape again with it off, one after the
  // other so that the machine's drift touches both alike.
  const shapes: [number, number, boolean][] = [[1, 1, true], [1, 2, true], [3, 1, true], [3, 2, true], [
    3,
    2,
    false,
  ]];
  for (const [steps, workers, sandbox] of shapes) {
    const latency = steps === 3 && workers === 2 && sandbox;
    step(
      `${steps}-step flow, ${workers} worker${workers > 1 ? "s" : ""}${
        sandbox ? "" : ", --no-sandbox"
      }, closed loop${latency ? " then open loop at 50% of peak" : ""}`,
    );
    runs.push(await flowRun(steps, workers, seconds, { latency, sandbox }));
  }
  const main = runs.find((r) => r.steps === 3 && r.workers === 2 && r.sandbox)!;
  const unboxed = runs.find((r) => r.steps === 3 && r.workers === 2 && !r.sandbox && !r.imInSubject)!;
  // The other placements, at the default's offered rates so that all compare with the bare pipeline's.
  const placement = async (what: string, sandbox: boolean) => {
    step(`3-step flow, 2 workers, ${what}; open loops at the rates above`);
    const run = await flowRun(3, 2, seconds, {
      latency: true,
      sandbox,
      imInSubject: true,
      rates: { rate: main.latency!.rate, lowRate: main.latency!.lowRate },
    });
    runs.push(run);
    return run;
  };
  const inSubject = await placement("the IM in the Subject's process", true);
  const fastest = await placement("--no-sandbox and the IM in the Subject's process", false);
  step("3-step flow, 2 workers, tcp with CURVE on loopback, closed loop");
  const curve = libzmq().curve ? await flowRun(3, 2, seconds, { curve: true }) : undefined;
  step("the bare pipeline (the deployment's shape, no framework) at the same offered rates");
  const bare = await barePipeline([main.latency!.rate, main.latency!.lowRate, EFFICIENCY_RATE], seconds);
  step("Moleculer (TCP transporter, caller + 2 worker nodes), the same chain of 3 actions");
  const moleculer = await moleculerRun(seconds, WARM_UP_SECONDS, [EFFICIENCY_RATE]).catch((e) => {
    say(`  Moleculer: not measured (${e instanceof Error ? e.message : e})`);
    return null;
  });
  step(
    "the gateway: 3-step flow over HTTP/1.1 keep-alive, 64 connections, 2 workers, closed loop; " +
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
  const zmanager: BenchResult["zmanager"] = {
    ...latencyFigures(main, rawHop),
    no_sandbox_peak_flows_per_s: Math.round(unboxed.flowsPerSecond),
    sandbox_cost: Math.round((1 - main.flowsPerSecond / unboxed.flowsPerSecond) * 1000) / 1000,
    curve_peak_flows_per_s: curve ? Math.round(curve.flowsPerSecond) : null,
    curve_cost: curve ? Math.round((main.flowsPerSecond / curve.flowsPerSecond) * 100) / 100 : null,
    runs: runs.map(({ latency: _l, ...r }) => ({
      ...r,
      flowsPerSecond: Math.round(r.flowsPerSecond),
      warmUpFlowsPerSecond: Math.round(r.warmUpFlowsPerSecond),
    })),
  };
  const bareRounded = bareFigures(bare);
  const bareExact = bareFigures(bare, true);
  const result: BenchResult = {
    machine: m,
    seconds,
    warm_up_seconds: WARM_UP_SECONDS,
    closed_loop_window: CLOSED_LOOP_WINDOW,
    raw: {
      hop_msgs_per_s: Math.round(rawHop),
      hop_3frame_msgs_per_s: Math.round(rawHop3),
      pubsub_msgs_per_s: Math.round(rawPub),
      one_at_a_time: roundTrips(rtt),
      one_at_a_time_after_idle_p50_ms: round3(percentile(idleRtt, 50)),
      one_at_a_time_in_thread: roundTrips(inThreadRtt),
      node_zeromq: node,
    },
    zmanager,
    zmanager_im_in_subject: latencyFigures(inSubject, rawHop),
    zmanager_no_sandbox_im_in_subject: latencyFigures(fastest, rawHop),
    bare: bareRounded,
    moleculer,
    gateway: { ...gateway, ratio_to_zeromq_client: toZmq },
    // Judged on the figures unrounded (see `latencyFigures`).
    goals: goals(latencyFigures(main, rawHop, true), bareExact, moleculer),
    goals_im_in_subject: goals(latencyFigures(inSubject, rawHop, true), bareExact, moleculer),
    goals_no_sandbox_im_in_subject: goals(latencyFigures(fastest, rawHop, true), bareExact, moleculer),
  };
  say("bench: done");
  printTable(result);
  if (options.json) await Deno.writeTextFile(options.json, JSON.stringify(result, null, 2) + "\n");
  return result;
}
