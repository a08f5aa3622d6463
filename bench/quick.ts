// A quick look at the bench's sandboxed deployment (3-step flow, 2 workers), for comparing two
// builds in alternated runs (docs/performance.md, round 6): the peak, 1,000 requests one at a time,
// and open loops at 10,000/s and 2,000/s with the role processes' CPU per flow. Prints one JSON
// line. Run from each build's tree in turn, with that tree's deno.json:
//   deno run -A --config TREE/deno.json TREE/bench/quick.ts
import { deploy } from "./bench.ts";
import { Generator } from "./generator.ts";
import { roleProcesses, withCpu } from "./proc.ts";
import { percentile, round3, sum } from "./report.ts";

const d = await deploy(2, true);
const g = new Generator("Bench3");
try {
  await g.open(d);
  const pids = (await roleProcesses(d.dir)).map(([, pid]) => pid);
  await g.closedLoop(6); // warm-up
  const [peak] = await withCpu(pids, () => g.closedLoop(3));
  const oneAtATime = await g.sequential(1000);
  const [at10k, cores10k] = await withCpu(pids, () => g.openLoop(10_000, 4));
  const [at2k, cores2k] = await withCpu(pids, () => g.openLoop(2_000, 4));
  console.log(JSON.stringify({
    peak_flows_per_s: Math.round(peak),
    one_at_a_time_p50_ms: round3(percentile(oneAtATime, 50)),
    one_at_a_time_p99_ms: round3(percentile(oneAtATime, 99)),
    roles_cpu_us_per_flow_at_10000: Math.round((sum(cores10k) / 10_000) * 1e6),
    open_loop_10000_p50_ms: round3(percentile(at10k, 50)),
    open_loop_10000_p99_ms: round3(percentile(at10k, 99)),
    roles_cpu_us_per_flow_at_2000: Math.round((sum(cores2k) / 2_000) * 1e6),
    open_loop_2000_p50_ms: round3(percentile(at2k, 50)),
    open_loop_2000_p99_ms: round3(percentile(at2k, 99)),
  }));
} finally {
  await g.close();
  await d[Symbol.asyncDispose]();
}
