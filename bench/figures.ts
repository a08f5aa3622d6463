/**
 * The benchmark's figures from what a run measured: the latency figures of a deployment and of
 * the bare pipeline, rounded as they are printed and written or unrounded for the goals, and
 * issue 23's goals as ratios of them. Arithmetic only: no processes, no sockets, no clock.
 *
 * @module
 */

import type { BareRun } from "./bare.ts";
import type { MoleculerRun } from "./moleculer.ts";
import {
  type BenchResult,
  type Goal,
  goal,
  type LatencyFigures,
  percentile,
  round2,
  round3,
  type RoundTrip,
} from "./report.ts";

/** The fixed offered rate of the efficiency figure (µs of CPU per flow), flows/s. */
export const EFFICIENCY_RATE = 10_000;

/**
 * What a deployment's latency run measured: round trips in ms, sorted; CPU in cores (the open
 * loops' at 50% and 10% of the peak, the monitor's and the idle CPU come rounded to 0.01 from the
 * run; the CPU at {@linkcode EFFICIENCY_RATE}, which the CPU goal reads, unrounded).
 */
export interface LatencyMeasures {
  /** The open loop at 50% of the peak: its offered rate, round trips, CPU, and the kernel monitor's. */
  readonly rate: number;
  readonly rtt: number[];
  readonly busyCores: number;
  readonly monitorCores: number | null;
  /** One request at a time. */
  readonly sequential: number[];
  /** The open loop at 10% of the peak. */
  readonly low: number[];
  readonly lowRate: number;
  readonly lowBusyCores: number;
  /** The open loop at {@linkcode EFFICIENCY_RATE}: every process's CPU, and the roles' alone. */
  readonly at10k: number[];
  readonly at10kCores: number;
  readonly at10kRoleCores: number;
  /** The deployment idle. */
  readonly idleCpu: number;
  readonly idleSwitches: number;
}

/** A deployment's run as {@linkcode latencyFigures} reads it. */
export interface MeasuredRun {
  readonly flowsPerSecond: number;
  readonly roles: Record<string, { cpu: number; rssMiB: number }>;
  readonly latency?: LatencyMeasures;
}

const same = (n: number): number => n;

/** How figures are written: ms to 1 µs and cores and µs to 0.01, or with `exact` as they came. */
function rounding(exact: boolean) {
  return { ms: exact ? same : round3, two: exact ? same : round2 };
}

/** An open loop's figures. */
function open(rtt: number[], rate: number, cores: number, exact: boolean) {
  const { ms, two } = rounding(exact);
  return {
    offered_per_s: rate,
    p50_ms: ms(percentile(rtt, 50)),
    p99_ms: ms(percentile(rtt, 99)),
    busy_cores: two(cores),
    cpu_us_per_flow: two((cores / rate) * 1e6),
  };
}

/** The p50 and p99 of round trips (ms, sorted); `exact` as in {@linkcode latencyFigures}. */
export function roundTrips(sorted: number[], exact = false): RoundTrip {
  const { ms } = rounding(exact);
  return { p50_ms: ms(percentile(sorted, 50)), p99_ms: ms(percentile(sorted, 99)) };
}

/**
 * The figures of a deployment's run measured with latency, `rawHop` the raw one-hop rate. Rounded
 * as printed and written (ms to 1 µs, cores and µs to 0.01, flows/s to whole numbers), or with
 * `exact` as they came (see {@linkcode LatencyMeasures}), which is how the goals are judged: a
 * ratio near a goal's limit is not put on either side of it by the rounding. Peak RSS is to 0.1
 * MiB either way, as the bench reads it (so the RSS goal can be met by 0.05 MiB of rounding).
 */
