/**
 * The benchmark's result: its types (`BenchResult`, also written as JSON with `--json`), how one
 * goal is judged, small arithmetic, and the table `deno task bench` prints. The figures and goals
 * are made from what a run measured in `figures.ts`.
 *
 * @module
 */

import { REQUEST_BYTES } from "./bench_peer.ts";
import type { GatewayRun } from "./gateway_bench.ts";
import type { MoleculerRun } from "./moleculer.ts";

/** One end-to-end measurement. */
export interface FlowRun {
  /** Steps in the flow. */
  readonly steps: number;
  /** Worker processes. */
  readonly workers: number;
  /** Handlers ran in sandbox threads (the default), or on the workers' threads (`--no-sandbox`). */
  readonly sandbox: boolean;
  /** The IM ran in the Subject's process (`integration_manager_in_subject`). */
  readonly imInSubject: boolean;
  /** Flows per second at peak (closed loop). */
  readonly flowsPerSecond: number;
  /** Flows per second over the warm-up: the same load during the first seconds after start. */
  readonly warmUpFlowsPerSecond: number;
  /** Per role, and the load generator: CPU use (share of one core) and peak RSS (MiB) during the peak run. */
  readonly roles: Record<string, { cpu: number; rssMiB: number }>;
}

/** A round-trip distribution's two figures, in milliseconds. */
export interface RoundTrip {
  /** Median round trip. */
  readonly p50_ms: number;
  /** 99th percentile. */
  readonly p99_ms: number;
}

/** An open-loop run: requests offered at a fixed rate, whatever comes back. */
export interface OpenLoop extends RoundTrip {
  /** Requests offered per second. */
  readonly offered_per_s: number;
  /** CPU of all the run's processes together (the load generator included), in cores. */
  readonly busy_cores: number;
  /** `busy_cores` per completed flow: µs of CPU (all processes) per flow. */
  readonly cpu_us_per_flow: number;
}

/** The figures of a benchmark run (`--json FILE`); every latency names the load it was measured at. */
export interface BenchResult {
  /** The machine. */
  readonly machine: { cores: number; cpu: string; deno: string; libzmq: string; os: string };
  /** Seconds each closed-loop peak and each open-loop run was measured over. */
  readonly seconds: number;
  /** Seconds of the same load each deployment ran, unmeasured, before its peak was measured. */
  readonly warm_up_seconds: number;
  /** Requests each closed loop keeps outstanding (ours and Moleculer's). */
  readonly closed_loop_window: number;
  /** The project's own libzmq binding, no framework, between two processes over ipc. */
  readonly raw: {
    /** PUSH→PULL one hop, single-frame messages as large as a request's three frames: msgs/s. */
    readonly hop_msgs_per_s: number;
    /** The same bytes as a three-frame message. */
    readonly hop_3frame_msgs_per_s: number;
    /** PUB→SUB one hop: msgs/s. */
    readonly pubsub_msgs_per_s: number;
    /** ROUTER→DEALER echo, one at a time, 2,000 in a row. */
    readonly one_at_a_time: RoundTrip;
    /** The same, each message after 2 ms of idleness: p50. */
    readonly one_at_a_time_after_idle_p50_ms: number;
    /** The same with both ends waiting in-thread, as the roles do (`ROLE_SYNC_WAIT_MS`). */
    readonly one_at_a_time_in_thread: RoundTrip;
    /** zeromq.js on Node, same shapes, for context; `null` when Node or its packages are missing. */
    readonly node_zeromq: { push_pull_msgs_per_s: number; rtt_p50_ms: number; rtt_p99_ms: number } | null;
  };
  /** ZManager: the 3-step flow with 2 workers (sandbox on, ipc) unless a key says otherwise. */
  readonly zmanager: LatencyFigures & {
    /** The same flow with `--no-sandbox`: peak flows/s. */
    readonly no_sandbox_peak_flows_per_s: number;
    /** `1 - peak / no_sandbox_peak` (negative: nothing measurable). */
    readonly sandbox_cost: number;
    /** The same flow over tcp with CURVE on loopback: peak flows/s; `null` without a libzmq with CURVE. */
    readonly curve_peak_flows_per_s: number | null;
    /** `peak_flows_per_s / curve_peak_flows_per_s`. */
    readonly curve_cost: number | null;
    /** Every closed-loop run (flow shapes, sandbox on and off, the IM in the Subject's process, both). */
    readonly runs: readonly FlowRun[];
  };
  /**
   * The same deployment with `integration_manager_in_subject = on` (the IM in the Subject's
   * process), in the same run; its open loops offered at the same rates as `zmanager`'s (50% and
   * 10% of that peak), so that both compare with the bare pipeline's.
   */
  readonly zmanager_im_in_subject: LatencyFigures;
  /**
   * The same deployment with `--no-sandbox` and the IM in the Subject's process, the placement
   * for the lowest p50 per request (handlers on the workers' threads with every permission;
   * one process fewer to fail apart), at the same offered rates as `zmanager`'s.
   */
  readonly zmanager_no_sandbox_im_in_subject: LatencyFigures;
  /**
   * The bare pipeline: the deployment's shape (four hops, five processes) with relays that only
   * forward each message (libzmq's loop called from Deno), at the same offered rates.
   */
  readonly bare: {
    /** Closed loop with as many outstanding as the flows' peak: messages through the pipeline per second. */
    readonly peak_flows_per_s: number;
    readonly one_at_a_time: RoundTrip;
    readonly open_loop_50pct_of_peak: OpenLoop;
    readonly open_loop_10pct_of_peak: OpenLoop;
    readonly open_loop_10000_per_s: OpenLoop;
  };
  /** The peer: Moleculer, its TCP transporter, caller + 2 worker nodes (`moleculer.ts`); `null` if it failed. */
  readonly moleculer: MoleculerRun | null;
  /** The 3-step flow through the HTTP gateway (64 keep-alive connections), and its share of the ZeroMQ peak. */
  readonly gateway?: GatewayRun & { readonly ratio_to_zeromq_client: number };
  /** The performance goals (issue 23), each as the ratio this run measured. */
  readonly goals: readonly Goal[];
  /** The same goals for `zmanager_im_in_subject`. */
  readonly goals_im_in_subject: readonly Goal[];
  /** The same goals for `zmanager_no_sandbox_im_in_subject`. */
  readonly goals_no_sandbox_im_in_subject: readonly Goal[];
}

