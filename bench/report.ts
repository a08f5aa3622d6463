/**
 * The benchmark's figures: what a run measures (`BenchResult`, also written as JSON with
 * `--json`), the arithmetic on them, and the table `deno task bench` prints.
 *
 * @module
 */

import { REQUEST_BYTES } from "./bench_peer.ts";
import { CLOSED_LOOP_WINDOW } from "./generator.ts";
import type { GatewayRun } from "./gateway_bench.ts";

/** One end-to-end measurement. */
export interface FlowRun {
  /** Steps in the flow. */
  readonly steps: number;
  /** Worker processes. */
  readonly workers: number;
  /** Handlers ran in sandbox threads (the default), or on the workers' threads (`--no-sandbox`). */
  readonly sandbox: boolean;
  /** Flows per second at peak (closed loop). */
  readonly flowsPerSecond: number;
  /** Flows per second over the warm-up: the same load during the first seconds after start. */
  readonly warmUpFlowsPerSecond: number;
  /** Per role, and the load generator: CPU use (share of one core) and peak RSS (MiB) during the peak run. */
  readonly roles: Record<string, { cpu: number; rssMiB: number }>;
}

/** The figures of a benchmark run. */
export interface BenchResult {
  /** The machine. */
  readonly machine: { cores: number; cpu: string; deno: string; libzmq: string; os: string };
  /**
   * PUSH→PULL one hop between two processes over ipc, messages per second: single-frame
   * messages as large as a request's three frames together. The ceiling `ratio` divides by.
   */
  readonly raw_hop_msgs_per_s: number;
  /** The same with a request's three frames as a three-frame message (three `zmq_recv` each). */
  readonly raw_hop_3frame_msgs_per_s: number;
  /** PUB→SUB one hop between two processes over ipc, messages per second. */
  readonly raw_pubsub_msgs_per_s: number;
  /** Round trip between two processes over ipc (ROUTER→DEALER echo), 2,000 in a row. */
  readonly raw_rtt_p50_ms: number;
  /** 99th percentile of the same. */
  readonly raw_rtt_p99_ms: number;
  /** Raw round trip p50 when each message follows 2 ms of idleness (both processes asleep). */
  readonly raw_rtt_idle_p50_ms: number;
  /** Raw round trip p50 with both ends waiting in-thread, as the roles do (`ROLE_SYNC_WAIT_MS`). */
  readonly raw_rtt_in_thread_p50_ms: number;
  /** 99th percentile of the same. */
  readonly raw_rtt_in_thread_p99_ms: number;
  /** 3-step flow, 2 workers, one request at a time back to back: p50 and p99 round trip. */
  readonly sequential_p50_ms: number;
  /** See `sequential_p50_ms`. */
  readonly sequential_p99_ms: number;
  /** zeromq.js on Node, same shapes, for context; `null` when Node or its packages are missing. */
  readonly node_zeromq: { push_pull_msgs_per_s: number; rtt_p50_ms: number; rtt_p99_ms: number } | null;
  /** 3-step flow, 2 workers, closed-loop peak. */
  readonly flows_per_s: number;
  /** The 3-step flow with 2 workers over tcp with CURVE on loopback, peak flows per second. */
  readonly curve_flows_per_s: number | null;
  /** The cost of CURVE on tcp: ipc flows/s divided by tcp + CURVE flows/s (3 steps, 2 workers). */
  readonly curve_cost: number | null;
  /** The same, 3-step flow and 2 workers, with `--no-sandbox`. */
  readonly no_sandbox_flows_per_s: number;
  /** What the handler sandbox costs: `1 - flows_per_s / no_sandbox_flows_per_s` (negative: nothing measurable). */
  readonly sandbox_cost: number;
  /** `flows_per_s / raw_hop_msgs_per_s`. */
  readonly ratio: number;
  /** Round trip at 50% of peak (3-step flow, 2 workers), open loop. */
  readonly p50_ms: number;
  /** 90th percentile. */
  readonly p90_ms: number;
  /** 99th percentile. */
  readonly p99_ms: number;
  /** Offered rate of the latency run. */
  readonly latency_rate: number;
  /**
   * CPU in use on the whole machine's processes of the run (roles and load generator, in cores)
   * during the run at 50% of peak: how much of the machine is left, the queueing that latency
   * at that rate is made of.
   */
  readonly busy_cores_at_50pct: number;
  /**
   * CPU the kernel's memory monitor (`kdamond` threads, Linux DAMON) used during the run at 50%
   * of peak, in cores; `null` when the machine runs none. On this project's 2-vCPU guests it takes
   * a CPU for 20-35 ms every ~540 ms, which is when the latency spikes (docs/performance.md).
   */
  readonly kdamond_cores_at_50pct: number | null;
  /** Offered rate of the run at 10% of peak. */
  readonly latency_rate_10pct: number;
  /** Round trip at 10% of peak, open loop: p50. */
  readonly p50_ms_at_10pct: number;
  /** 99th percentile of the same. */
  readonly p99_ms_at_10pct: number;
  /** The same deployment idle, from 1.5 s after the load: CPU of its role processes together, in cores. */
  readonly idle_cpu_cores: number;
  /** The same: context switches per second of all the role processes' threads together. */
  readonly idle_context_switches_per_s: number;
  /**
   * The bare pipeline: the deployment's shape (four hops, five processes) with relays that only
   * forward each message, libzmq's loop called from Deno; one message at a time: p50.
   */
  readonly bare_sequential_p50_ms: number;
  /** The bare pipeline open loop at `latency_rate`: p50. */
  readonly bare_p50_ms: number;
  /** 99th percentile of the same. */
  readonly bare_p99_ms: number;
  /** CPU its five processes used meanwhile, in cores. */
  readonly bare_busy_cores: number;
  /** The bare pipeline open loop at `latency_rate_10pct`: p50. */
  readonly bare_p50_ms_at_10pct: number;
  /** 99th percentile of the same. */
  readonly bare_p99_ms_at_10pct: number;
  /** Every end-to-end run. */
  readonly runs: readonly FlowRun[];
  /** The 3-step flow through the HTTP gateway (64 keep-alive connections), and its share of `flows_per_s`. */
  readonly gateway?: GatewayRun & { readonly ratio_to_zeromq_client: number };
  /** Seconds each closed-loop peak was measured over. */
  readonly seconds: number;
  /** Seconds of the same load each deployment ran, unmeasured, before its peak was measured. */
  readonly warm_up_seconds: number;
}

