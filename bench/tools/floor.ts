/**
 * The structure's floor: what the default deployment's shape costs on this machine when its
 * processes do nothing of the framework's own work, measured beside the bare pipeline and
 * Moleculer in one run, for issue 23's goals (docs/performance.md, round 22).
 *
 *   deno run -A bench/tools/floor.ts [ROUNDS=6] [SECONDS=4]     (from the repository's root)
 *
 * Each variant is this process (the generator, as `bench/bare.ts`'s) and three or four relays
 * (`floor_peer.ts`). Variants, each adding to the one before:
 *
 * - `bare4`: the bench's bare pipeline (`bench_peer.ts relay`): four hops, generator → Subject's
 *   place → a worker's → the IM's → generator.
 * - `hop5`: the default's five hops: a worker's result goes back to the Subject, which sends it on
 *   to the IM; the Subject gives a light load to one worker, as the default does
 *   (`worker_pack_window`).
 * - `hop5+keep+ack`: the Subject keeps a copy of each request until its result comes, and the IM
 *   acknowledges each burst it reads to the Subject: the least that redelivery and "a final is
 *   kept until the IM has it" need.
 * - `+json`: the worker parses each request's values, calls three handlers, stringifies the
 *   result: the least a worker does to call handlers with objects (`--no-sandbox`'s shape).
 * - `+sandbox`: that done in a Web Worker through two rings (`floor_sandbox.ts`), a batch each
 *   way per turn, the worker's thread waiting in-thread for the results: the default's shape.
 * - `+sandbox-syncwait`: the same with the Web Worker blocked in `Atomics.wait` (no event loop:
 *   the cheapest wake-up a thread has, which async handlers could not have).
 * - `imInSubject+json`, `imInSubject+sandbox`: the Subject publishes the results itself (the IM in
 *   its process, four hops), with the steps on the worker's thread or in its Web Worker.
 *
 * Per variant: 500 requests one at a time, the closed-loop peak (2,000 outstanding, a second of
 * warm-up, then `SECONDS` with every process's CPU), and open loops at 10,000/s and 55,000/s
 * (about 10% and 50% of the default's peak) for 3 s each. Then Moleculer (`../moleculer.ts`).
 * The variants' order is reversed every round. Prints a JSON line per variant and round, then
 * each variant's goal ratios (against `bare4` and Moleculer of the same round) as ranges.
 * `ONLY=a,b` runs those variants; `MOLECULER=0` leaves Moleculer out.
 *
 * Each is the cheapest form tried of what it stands for, not a proven least (round 22 found the
 * figures move with it: packing and how the copies are kept). Left out on purpose, as the
 * framework's own work: headers, ids, topics and routing, the duplicate filter, credit, timers,
 * metrics, logging, three frames per message instead of one.
 *
 * @module
 */

import { PEER_MODULE, REQUEST_BYTES } from "../bench_peer.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../../src/zmq/reactor.ts";
import { withCpu } from "../proc.ts";
import { moleculerRun } from "../moleculer.ts";
import { percentile, sum } from "../report.ts";
import { RelayLoad, stopRelays } from "../relay_load.ts";
import { FLOOR_PREFIX } from "./floor_steps.ts";

const FLOOR = new URL("./floor_peer.ts", import.meta.url).href;
const RATES = [10_000, 55_000];
const OPEN_SECONDS = 3;

type At = (name: string) => string;
interface Variant {
  readonly name: string;
  /** Each relay's module and arguments. */
  readonly stages: (at: At) => [string, string[]][];
}