/** A deployment's figures under load: its peak, latencies at named loads, CPU, memory, idle. */
export interface LatencyFigures {
  /** Closed-loop peak, flows/s. */
  readonly peak_flows_per_s: number;
  /** `peak_flows_per_s / raw.hop_msgs_per_s`. */
  readonly peak_to_raw_hop: number;
  /** One request at a time, back to back (no other load). */
  readonly one_at_a_time: RoundTrip;
  /** Open loop at 50% of the peak (with its p90 and the kernel memory monitor's CPU meanwhile). */
  readonly open_loop_50pct_of_peak: OpenLoop & {
    readonly p90_ms: number;
    readonly kdamond_cores: number | null;
  };
  /** Open loop at 10% of the peak. */
  readonly open_loop_10pct_of_peak: OpenLoop;
  /** Open loop at 10,000 flows/s, the efficiency figure; `roles_cpu_us_per_flow` leaves the generator out. */
  readonly open_loop_10000_per_s: OpenLoop & { readonly roles_cpu_us_per_flow: number };
  /** Peak RSS of each role process (and the load generator) over the peak run, MiB. */
  readonly peak_rss_mib: Record<string, number>;
  /** The deployment idle, from 1.5 s after the load: CPU of its roles and their context switches. */
  readonly idle: { readonly cpu_cores: number; readonly context_switches_per_s: number };
}

/** One goal: `value` must be at most (`"max"`) or at least (`"min"`) `limit`. */
export interface Goal {
  /** What is compared. */
  readonly name: string;
  /** The measured ratio. */
  readonly value: number;
  /** `"min"`: at least `limit`; `"max"`: at most `limit`. */
  readonly bound: "min" | "max";
  /** The target. */
  readonly limit: number;
  /** Whether this run met it. */
  readonly met: boolean;
}

function goalLine(g: Goal): string {
  return `  ${g.met ? "met    " : "not met"}  ${g.name}: ${g.value} (${
    g.bound === "min" ? ">=" : "<="
  } ${g.limit})`;
}