/** The sum of `xs`. */
export const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
/** `n` to two decimals. */
export const round2 = (n: number): number => Math.round(n * 100) / 100;

/** A whole number with thousands separators. */
export const fmt = (n: number): string => Math.round(n).toLocaleString("en-US");

/** The `p`th percentile of `sorted` (ascending); `NaN` when empty. */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `n` to three decimals. */
export function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/** The gateway's rows of the table (none when the run has no gateway figures). */
function gatewayRows(r: BenchResult): string[] {
  const g = r.gateway;
  if (!g) return [];
  const cpu = (x: GatewayRun["floor"]) =>
    `${x.serverMicrosPerRequest} / ${x.generatorMicrosPerRequest} / ${x.rolesMicrosPerRequest} µs`;
  return [
    `| HTTP gateway: 3-step flow, ${g.connections} keep-alive connections, closed loop: flows/s; p50 / p99 | ${
      fmt(g.flowsPerSecond)
    } flows/s (${g.ratio_to_zeromq_client.toFixed(3)} of the ZeroMQ peak); ${g.p50_ms.toFixed(2)} / ${
      g.p99_ms.toFixed(2)
    } ms |`,
    `| the same deployment, ZeroMQ generator with ${g.connections} requests outstanding (the row's ceiling) | ${
      fmt(g.zeromqAtConnections)
    } flows/s |`,
    `| floor: bare Deno.serve (fixed body), same load generator: req/s; p50 / p99 | ${
      fmt(g.floor.perSecond)
    } req/s; ${g.floor.p50_ms.toFixed(2)} / ${g.floor.p99_ms.toFixed(2)} ms |`,
    `| CPU per request, gateway row: gateway / load generator / roles | ${cpu(g.gateway)} |`,
    `| CPU per request, floor row: Deno.serve / load generator / roles (idle) | ${cpu(g.floor)} |`,
  ];
}

