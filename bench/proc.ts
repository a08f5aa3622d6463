/**
 * What the benchmark reads of processes from Linux's `/proc`: CPU time, context switches, peak
 * memory, and the kernel's memory-monitor threads. Off Linux every figure reads as 0 (or none).
 *
 * @module
 */

import { rolePids } from "../testing/deployment.ts";

/** The role processes of a deployment, as `[role, pid]`. */
export async function roleProcesses(dir: string): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const role of ["subject", "integration-manager", "worker"]) {
    for (const pid of await rolePids(dir, role)) {
      // The IM in the Subject's process (`integration_manager_in_subject`): one process, named once.
      const same = out.find(([, p]) => p === pid);
      if (same) same[0] = `${same[0]} + ${role}`;
      else out.push([role, pid]);
    }
  }
  return out;
}

/** CPU time (user and system) a process has used so far, in clock ticks. */
export function cpuTicks(pid: number): number {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime
  } catch {
    return 0;
  }
}

/** Context switches (voluntary and not) of all of a process's threads so far. */
export function contextSwitches(pid: number): number {
  let n = 0;
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const status = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`);
        for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)/gm)) n += Number(m[1]);
      } catch { /* a thread that ended */ }
    }
  } catch { /* not Linux, or gone */ }
  return n;
}

/** Runs `fn`; returns its result and the CPU (cores) each process used meanwhile. */
export async function withCpu<T>(pids: readonly number[], fn: () => Promise<T>): Promise<[T, number[]]> {
  const before = pids.map(cpuTicks);
  const t0 = performance.now();
  const result = await fn();
  const wall = (performance.now() - t0) / 1000;
  return [result, pids.map((pid, i) => (cpuTicks(pid) - before[i]) / 100 / wall)];
}

/** The kernel's DAMON threads (`kdamond.N`), whose bursts show in the latency tail; none off Linux. */
export function kernelMemoryMonitors(): number[] {
  const pids: number[] = [];
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        if (Deno.readTextFileSync(`/proc/${e.name}/comm`).startsWith("kdamond")) pids.push(Number(e.name));
      } catch { /* gone */ }
    }
  } catch { /* no /proc */ }
  return pids;
}

/** A process's peak resident memory so far, in MiB. */
export function peakRssMiB(pid: number): number {
  try {
    const kb = Number(Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmHWM:\s*(\d+)/)?.[1] ?? 0);
    return Math.round(kb / 102.4) / 10;
  } catch {
    return 0;
  }
}
