// Faults on the wire (testing/fault.ts): messages dropped, duplicated and reordered between
// the roles; oversize messages; per-action handler timeouts. Real processes and sockets.
import assert from "node:assert/strict";
import { roleStats } from "../testing/deployment.ts";
import { FaultProxy } from "../testing/fault.ts";
import { Client } from "../src/client/client.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { CLI, RUNTIME_FIXTURE, startDeployment } from "./helpers.ts";

/** Starts `cli.ts worker` processes connecting to `address`. */
function spawnWorkers(dir: string, address: string, count: number): Deno.ChildProcess[] {
  return Array.from({ length: count }, () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        CLI,
        "worker",
        "--runtime-dir",
        dir,
        "--subject-worker-address",
        address,
        "--heartbeat-interval",
        "100",
        "--",
        ...RUNTIME_FIXTURE,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
      env: { ZMANAGER_LOG: "error" },
    }).spawn());
}

/** Counts the final publications of a flow per request id until `stop` is called. */
async function countFinals(client: Client, prefix: string) {
  const finals = new Map<string, number>();
  const stream = await client.subscribe(prefix);
  const counting = (async () => {
    for await (const p of stream) finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
  })();
  return {
    finals,
    async stop() {
      await new Promise((r) => setTimeout(r, 300)); // a duplicate final would have arrived by now
      await stream.return!();
      await counting;
    },
  };
}

/** `loops` loops at once, each making its share of calls `fn(k)` for k < n one after another. */
async function inLoops<T>(n: number, loops: number, fn: (k: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  await Promise.all(Array.from({ length: loops }, async (_, loop) => {
    for (let k = loop; k < n; k += loops) out[k] = await fn(k);
  }));
  return out;
}

/**
 * Runs `n` requests of flow `Three` (ids `<prefix>-<k>`) in 20 loops of sequential requests,
 * and checks that each got its values through the three steps and exactly one final
 * publication. Returns the results, by k.
 */
async function threeStepsOnceEach(client: Client, n: number, prefix: string) {
  const tally = await countFinals(client, "Three~~~~");
  const results = await inLoops(
    n,
    20,
    (k) => client.request("Three", { k }, { id: `${prefix}-${k}`, timeout: 60_000 }),
  );
  await tally.stop();
  results.forEach((p, k) =>
    assert.deepEqual(p.values, { k, trace: ["one", "two", "three"] }, `request ${k}`)
  );
  assert.equal(tally.finals.size, n, "a final publication for every request");
  assert.deepEqual([...tally.finals].filter(([, c]) => c !== 1), [], "no request has two finals");
  return results;
}

/** Waits until the Subject's counters (written every second) satisfy `ok`. */
async function subjectStatsWhen(dir: string, ok: (s: Record<string, unknown>) => boolean) {
  let s: Record<string, unknown> = {};
  for (let i = 0; i < 40 && !ok(s); i++) {
    await new Promise((r) => setTimeout(r, 100));
    s = await roleStats(dir, "subject");
  }
  return s;
}

Deno.test("steps dropped, duplicated and reordered between the Subject and its workers: one final each", async () => {
  await using d = await startDeployment({ workers: 0, args: ["--heartbeat-timeout", "2000"] });
  await using proxy = await FaultProxy.start({
    kind: "router",
    front: `ipc://${d.dir}/faulty`,
    back: `ipc://${d.dir}/workers`,
    policy: { drop: 0.05, duplicate: 0.05, jitterMs: 2 },
    seed: 7,
  });
  const workers = spawnWorkers(d.dir, `ipc://${d.dir}/faulty`, 2);
  try {
    await using client = await d.connect();
    // The hop carries many small batches (the Subject and the workers batch what one turn
    // produces), so the faults hit many messages.
    const results = await threeStepsOnceEach(client, 2000, "f");
    results.forEach((p, k) => assert.equal(p.action, "done", `request ${k}: ${JSON.stringify(p.error)}`));
    const { up, down } = proxy.stats();
    assert.ok(up.dropped > 0 && down.dropped > 0, JSON.stringify(proxy.stats()));
    assert.ok(up.duplicated > 0 && down.duplicated > 0, JSON.stringify(proxy.stats()));
    const s = await subjectStatsWhen(d.dir, (s) => Number(s.lost) > 0);
    assert.ok(Number(s.lost) > 0, `lost steps were found and sent again: ${JSON.stringify(s)}`);
    assert.ok(Number(s.lateResults) > 0, "duplicate and late results were ignored");
  } finally {
    for (const w of workers) {
      w.kill("SIGKILL");
      await w.status;
    }
  }
});

Deno.test("requests duplicated, dropped and delayed on the way to the Subject run once; lost ones are sent again", async () => {
  await using d = await startDeployment({ workers: 2 });
  await using proxy = await FaultProxy.start({
    kind: "router",
    front: `ipc://${d.dir}/faulty`,
    back: d.subject,
    policy: { drop: 0.05, duplicate: 0.05, jitterMs: 2 },
    seed: 11,
  });
  await using client = await Client.connect({
    subject: `ipc://${d.dir}/faulty`,
    publisher: d.publisher,
    resendAfter: 200,
  });
  // The client batches what one turn sends, so the loops make many small messages for the
  // faults to hit.
  await threeStepsOnceEach(client, 1000, "s");
  assert.ok(client.resent > 0, "unacknowledged requests were sent again");
  assert.ok(proxy.stats().up.duplicated > 0);
  const s = await subjectStatsWhen(
    d.dir,
    (s) => ((s.dropped as Record<string, number> | undefined)?.duplicate ?? 0) > 0,
  );
  assert.ok((s.dropped as Record<string, number>).duplicate > 0, JSON.stringify(s.dropped));
});

Deno.test("oversize messages are dropped and counted by the Subject and the Integration Manager", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--max-message-size", "65536"] });
  await using client = await d.connect();
  const r = new Reactor();
  try {
    const enc = new TextEncoder();
    const big = new Uint8Array(100_000).fill(0x20);
    const dealer = r.socket("DEALER");
    dealer.onMessage(() => {});
    await dealer.connect(d.subject);
    const im = r.socket("DEALER"); // the IM binds a ROUTER
    await im.connect(`ipc://${d.dir}/im-pull`);
    for (let i = 0; i < 50; i++) {
      await dealer.send([enc.encode("Three~~~~"), enc.encode(`{"v":1,"id":"big-${i}"}`), big]);
      await im.send([enc.encode("Three~~~~done"), enc.encode(`{"v":1,"id":"big-${i}"}`), big]);
    }
    const after = await client.request("Three", { after: true });
    assert.equal(after.action, "done", "the roles keep serving after oversize messages");
    const s = await subjectStatsWhen(
      d.dir,
      (s) => (s.dropped as Record<string, number> | undefined)?.oversize === 50,
    );
    assert.equal((s.dropped as Record<string, number>).oversize, 50, JSON.stringify(s.dropped));
    let imStats: Record<string, unknown> = {};
    for (let i = 0; i < 40 && imStats.oversize !== 50; i++) {
      await new Promise((res) => setTimeout(res, 100));
      imStats = await roleStats(d.dir, "integration-manager");
    }
    assert.equal(imStats.oversize, 50, JSON.stringify(imStats));
  } finally {
    await r.close();
  }
});