export function latencyFigures(run: MeasuredRun, rawHop: number, exact = false): LatencyFigures {
  const lat = run.latency;
  if (!lat) throw new Error("latencyFigures: the run was not measured with latency");
  const { ms, two } = rounding(exact);
  return {
    peak_flows_per_s: exact ? run.flowsPerSecond : Math.round(run.flowsPerSecond),
    peak_to_raw_hop: exact
      ? run.flowsPerSecond / rawHop
      : Math.round((run.flowsPerSecond / rawHop) * 10000) / 10000,
    one_at_a_time: roundTrips(lat.sequential, exact),
    open_loop_50pct_of_peak: {
      ...open(lat.rtt, lat.rate, lat.busyCores, exact),
      p90_ms: ms(percentile(lat.rtt, 90)),
      kdamond_cores: lat.monitorCores,
    },
    open_loop_10pct_of_peak: open(lat.low, lat.lowRate, lat.lowBusyCores, exact),
    open_loop_10000_per_s: {
      ...open(lat.at10k, EFFICIENCY_RATE, lat.at10kCores, exact),
      roles_cpu_us_per_flow: two((lat.at10kRoleCores / EFFICIENCY_RATE) * 1e6),
    },
    peak_rss_mib: Object.fromEntries(Object.entries(run.roles).map(([k, v]) => [k, v.rssMiB])),
    idle: { cpu_cores: lat.idleCpu, context_switches_per_s: lat.idleSwitches },
  };
}

/**
 * The bare pipeline's figures; its `runs` are the open loops at 50% and 10% of the peak and at
 * {@linkcode EFFICIENCY_RATE}, in that order. `exact` as in {@linkcode latencyFigures}.
 */
export function bareFigures(bare: BareRun, exact = false): BenchResult["bare"] {
  const run = (i: number) => open(bare.runs[i].rtt, bare.runs[i].rate, bare.runs[i].busyCores, exact);
  return {
    peak_flows_per_s: exact ? bare.peak : Math.round(bare.peak),
    one_at_a_time: roundTrips(bare.sequential, exact),
    open_loop_50pct_of_peak: run(0),
    open_loop_10pct_of_peak: run(1),
    open_loop_10000_per_s: run(2),
  };
}

/** Issue 23's goals as ratios of a run's figures (give them unrounded: see {@linkcode latencyFigures}). */
export function goals(z: LatencyFigures, b: BenchResult["bare"], mol: MoleculerRun | null): Goal[] {
  const nan = Number.NaN;
  const z50 = z.open_loop_50pct_of_peak, z10 = z.open_loop_10pct_of_peak;
  const b50 = b.open_loop_50pct_of_peak, b10 = b.open_loop_10pct_of_peak;
  const worstRole = Math.max(
    ...Object.entries(z.peak_rss_mib).filter(([k]) => k !== "load generator").map(([, v]) => v),
  );
  return [
    goal("peak flows/s / Moleculer's", mol ? z.peak_flows_per_s / mol.flows_per_s : nan, "min", 3),
    goal("peak flows/s / raw one-hop msgs/s", z.peak_to_raw_hop, "min", 0.15),
    goal(
      "one at a time p50 / Moleculer's",
      mol ? z.one_at_a_time.p50_ms / mol.one_at_a_time_p50_ms : nan,
      "max",
      2,
    ),
    goal("one at a time p50 / bare pipeline's", z.one_at_a_time.p50_ms / b.one_at_a_time.p50_ms, "max", 1.5),
    goal(
      "one at a time p99 / Moleculer's",
      mol ? z.one_at_a_time.p99_ms / mol.one_at_a_time_p99_ms : nan,
      "max",
      2,
    ),
    goal("10% of peak: p50 / bare pipeline's", z10.p50_ms / b10.p50_ms, "max", 1.5),
    goal("10% of peak: p99 / bare pipeline's", z10.p99_ms / b10.p99_ms, "max", 2),
    goal("50% of peak: p50 / bare pipeline's", z50.p50_ms / b50.p50_ms, "max", 2),
    goal("50% of peak: p99 / bare pipeline's", z50.p99_ms / b50.p99_ms, "max", 3),
    goal(
      "CPU per flow at 10,000/s / bare pipeline's",
      z.open_loop_10000_per_s.cpu_us_per_flow / b.open_loop_10000_per_s.cpu_us_per_flow,
      "max",
      1,
    ),
    goal("largest role's peak RSS at peak load, MiB", worstRole, "max", 120),
  ];
}