/** The table of one ZManager deployment's figures beside the bare pipeline's and Moleculer's. */
function flowTable(name: string, z: LatencyFigures, r: BenchResult): string[] {
  const b = r.bare, mol = r.moleculer;
  const molAt10k = mol?.open.find((o) => o.rate === 10_000);
  const molOne = mol && { p50_ms: mol.one_at_a_time_p50_ms, p99_ms: mol.one_at_a_time_p99_ms };
  const row = (what: string, ...cells: string[]) => `| ${what} | ${cells.join(" | ")} |`;
  return [
    `| 3-step flow, 2 workers, results back to the caller | ${name} | bare pipeline | Moleculer | ${name} / bare | ${name} / Moleculer |`,
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    row(
      `peak, closed loop (${fmt(r.closed_loop_window)} outstanding)`,
      `${fmt(z.peak_flows_per_s)} flows/s`,
      `${fmt(b.peak_flows_per_s)} msgs/s`,
      mol ? `${fmt(mol.flows_per_s)} flows/s` : "not measured",
      times(z.peak_flows_per_s, b.peak_flows_per_s),
      mol ? times(z.peak_flows_per_s, mol.flows_per_s) : "–",
    ),
    row(
      "one request at a time: p50 / p99",
      ms(z.one_at_a_time),
      ms(b.one_at_a_time),
      molOne ? ms(molOne) : "–",
      ratios(z.one_at_a_time, b.one_at_a_time),
      molOne ? ratios(z.one_at_a_time, molOne) : "–",
    ),
    ...([["50%", z.open_loop_50pct_of_peak, b.open_loop_50pct_of_peak], [
      "10%",
      z.open_loop_10pct_of_peak,
      b.open_loop_10pct_of_peak,
    ]] as const).map(([share, zz, bb]) =>
      row(
        `open loop at ${share} of the default's peak (${fmt(zz.offered_per_s)} flows/s offered): p50 / p99`,
        ms(zz),
        ms(bb),
        "–",
        ratios(zz, bb),
        "–",
      )
    ),
    row(
      "open loop at 10,000 flows/s offered: p50 / p99",
      ms(z.open_loop_10000_per_s),
      ms(b.open_loop_10000_per_s),
      molAt10k ? ms(molAt10k) : "–",
      ratios(z.open_loop_10000_per_s, b.open_loop_10000_per_s),
      molAt10k ? ratios(z.open_loop_10000_per_s, molAt10k) : "–",
    ),
    row(
      "µs of CPU per flow at 10,000 flows/s (all processes, load generator included)",
      z.open_loop_10000_per_s.cpu_us_per_flow.toFixed(1),
      b.open_loop_10000_per_s.cpu_us_per_flow.toFixed(1),
      molAt10k ? molAt10k.cpu_us_per_flow.toFixed(1) : "–",
      times(z.open_loop_10000_per_s.cpu_us_per_flow, b.open_loop_10000_per_s.cpu_us_per_flow),
      molAt10k ? times(z.open_loop_10000_per_s.cpu_us_per_flow, molAt10k.cpu_us_per_flow) : "–",
    ),
    row(
      "peak RSS at peak load, largest process",
      `${
        Math.max(...Object.entries(z.peak_rss_mib).filter(([k]) => k !== "load generator").map(([, v]) => v))
      } MiB`,
      "–",
      mol ? `${Math.max(...mol.rss_mib.slice(1))} MiB (worker nodes)` : "–",
      "–",
      "–",
    ),
  ];
}

/**
 * A goal from its ratio and bound; `met` is false when the ratio could not be measured. `value`
 * is kept to three decimals; `met` is decided on the ratio as given, so that one just past the
 * limit is not met because it rounds to it.
 */