Deno.test("an [actiontimeout] entry sets one action's handler timeout; others keep the global one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmt" });
  try {
    const timeouts = `${dir}/timeouts.ini`;
    await Deno.writeTextFile(timeouts, "[actiontimeout]\nT?Slow?sleep = 150\n");
    await using d = await startDeployment({
      workers: 1,
      files: [...RUNTIME_FIXTURE, timeouts],
      args: ["--handler-timeout", "30000"],
    });
    await using client = await d.connect();
    const t0 = performance.now();
    const slow = await client.request("Slow", { ms: 3000 });
    const took = performance.now() - t0;
    assert.equal(slow.error?.code, "timeout");
    assert.match(slow.error!.message, /ran past 150 ms/);
    assert.ok(took < 2500, `the timeout error came after ${Math.round(took)} ms`);
    const fast = await client.request("Slow", { ms: 10 });
    assert.equal(fast.action, "done", "a call within its timeout finishes");
    const who = await client.request("Who", { ms: 400 });
    assert.equal(who.action, "done", "other actions keep the 30 s global timeout");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a repeated request is dropped while among the last duplicate_window requests, and runs again after", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--duplicate-window", "3"] });
  await using client = await d.connect();
  const tally = await countFinals(client, "Three~~~~");
  for (const id of ["a", "a", "b", "c", "d", "a"]) await client.send("Three", { id }, { id: `dup-${id}` });
  for (let i = 0; i < 50 && tally.finals.size < 4; i++) await new Promise((r) => setTimeout(r, 50));
  await tally.stop();
  assert.deepEqual(Object.fromEntries(tally.finals), { "dup-a": 2, "dup-b": 1, "dup-c": 1, "dup-d": 1 });
  const s = await subjectStatsWhen(
    d.dir,
    (s) => (s.dropped as Record<string, number> | undefined)?.duplicate === 1,
  );
  assert.equal((s.dropped as Record<string, number>).duplicate, 1, JSON.stringify(s.dropped));
});
