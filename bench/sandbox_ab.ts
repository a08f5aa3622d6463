/**
 * The handler sandbox's cost, measured in pairs: the 3-step flow on 2 workers with the sandbox
 * on, then with `--no-sandbox`, `N` times (`deno run -A bench/sandbox_ab.ts [N]`, default 3).
 * Interleaved pairs, because on a shared machine one run of each (as `deno task bench` makes)
 * can differ by more than the effect. Prints each run's peak flows/s and the CPU each kind of
 * process spent per flow (µs), then the medians.
 *
 * @module
 */

import { deploy } from "./bench.ts";
import { Generator } from "./generator.ts";
import { roleProcesses, withCpu } from "./proc.ts";

const pairs = Number(Deno.args[0] ?? 3);
const runs: { sandbox: boolean; flows: number; cpu: Record<string, number> }[] = [];
for (let i = 0; i < 2 * pairs; i++) {
  const sandbox = i % 2 === 0;
  const d = await deploy(2, sandbox);
  const g = new Generator("Bench3");
  try {
    await g.open(d);
    await g.closedLoop(5); // warm-up
    const pids = await roleProcesses(d.dir);
    const [flows, cores] = await withCpu(pids.map(([, p]) => p), () => g.closedLoop(3));
    const cpu: Record<string, number> = {};
    pids.forEach(([role], k) => cpu[role] = (cpu[role] ?? 0) + cores[k] / flows * 1e6);
    runs.push({ sandbox, flows, cpu });
    const per = Object.entries(cpu).map(([r, us]) => `${r} ${us.toFixed(1)}`).join(", ");
    console.log(
      `${sandbox ? "sandbox    " : "no-sandbox "} ${Math.round(flows)} flows/s; CPU µs per flow: ${per}`,
    );
  } finally {
    await g.close();
    await d.stop();
  }
}
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const sandbox of [true, false]) {
  const rs = runs.filter((r) => r.sandbox === sandbox);
  const roles = Object.keys(rs[0].cpu);
  console.log(
    `median ${sandbox ? "sandbox   " : "no-sandbox"}: ${
      Math.round(median(rs.map((r) => r.flows)))
    } flows/s; ` +
      roles.map((role) => `${role} ${median(rs.map((r) => r.cpu[role])).toFixed(1)} µs`).join(", "),
  );
}