/** Prints the figures as a Markdown table. */
export function printTable(r: BenchResult): void {
  const m = r.machine;
  const lines = [
    `machine: ${m.cores} cores, ${m.cpu}, ${m.os}; Deno ${m.deno}; libzmq ${m.libzmq}`,
    "",
    "| measurement | figure |",
    "| --- | ---: |",
    `| raw PUSH->PULL, one hop, two processes, ipc, one ${REQUEST_BYTES}-byte frame | ${
      fmt(r.raw_hop_msgs_per_s)
    } msgs/s |`,
    `| raw PUSH->PULL, the same bytes as three frames | ${fmt(r.raw_hop_3frame_msgs_per_s)} msgs/s |`,
    `| raw PUB->SUB, one hop, two processes, ipc | ${fmt(r.raw_pubsub_msgs_per_s)} msgs/s |`,
    `| raw round trip, two processes, ipc: p50 / p99 | ${r.raw_rtt_p50_ms.toFixed(3)} / ${
      r.raw_rtt_p99_ms.toFixed(3)
    } ms |`,
    `| raw round trip, each after 2 ms idle: p50 | ${r.raw_rtt_idle_p50_ms.toFixed(3)} ms |`,
    `| raw round trip, both ends waiting in-thread as the roles do: p50 / p99 | ${
      r.raw_rtt_in_thread_p50_ms.toFixed(3)
    } / ${r.raw_rtt_in_thread_p99_ms.toFixed(3)} ms |`,
    ...(r.node_zeromq
      ? [
        `| zeromq.js on Node: PUSH->PULL, one hop, two processes | ${
          fmt(r.node_zeromq.push_pull_msgs_per_s)
        } msgs/s |`,
        `| zeromq.js on Node: REQ/REP round trip p50 / p99 | ${r.node_zeromq.rtt_p50_ms.toFixed(3)} / ${
          r.node_zeromq.rtt_p99_ms.toFixed(3)
        } ms |`,
      ]
      : ["| zeromq.js on Node | not measured (Node or its packages missing) |"]),
    ...r.runs.map((x) =>
      `| ${x.steps}-step flow, ${x.workers} worker${x.workers > 1 ? "s" : ""}${
        x.sandbox ? "" : ", --no-sandbox"
      }, peak (closed loop) | ${fmt(x.flowsPerSecond)} flows/s (first ${r.warm_up_seconds} s: ${
        fmt(x.warmUpFlowsPerSecond)
      }) |`
    ),
    `| the handler sandbox's cost: 3-step/2-worker peak, on vs --no-sandbox | ${
      (r.sandbox_cost * 100).toFixed(1)
    }% (${fmt(r.flows_per_s)} vs ${fmt(r.no_sandbox_flows_per_s)} flows/s) |`,
    `| ratio: 3-step/2-worker flows/s to raw one-hop msgs/s | ${r.ratio.toFixed(4)} |`,
    r.curve_flows_per_s === null || r.curve_cost === null
      ? "| 3-step flow, 2 workers, tcp + CURVE on loopback | not measured (no libzmq with CURVE: see doctor) |"
      : `| 3-step flow, 2 workers, tcp + CURVE on loopback, peak (closed loop) | ${
        fmt(r.curve_flows_per_s)
      } flows/s: ipc is ${r.curve_cost.toFixed(2)}x that |`,
    `| round trip at 50% of peak (${fmt(r.latency_rate)} flows/s offered): p50 / p90 / p99 | ${
      r.p50_ms.toFixed(2)
    } / ${r.p90_ms.toFixed(2)} / ${r.p99_ms.toFixed(2)} ms |`,
    `| CPU busy meanwhile (roles and load generator, of ${m.cores} cores) | ${
      r.busy_cores_at_50pct.toFixed(2)
    } cores |`,
    ...(r.kdamond_cores_at_50pct === null ? [] : [
      `| the kernel's memory monitor (kdamond) meanwhile | ${r.kdamond_cores_at_50pct.toFixed(2)} cores |`,
    ]),
    `| round trip at 10% of peak (${fmt(r.latency_rate_10pct)} flows/s offered): p50 / p99 | ${
      r.p50_ms_at_10pct.toFixed(2)
    } / ${r.p99_ms_at_10pct.toFixed(2)} ms |`,
    `| 3-step flow, one request at a time back to back: p50 / p99 | ${r.sequential_p50_ms.toFixed(2)} / ${
      r.sequential_p99_ms.toFixed(2)
    } ms |`,
    `| bare pipeline, same shape, relays only: one at a time p50 | ${
      r.bare_sequential_p50_ms.toFixed(2)
    } ms |`,
    `| bare pipeline at ${fmt(r.latency_rate)} /s: p50 / p99; CPU busy | ${r.bare_p50_ms.toFixed(2)} / ${
      r.bare_p99_ms.toFixed(2)
    } ms; ${r.bare_busy_cores.toFixed(2)} cores |`,
    `| bare pipeline at ${fmt(r.latency_rate_10pct)} /s: p50 / p99 | ${r.bare_p50_ms_at_10pct.toFixed(2)} / ${
      r.bare_p99_ms_at_10pct.toFixed(2)
    } ms |`,
    `| the deployment idle: CPU of its roles / context switches | ${r.idle_cpu_cores.toFixed(2)} cores / ${
      fmt(r.idle_context_switches_per_s)
    } per s |`,
    ...gatewayRows(r),
    "",
    `Peaks: ${
      fmt(CLOSED_LOOP_WINDOW)
    } requests outstanding for ${r.seconds} s, after the same load for ${r.warm_up_seconds} s (the "first" figure).`,
    "CPU (cores) and peak RSS per process, 3-step flow, 2 workers, at peak:",
    ...Object.entries(r.runs.find((x) => x.steps === 3 && x.workers === 2 && x.sandbox)!.roles).map((
      [role, v],
    ) => `  ${role.padEnd(20)} cpu ${v.cpu.toFixed(2)}  rss ${v.rssMiB.toFixed(1)} MiB`),
  ];
  console.log(lines.join("\n"));
}