export function goal(name: string, value: number, bound: "min" | "max", limit: number): Goal {
  return {
    name,
    value: Math.round(value * 1000) / 1000,
    bound,
    limit,
    met: Number.isFinite(value) && (bound === "min" ? value >= limit : value <= limit),
  };
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

const ms = (x: RoundTrip) => `${x.p50_ms.toFixed(2)} / ${x.p99_ms.toFixed(2)} ms`;
const times = (a: number, b: number) => (Number.isFinite(a / b) && b > 0 ? `${(a / b).toFixed(2)}x` : "–");
/** `a`'s p50 and p99 as multiples of `b`'s: "2.00x / 3.10x". */
const ratios = (a: RoundTrip, b: RoundTrip) => `${times(a.p50_ms, b.p50_ms)} / ${times(a.p99_ms, b.p99_ms)}`;

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

/** Prints the figures as Markdown tables: the raw ceiling, ZManager beside the bare pipeline and Moleculer, the goals. */
export function printTable(r: BenchResult): void {
  const m = r.machine;
  const z = r.zmanager, mol = r.moleculer;
  const row = (what: string, ...cells: string[]) => `| ${what} | ${cells.join(" | ")} |`;
  const lines = [
    `machine: ${m.cores} cores, ${m.cpu}, ${m.os}; Deno ${m.deno}; libzmq ${m.libzmq}`,
    "",
    "| raw libzmq, two processes, ipc | figure |",
    "| --- | ---: |",
    row(`PUSH->PULL, one hop, one ${REQUEST_BYTES}-byte frame`, `${fmt(r.raw.hop_msgs_per_s)} msgs/s`),
    row("PUSH->PULL, the same bytes as three frames", `${fmt(r.raw.hop_3frame_msgs_per_s)} msgs/s`),
    row("PUB->SUB, one hop", `${fmt(r.raw.pubsub_msgs_per_s)} msgs/s`),
    row("round trip, one at a time: p50 / p99", ms(r.raw.one_at_a_time)),
    row("round trip, each after 2 ms idle: p50", `${r.raw.one_at_a_time_after_idle_p50_ms.toFixed(3)} ms`),
    row(
      "round trip, both ends waiting in-thread as the roles do: p50 / p99",
      ms(r.raw.one_at_a_time_in_thread),
    ),
    ...(r.raw.node_zeromq
      ? [
        row(
          "zeromq.js on Node: PUSH->PULL, one hop",
          `${fmt(r.raw.node_zeromq.push_pull_msgs_per_s)} msgs/s`,
        ),
        row(
          "zeromq.js on Node: REQ/REP round trip p50 / p99",
          ms({
            p50_ms: r.raw.node_zeromq.rtt_p50_ms,
            p99_ms: r.raw.node_zeromq.rtt_p99_ms,
          }),
        ),
      ]
      : [row("zeromq.js on Node", "not measured (Node or its packages missing)")]),
    "",
    ...flowTable("ZManager", z, r),
    "",
    ...flowTable("IM in the Subject", r.zmanager_im_in_subject, r),
    "",
    ...flowTable("--no-sandbox, IM in the Subject", r.zmanager_no_sandbox_im_in_subject, r),
    "",
    "| more of ZManager | figure |",
    "| --- | ---: |",
    ...z.runs.map((x) =>
      row(
        `${x.steps}-step flow, ${x.workers} worker${x.workers > 1 ? "s" : ""}${
          x.sandbox ? "" : ", --no-sandbox"
        }${x.imInSubject ? ", the IM in the Subject's process" : ""}, peak (closed loop)`,
        `${fmt(x.flowsPerSecond)} flows/s (first ${r.warm_up_seconds} s: ${fmt(x.warmUpFlowsPerSecond)})`,
      )
    ),
    row("peak to the raw one-hop rate", z.peak_to_raw_hop.toFixed(4)),
    row(
      "the handler sandbox's cost: peak, on vs --no-sandbox",
      `${(z.sandbox_cost * 100).toFixed(1)}% (${fmt(z.peak_flows_per_s)} vs ${
        fmt(z.no_sandbox_peak_flows_per_s)
      })`,
    ),
    z.curve_peak_flows_per_s === null || z.curve_cost === null
      ? row("tcp + CURVE on loopback", "not measured (no libzmq with CURVE: see doctor)")
      : row(
        "tcp + CURVE on loopback, peak (closed loop)",
        `${fmt(z.curve_peak_flows_per_s)} flows/s: ipc is ${z.curve_cost.toFixed(2)}x that`,
      ),
    row(
      `open loop at 50% of peak: p90; CPU busy (of ${m.cores} cores)${
        z.open_loop_50pct_of_peak.kdamond_cores === null ? "" : "; the kernel's memory monitor"
      }`,
      `${z.open_loop_50pct_of_peak.p90_ms.toFixed(2)} ms; ${
        z.open_loop_50pct_of_peak.busy_cores.toFixed(2)
      } cores${
        z.open_loop_50pct_of_peak.kdamond_cores === null
          ? ""
          : `; ${z.open_loop_50pct_of_peak.kdamond_cores.toFixed(2)} cores`
      }`,
    ),
    row(
      "µs of CPU per flow at 10,000 flows/s, roles only",
      z.open_loop_10000_per_s.roles_cpu_us_per_flow.toFixed(1),
    ),
    row(
      "the deployment idle: CPU of its roles / context switches",
      `${z.idle.cpu_cores.toFixed(2)} cores / ${fmt(z.idle.context_switches_per_s)} per s`,
    ),
    ...gatewayRows(r),
    "",
    `Peaks: ${
      fmt(r.closed_loop_window)
    } requests outstanding for ${r.seconds} s, after the same load for ${r.warm_up_seconds} s (the "first" figure).`,
    "Peak RSS per process, 3-step flow, 2 workers, at peak (MiB): " +
    Object.entries(z.peak_rss_mib).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ") +
    (mol ? `; Moleculer caller ${mol.rss_mib[0]}, worker nodes ${mol.rss_mib.slice(1).join(", ")}` : ""),
    "",
    "Goals (issue 23), as measured in this run:",
    ...r.goals.map(goalLine),
    "The same goals with the IM in the Subject's process (`integration_manager_in_subject = on`):",
    ...r.goals_im_in_subject.map(goalLine),
    "The same goals with `--no-sandbox` and the IM in the Subject's process:",
    ...r.goals_no_sandbox_im_in_subject.map(goalLine),
  ];
  console.log(lines.join("\n"));
}
