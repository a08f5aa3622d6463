// Which worker a step goes to (`worker_pack_window`, README, _Design notes_): a load the worker
// that has it keeps up with stays on it; a step that arrives while it is behind goes to another. Real
// processes: `start` with two sandboxed workers, the poison component's handler (it answers with
// its worker's pid, and can hold its sandbox's thread for a while).
import assert from "node:assert/strict";
import { rolePids, roleStats } from "../testing/deployment.ts";
import type { Client } from "../src/client/client.ts";
import { startDeployment } from "./helpers.ts";

const POISON = [
  new URL("../fixtures/components/poison/flows.ini", import.meta.url).pathname,
  new URL("../fixtures/components/poison/mapping.ini", import.meta.url).pathname,
];

/** Until the Subject's counters show both workers (they are written once a second). */
async function bothJoined(dir: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while ((await rolePids(dir, "subject")).length === 0 || (await roleStats(dir, "subject")).workers !== 2) {
    if (performance.now() > deadline) throw new Error("the two workers did not join in 10 s");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `total` quick requests, `width` in flight at a time; the worker pids that answered, in order. */
async function lanes(client: Client, total: number, width: number): Promise<number[]> {
  const pids: number[] = [];
  let sent = 0;
  const lane = async () => {
    while (sent < total) {
      sent++;
      const p = await client.request("Hang", { ms: 0 }, { timeout: 10_000 });
      assert.equal(p.action, "done", JSON.stringify(p.error));
      pids.push(Number(p.values.pid));
    }
  };
  await Promise.all(Array.from({ length: width }, lane));
  return pids;
}

/** How often the answering worker changes from one answer to the next. */
const switches = (pids: readonly number[]) => pids.filter((p, i) => i > 0 && p !== pids[i - 1]).length;

for (const window of [200, 0]) {
  const what = window
    ? "a load one worker keeps up with stays on it; a step that arrives while it is behind goes to the other, which keeps the load"
    : "worker_pack_window 0: the same load is spread by free credit";
  Deno.test(what, async () => {
    // A 200 ms window: the test asserts the policy, not this machine's speed (a step comes back in
    // well under that even with the test suite running beside it).
    await using d = await startDeployment({
      files: POISON,
      workers: 2,
      args: ["--worker-pack-window", String(window)],
    });
    await using client = await d.connect();
    await bothJoined(d.dir);
    const workers = await rolePids(d.dir, "worker");
    // Until a worker's steps have come back, its pace is unknown: the first steps are spread (or
    // it gets one at a time). Warm up until both have answered.
    const warm = new Set<number>();
    for (let i = 0; i < 20 && warm.size < 2; i++) for (const p of await lanes(client, 8, 4)) warm.add(p);
    assert.equal(warm.size, 2, "both workers answered the warm-up");
    const pids = await lanes(client, 200, 4);
    assert.ok(pids.every((p) => workers.includes(p)), "answered by the deployment's workers");
    const counts = workers.map((w) => pids.filter((p) => p === w).length);
    if (!window) {
      assert.ok(counts.every((n) => n >= 40), `spread: ${counts.join(" / ")} of 200`);
      assert.ok(switches(pids) >= 20, `spread: the worker changed ${switches(pids)} times`);
      return;
    }
    // Four at a time on one worker. The load may move once or twice (a worker whose average is
    // under half the other's takes it; a stall longer than the window), never step by step.
    assert.ok(
      switches(pids) <= 4,
      `on one worker: it changed ${switches(pids)} times (${counts.join(" / ")})`,
    );
    const home = pids.at(-1)!;
    // That worker's sandbox busy for 1.5 s: once that step is older than the window, the next
    // steps go to the other worker, and so do the quick ones meanwhile.
    const slow = client.request("Hang", { block: 1500 }, { timeout: 10_000 });
    // The rule under test is the step's age: no message tells when it passed the window.
    await new Promise((r) => setTimeout(r, 400));
    const during = await lanes(client, 20, 2);
    assert.equal(Number((await slow).values.pid), home, "the slow step went to the worker with the load");
    assert.ok(during.every((p) => p !== home), `steps sent while it was behind went to the other: ${during}`);
    // The other worker has the load now, and keeps it: the first one's average (which took the
    // 1.5 s step as twice the window) is not under half of its.
    const after = await lanes(client, 40, 2);
    assert.ok(after.every((p) => p !== home), `kept to the other worker: ${after}`);
  });
}