const hop5 = (keep: string, mode: string, ack: string) => (at: At): [string, string[]][] => [
  [FLOOR, ["subject", `@${at("in")}`, `@${at("work")}`, at("im"), keep]],
  [FLOOR, ["worker", "0", at("work"), at("in"), mode]],
  [FLOOR, ["worker", "1", at("work"), at("in"), mode]],
  [FLOOR, ["im", `@${at("im")}`, `@${at("out")}`, ack, at("in")]],
];
const imInSubject = (mode: string) => (at: At): [string, string[]][] => [
  [FLOOR, ["subject", `@${at("in")}`, `@${at("work")}`, `pub:@${at("out")}`, "1"]],
  [FLOOR, ["worker", "0", at("work"), at("in"), mode]],
  [FLOOR, ["worker", "1", at("work"), at("in"), mode]],
];

const VARIANTS: Variant[] = [
  {
    name: "bare4",
    stages: (at) => [
      [PEER_MODULE, ["relay", `@${at("in")}`, `@${at("work")}`, "PUSH"]],
      [PEER_MODULE, ["relay", at("work"), at("im"), "PUSH"]],
      [PEER_MODULE, ["relay", at("work"), at("im"), "PUSH"]],
      [PEER_MODULE, ["relay", `@${at("im")}`, `@${at("out")}`, "PUB"]],
    ],
  },
  { name: "hop5", stages: hop5("0", "relay", "0") },
  { name: "hop5+keep+ack", stages: hop5("1", "relay", "1") },
  { name: "+json", stages: hop5("1", "json", "1") },
  { name: "+sandbox", stages: hop5("1", "thread", "1") },
  { name: "+sandbox-syncwait", stages: hop5("1", "thread-sync", "1") },
  { name: "imInSubject+json", stages: imInSubject("json") },
  { name: "imInSubject+sandbox", stages: imInSubject("thread") },
];

/** One variant's figures (times in ms, CPU in µs per message, all processes but the generator's as `roles`). */
export interface FloorRun {
  name: string;
  seqP50: number;
  seqP99: number;
  peak: number;
  peakCores: number;
  peakRolesUs: number;
  peakGeneratorUs: number;
  open: { rate: number; p50: number; p99: number; cpuUs: number }[];
}

async function runVariant(v: Variant, seconds: number): Promise<FloorRun> {
  const dir = await Deno.makeTempDir({ prefix: "zmf" });
  const at = (name: string) => `ipc://${dir}/${name}`;
  const relays = v.stages(at).map(([module, args]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", module, ...args],
      stdin: "piped",
      stdout: "null",
    }).spawn()
  );
  const r = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  try {
    // The bench's request size: the index and kind, then values of a 60-odd-character payload.
    const values = JSON.stringify({ payload: "x".repeat(REQUEST_BYTES - FLOOR_PREFIX - 15) });
    const msg = new Uint8Array(FLOOR_PREFIX + values.length);
    new TextEncoder().encodeInto(values, msg.subarray(FLOOR_PREFIX));
    const load = await RelayLoad.connect(r, at("in"), at("out"), msg);
    await load.waitUp(`floor: ${v.name}`, 300);
    const sequential = await load.oneAtATime(500);
    const pids = [...relays.map((p) => p.pid), Deno.pid];
    await load.closed(1000); // warm-up
    // Messages per second over the timed loop and its drain, and the CPU over the same time.
    const t0 = performance.now();
    const [peak, peakCores] = await withCpu(pids, async () => {
      const { counted, drained } = await load.closed(seconds * 1000);
      return (counted + drained) / ((performance.now() - t0) / 1000);
    });
    const open: FloorRun["open"] = [];
    for (const rate of RATES) {
      const [rtt, cores] = await withCpu(pids, () => load.open(rate, OPEN_SECONDS));
      open.push({
        rate,
        p50: percentile(rtt, 50),
        p99: percentile(rtt, 99),
        cpuUs: (sum(cores) / rate) * 1e6,
      });
    }
    return {
      name: v.name,
      seqP50: percentile(sequential, 50),
      seqP99: percentile(sequential, 99),
      peak,
      peakCores: sum(peakCores),
      peakRolesUs: (sum(peakCores.slice(0, -1)) / peak) * 1e6,
      peakGeneratorUs: (peakCores[peakCores.length - 1] / peak) * 1e6,
      open,
    };
  } finally {
    await r.close();
    await stopRelays(relays);
    await Deno.remove(dir, { recursive: true });
  }
}

