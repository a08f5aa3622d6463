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

/** `total` quick requests, `lanes` in flight at a time; the worker pids that answered, in order. */
async function lanes(client: Client, total: number, lanes: number): Promise<number[]> {
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
  await Promise.all(Array.from({ length: lanes }, lane));
  return pids;
}

for (const window of [50, 0]) {
  const what = window
    ? "a load one worker keeps up with stays on it; a step that arrives while it is behind goes to the other, which keeps the load"
    : "worker_pack_window 0: the same load is spread by free credit";
  Deno.test(what, async () => {
    // A 50 ms window: the test asserts the policy, not this machine's speed (a step comes back in
    // well under 50 ms even with the test suite running beside it).
    await using d = await startDeployment({
      files: POISON,
      workers: 2,
      args: ["--worker-pack-window", String(window)],
    });
    await using client = await d.connect();
    await bothJoined(d.dir);
    const workers = await rolePids(d.dir, "worker");
    // Until a worker's steps have come back, its pace is unknown: the first steps are spread.
    await lanes(client, 20, 4);
    const pids = await lanes(client, 200, 4);
    assert.ok(pids.every((p) => workers.includes(p)), "answered by the deployment's workers");
    const counts = workers.map((w) => pids.filter((p) => p === w).length);
    if (!window) {
      assert.ok(counts.every((n) => n >= 40), `spread: ${counts.join(" / ")} of 200`);
      return;
    }
    assert.deepEqual(counts.toSorted((a, b) => a - b), [0, 200], `four at a time on one worker: ${counts}`);
    const first = pids[0];
    // That worker's sandbox busy for 600 ms: once that step is older than the window, the
    // next steps go to the other worker, and so do the quick ones meanwhile.
    const slow = client.request("Hang", { block: 600 }, { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 150));
    const during = await lanes(client, 20, 2);
    assert.equal(Number((await slow).values.pid), first, "the slow step went to the worker with the load");
    assert.ok(
      during.every((p) => p !== first),
      `steps sent while it was behind went to the other: ${during}`,
    );
    // The other worker has the load now, and keeps it: the first one's steps do not come back in
    // under half its time (its average took the 600 ms step as twice the window).
    const after = await lanes(client, 40, 2);
    assert.ok(after.every((p) => p !== first), `kept to the other worker: ${after}`);
  });
}