/** A variant's goal ratios in one round, against that round's `bare4` and Moleculer. */
export function goalRatios(
  run: FloorRun,
  bare: FloorRun,
  moleculer?: { peak: number; seqP50: number; seqP99: number },
): Record<string, number> {
  const o = (f: FloorRun, rate: number) => f.open.find((x) => x.rate === rate)!;
  const ratios: Record<string, number> = {
    "one at a time p50 ÷ bare": run.seqP50 / bare.seqP50,
    "10k/s p50 ÷ bare": o(run, 10_000).p50 / o(bare, 10_000).p50,
    "10k/s p99 ÷ bare": o(run, 10_000).p99 / o(bare, 10_000).p99,
    "55k/s p50 ÷ bare": o(run, 55_000).p50 / o(bare, 55_000).p50,
    "55k/s p99 ÷ bare": o(run, 55_000).p99 / o(bare, 55_000).p99,
    "CPU at 10k/s ÷ bare": o(run, 10_000).cpuUs / o(bare, 10_000).cpuUs,
    "roles' µs per message at peak": run.peakRolesUs,
  };
  if (moleculer) {
    ratios["peak ÷ Moleculer"] = run.peak / moleculer.peak;
    ratios["one at a time p50 ÷ Moleculer"] = run.seqP50 / moleculer.seqP50;
    ratios["one at a time p99 ÷ Moleculer"] = run.seqP99 / moleculer.seqP99;
    // The cores this variant kept busy at its peak, shared at 3× Moleculer's peak, less the generator's part.
    const allowed = (run.peakCores / (3 * moleculer.peak)) * 1e6 - run.peakGeneratorUs;
    ratios["roles' µs per message 3× Moleculer's peak allows"] = allowed;
    ratios["of which left for the framework's work"] = allowed - run.peakRolesUs;
  }
  return ratios;
}

if (import.meta.main) {
  const rounds = Number(Deno.args[0] ?? 6), seconds = Number(Deno.args[1] ?? 4);
  const only = Deno.env.get("ONLY")?.split(",");
  const variants = only ? VARIANTS.filter((v) => only.includes(v.name)) : VARIANTS;
  if (!variants.some((v) => v.name === "bare4")) variants.unshift(VARIANTS[0]); // the ratios' base
  const withMoleculer = Deno.env.get("MOLECULER") !== "0";
  const ranges = new Map<string, Map<string, number[]>>();
  for (let round = 0; round < rounds; round++) {
    const runs: FloorRun[] = [];
    for (const v of round % 2 ? [...variants].reverse() : variants) {
      const run = await runVariant(v, seconds);
      console.log(JSON.stringify({ round, ...run }));
      runs.push(run);
    }
    let moleculer;
    if (withMoleculer) {
      const m = await moleculerRun(seconds, 2, []);
      moleculer = { peak: m.flows_per_s, seqP50: m.one_at_a_time_p50_ms, seqP99: m.one_at_a_time_p99_ms };
      console.log(JSON.stringify({ round, name: "moleculer", ...moleculer }));
    }
    const bare = runs.find((x) => x.name === "bare4")!;
    for (const run of runs) {
      const byGoal = ranges.get(run.name) ?? new Map<string, number[]>();
      ranges.set(run.name, byGoal);
      for (const [goal, x] of Object.entries(goalRatios(run, bare, moleculer))) {
        byGoal.set(goal, [...byGoal.get(goal) ?? [], x]);
      }
    }
  }
  for (const [name, byGoal] of ranges) {
    console.log(`\n${name}`);
    for (const [goal, xs] of byGoal) {
      console.log(`  ${goal}: ${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`);
    }
  }
}
