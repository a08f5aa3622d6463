// Poison requests (SPEC §6, issue 16 item 1): a request whose handler blocks its worker's event
// loop for good ends with a `poisoned` error publication after `max_deliveries` deliveries,
// while steady traffic around it loses nothing, and SIGTERM still stops `start`. With the handler
// sandbox (the default) the blocked sandbox thread is terminated and the worker process serves
// on; with `--no-sandbox` the watchdog kills the hung worker and it is replaced. Real processes,
// real signals.
import assert from "node:assert/strict";
import { rolePids, roleStats } from "../testing/deployment.ts";
import type { Client } from "../src/client/client.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { readUntil } from "../src/_async.ts";
import { Client as ZClient } from "../src/client/client.ts";
import { spawnStart, startDeployment } from "./helpers.ts";

const POISON = [
  new URL("../fixtures/components/poison/flows.ini", import.meta.url).pathname,
  new URL("../fixtures/components/poison/mapping.ini", import.meta.url).pathname,
];
const HANDLER_TIMEOUT = 1500;

/** A role's counters (its first process's) once `ok` holds of them (they are written once a second), or after 5 s. */
async function statsWhen(
  dir: string,
  role: string,
  ok: (s: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  const deadline = performance.now() + 5000;
  for (;;) {
    const s = await roleStats(dir, role);
    if (ok(s) || performance.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}
const HEARTBEAT_TIMEOUT = 2000;

/**
 * Steady load: `total` requests on `flow` (values `{ k, ms }`, ids `ok-<k>`), `lanes` of them in
 * flight at all times. `flowing` resolves once `lanes` have been answered (the load is through
 * every role); `done` with every answer.
 */
function steadyLoad(client: Client, flow: string, total: number, lanes: number, ms: number) {
  let sent = 0;
  const results: Publication[] = [];
  const flowing = Promise.withResolvers<void>();
  const lane = async () => {
    while (sent < total) {
      const k = sent++;
      results.push(await client.request(flow, { k, ms }, { id: `ok-${k}`, timeout: 60_000 }));
      if (results.length === lanes) flowing.resolve();
    }
  };
  return { results, flowing: flowing.promise, done: Promise.all(Array.from({ length: lanes }, lane)) };
}

for (const sandbox of [true, false]) {
  const how = sandbox
    ? "its sandbox is terminated and the same worker processes serve on"
    : "--no-sandbox: the hung workers are killed and replaced";
  Deno.test(`a request whose handler blocks the event loop ends as poisoned; steady traffic loses nothing; ${how}; SIGTERM stops start`, () =>
    blockedLoop(sandbox));
}

async function blockedLoop(sandbox: boolean): Promise<void> {
  await using d = await startDeployment({
    files: POISON,
    workers: 2,
    args: [
      ...(sandbox ? [] : ["--no-sandbox"]),
      "--handler-timeout",
      String(HANDLER_TIMEOUT),
      "--heartbeat-interval",
      // With sandboxes, heartbeats every 10 ms make likely the race the `lost` check below guards
      // against (a STUCK report behind a heartbeat: 5 of 5 runs hit it before it was fixed).
      sandbox ? "10" : "200",
      "--heartbeat-timeout",
      String(HEARTBEAT_TIMEOUT),
    ],
  });
  await using client = await d.connect();
  const workersBefore = await rolePids(d.dir, "worker");

  // Steady load: 40 requests in flight at all times (20 ms handlers), 3,000 in all.
  const total = 3000;
  const load = steadyLoad(client, "Hang", total, 40, 20);
  const results = load.results;
  await load.flowing;
  const t0 = performance.now();
  const poisoned = await client.request("Hang", { hang: true }, { id: "poison", timeout: 30_000 });
  const took = performance.now() - t0;
  await load.done;

  assert.equal(poisoned.action, "error", JSON.stringify(poisoned));
  assert.equal(poisoned.error?.code, "poisoned");
  assert.match(poisoned.error!.message, /blocked its event loop/);
  assert.match(poisoned.error!.message, /delivered 2 times/);
  const bound = HANDLER_TIMEOUT + HEARTBEAT_TIMEOUT + 3000;
  assert.ok(took < bound, `the poisoned error came after ${Math.round(took)} ms (bound ${bound} ms)`);

  assert.equal(results.length, total, "every ordinary request was answered");
  const failed = results.filter((p) => p.action !== "done");
  assert.deepEqual(failed.map((p) => p.error), [], "no ordinary request failed");
  assert.deepEqual(
    results.map((p) => Number(p.values.k)).sort((a, b) => a - b),
    Array.from({ length: total }, (_, k) => k),
  );

  const subject = await statsWhen(d.dir, "subject", (s) => s.poisoned === 1);
  assert.equal(subject.poisoned, 1);
  if (sandbox) {
    // Each STUCK report came ahead of the heartbeat that no longer listed the terminated sandbox's
    // steps: none was taken for lost (which let the poison step run again uncounted).
    assert.equal(subject.lost, 0, "no step taken for lost");
    // The blocked sandboxes were terminated and started again: no worker process was lost.
    assert.deepEqual((await rolePids(d.dir, "worker")).sort(), [...workersBefore].sort(), "the same workers");
    const pids = new Set<number>();
    for (let k = 0; k < 20; k++) {
      const p = await client.request("Hang", { ms: 1 }, { timeout: 10_000 });
      assert.equal(p.action, "done", JSON.stringify(p.error));
      pids.add(Number(p.values.pid));
    }
    assert.ok([...pids].every((p) => workersBefore.includes(p)), "answered by the same worker processes");
  } else {
    await replaced(d.dir, workersBefore);
    // The replaced workers serve again.
    const again = await client.request("Hang", { ms: 1 }, { timeout: 10_000 });
    assert.equal(again.action, "done");
  }

  await client.close();
  const stopAt = performance.now();
  d.process.kill("SIGTERM");
  const status = await d.process.status;
  const stopTook = performance.now() - stopAt;
  assert.equal(status.code, 0);
  assert.ok(stopTook < 20_000, `SIGTERM stopped start in ${Math.round(stopTook)} ms`);
}

/** Both workers that ran the poison were killed by their watchdogs and replaced. */
async function replaced(dir: string, workersBefore: number[]): Promise<void> {
  const deadline = performance.now() + 10_000;
  let workersAfter = await rolePids(dir, "worker");
  while (
    (workersAfter.length < 2 || workersAfter.some((p) => workersBefore.includes(p))) &&
    performance.now() < deadline
  ) {
    await new Promise((r) => setTimeout(r, 100));
    workersAfter = await rolePids(dir, "worker");
  }
  assert.equal(workersAfter.length, 2, "two live workers again");
  assert.ok(!workersAfter.some((p) => workersBefore.includes(p)), "the hung workers were replaced");
}

Deno.test("a poison request alone on a quiet deployment: the worker's other steps are not counted against", async () => {
  await using d = await startDeployment({
    files: POISON,
    workers: 2,
    args: ["--handler-timeout", "1000", "--heartbeat-interval", "200", "--heartbeat-timeout", "3000"],
  });
  await using client = await d.connect();
  assert.equal((await statsWhen(d.dir, "subject", (s) => s.workers === 2)).workers, 2, "both workers joined");
  // Innocents (600 ms each) in flight on both workers when the poison lands: those on the blocked
  // worker are handed on with the poison, so they are on both workers its watchdogs report. They
  // are never counted as failed deliveries (two would poison them too), and finish.
  const innocents = Array.from(
    { length: 20 },
    (_, k) => client.request("Hang", { k, ms: 600 }, { id: `slow-${k}`, timeout: 30_000 }),
  );
  await new Promise((r) => setTimeout(r, 200));
  const poison = await client.request("Hang", { hang: true }, { id: "poison", timeout: 20_000 });
  assert.equal(poison.error?.code, "poisoned");
  for (const p of await Promise.all(innocents)) assert.equal(p.action, "done", JSON.stringify(p.error));
  const subject = await statsWhen(d.dir, "subject", (s) => s.poisoned === 1);
  assert.equal(subject.poisoned, 1);
  assert.ok(Number(subject.redelivered) > 2, `innocent steps were handed on (${subject.redelivered})`);
});

Deno.test("a request that kills its worker process is poisoned once it has killed a worker alone; steady traffic loses nothing", async () => {
  await using d = await startDeployment({
    files: POISON,
    workers: 2,
    args: ["--heartbeat-interval", "100", "--heartbeat-timeout", "1000"],
  });
  await using client = await d.connect();
  assert.equal((await statsWhen(d.dir, "subject", (s) => s.workers === 2)).workers, 2, "both workers joined");
  // 60 requests of 300 ms always in flight: the workers that the poison kills hold many steps,
  // and the steps redelivered with it share its second worker too.
  const total = 1500;
  const load = steadyLoad(client, "Hang", total, 60, 300);
  const results = load.results;
  await load.flowing;
  const poison = await client.request("Hang", { crash: true }, { id: "poison", timeout: 30_000 });
  await load.done;
  assert.equal(poison.error?.code, "poisoned", JSON.stringify(poison));
  assert.match(poison.error!.message, /went silent/);
  const failed = results.filter((p) => p.action !== "done");
  assert.deepEqual(failed.map((p) => p.error), [], "no ordinary request failed");
  assert.equal(results.length, total);
  const subject = await statsWhen(d.dir, "subject", (s) => s.poisoned === 1);
  assert.equal(subject.poisoned, 1);
});

const TWO = new URL("../fixtures/components/poison_two/", import.meta.url).pathname;

Deno.test("a poison step still in another sandbox when its worker reports a blocked handler is not run on there: each blocked run is one counted delivery, no step is taken for lost", async () => {
  const maxDeliveries = 3;
  await using d = await startDeployment({
    files: [`${TWO}flows.ini`, `${TWO}a/mapping.ini`, `${TWO}b/mapping.ini`],
    workers: 1,
    args: [
      "--handler-timeout",
      "1000",
      "--heartbeat-interval",
      "10",
      "--heartbeat-timeout",
      "2000",
      "--max-deliveries",
      String(maxDeliveries),
    ],
  });
  await using client = await d.connect();
  // Steady load through both sandboxes (A's handler sleeps 5 ms), 16 requests in flight.
  const total = 1000;
  const load = steadyLoad(client, "Cross", total, 16, 5);
  const results = load.results;
  await load.flowing;
  // Two poison requests at once to the one worker: the first blocks B's sandbox after 50 ms in A;
  // the second is still in A (1.8 s) when B's sandbox is restarted. Run on, it would block the new
  // sandbox under a dispatch the Subject had taken back: a run counted nowhere, and the steps
  // that sandbox held taken for lost.
  const poisoned = await Promise.all([
    client.request("Cross", { hang: true, ms: 50 }, { id: "poison-early", timeout: 60_000 }),
    client.request("Cross", { hang: true, ms: 1800 }, { id: "poison-late", timeout: 60_000 }),
  ]);
  await load.done;

  for (const p of poisoned) {
    assert.equal(p.error?.code, "poisoned", JSON.stringify(p));
    assert.match(p.error!.message, new RegExp(`delivered ${maxDeliveries} times`));
  }
  assert.equal(results.length, total);
  assert.deepEqual(
    results.filter((p) => p.action !== "done").map((p) => p.error),
    [],
    "no ordinary request failed",
  );
  assert.equal(new Set(results.map((p) => Number(p.values.k))).size, total, "each answered once");
  assert.ok(results.every((p) => (p.values.trail as string[]).join() === "a,b,a"));

  const subject = await statsWhen(d.dir, "subject", (s) => s.poisoned === poisoned.length);
  assert.equal(subject.poisoned, poisoned.length);
  assert.equal(subject.lost, 0, "no step taken for lost");
  // Every blocked run of B's handler restarted B's sandbox: as many as the deliveries counted. The
  // worker writes its counters each second: read them once written after the last poisoning.
  const after = Date.now();
  const worker = await statsWhen(d.dir, "worker", (s) => Number(s.at) > after);
  assert.equal(worker.sandboxRestarts, poisoned.length * maxDeliveries, "one restart per counted delivery");
});

Deno.test("--no-sandbox: six synchronous 1.5 s handlers sent to one worker at once (each within the limits) all run once there; the worker is not killed, no step is given to another", async () => {
  await using d = await startDeployment({
    workers: 1,
    files: POISON,
    args: ["--no-sandbox", "--handler-timeout", "4000"],
  });
  await using client = await d.connect();
  const [worker] = await rolePids(d.dir, "worker");
  // Before: the six ran back to back in one task, 9 s without a turn of the event loop; the
  // watchdog killed the worker at 4 s and the Subject gave the steps to its replacement.
  const out = await Promise.all(
    Array.from({ length: 6 }, (_, i) => client.request("Hang", { i, block: 1500 }, { timeout: 60_000 })),
  );
  for (const p of out) {
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.equal(p.values.pid, worker, "ran on the first worker");
  }
  assert.deepEqual(await rolePids(d.dir, "worker"), [worker], "the same worker");
  const s = await statsWhen(
    d.dir,
    "subject",
    (s) => (s.requests as { flows: Record<string, unknown> }).flows.Hang !== undefined,
  );
  assert.deepEqual([s.redelivered, s.lost, s.poisoned], [0, 0, 0]);
});

Deno.test("--no-sandbox: a handler blocking past the watchdog's report (not its kill) among a batch of slow synchronous ones: the steps its worker had not run yet are not run there (the Subject gave them to others), so none runs twice", async () => {
  await using d = await startDeployment({ workers: 2, files: POISON, args: ["--no-sandbox"] });
  await using client = await d.connect();
  const log = `${d.dir}/runs.log`;
  // The report comes at heartbeat_timeout / 2 (2.5 s); the kill at handler_timeout (30 s).
  const out = await Promise.all(
    Array.from(
      { length: 30 },
      (_, i) => client.request("Hang", { i, log, block: i === 0 ? 4000 : 300 }, { timeout: 90_000 }),
    ),
  );
  const outcomes = out.map((p) => p.action === "done" ? "done" : String(p.error?.code));
  assert.equal(outcomes.filter((o) => o === "done").length, 29, outcomes.join(" "));
  const runs = new Map<string, number>();
  for (const line of (await Deno.readTextFile(log)).trim().split("\n")) {
    const i = line.split(" ")[0];
    runs.set(i, (runs.get(i) ?? 0) + 1);
  }
  // Before: 14 of them ran 3 times and 4 twice (an outside attack).
  const twice = [...runs].filter(([i, n]) => i !== "0" && n > 1);
  assert.deepEqual(twice, [], `steps run more than once: ${JSON.stringify(twice)}`);
});

Deno.test("--no-sandbox: a worker killed for a blocked handler is restarted after 200 ms every time (the doubling is for workers that die as they start)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  const start = spawnStart(dir, {
    args: ["--no-sandbox", "--handler-timeout", String(HANDLER_TIMEOUT)],
    stderr: "piped",
    files: POISON,
  });
  const out = start.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const logs: string[] = [];
  const reading = (async () => {
    for await (const chunk of start.stderr.pipeThrough(new TextDecoderStream())) logs.push(chunk);
  })();
  try {
    assert.notEqual(await readUntil(out, "ready\n"), undefined, "start is ready");
    void (async () => {
      while (!(await out.read()).done) { /* drain */ }
    })();
    await using client = await ZClient.connect({
      subject: `ipc://${dir}/subject`,
      publisher: `ipc://${dir}/im-pub`,
    });
    // Two poison requests, one after the other: each blocks the one worker twice (max_deliveries).
    for (const id of ["poison-1", "poison-2"]) {
      const p = await client.request("Hang", { hang: true }, { id, timeout: 60_000 });
      assert.equal(p.error?.code, "poisoned", JSON.stringify(p));
    }
    assert.equal((await client.request("Hang", { ms: 1 }, { timeout: 20_000 })).action, "done");
    const delays = [
      ...logs.join("").matchAll(/Worker 0 \(pid \d+\) exited with "?(\w+)"?; restarting in (\d+) ms/g),
    ]
      .map((m) => [m[1], Number(m[2])]);
    // Before: 200, 400, 800, 1600 ms.
    assert.deepEqual(delays, [["SIGKILL", 200], ["SIGKILL", 200], ["SIGKILL", 200], ["SIGKILL", 200]]);
  } finally {
    start.kill("SIGTERM");
    await start.status;
    await reading;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Subject stopped past the heartbeat timeout, twice, with a step in flight and a backlog queued meanwhile: its worker is not taken for dead, nothing is delivered again or poisoned", async () => {
  await using d = await startDeployment({
    files: POISON,
    workers: 1,
    args: ["--heartbeat-interval", "200", "--heartbeat-timeout", "2000"],
  });
  await using client = await d.connect();
  assert.equal((await statsWhen(d.dir, "subject", (s) => s.workers === 1)).workers, 1, "the worker joined");
  const [subject] = await rolePids(d.dir, "subject");
  const held = client.request("Hang", { ms: 9000 }, { id: "held", timeout: 60_000 });
  const burst: Promise<string>[] = [];
  for (let stop = 0; stop < 2; stop++) {
    await new Promise((r) => setTimeout(r, 1000));
    Deno.kill(subject, "SIGSTOP");
    // A backlog for it to read when it runs again: its timers may then run before it has read
    // the heartbeats queued behind it.
    for (let k = 0; k < 10_000; k++) burst.push(client.send("Hang", { k, ms: 0 }, { id: `b${stop}-${k}` }));
    await new Promise((r) => setTimeout(r, 3000));
    Deno.kill(subject, "SIGCONT");
  }
  const p = await held;
  assert.equal(p.action, "done", JSON.stringify(p.error));
  assert.equal((await Promise.allSettled(burst)).filter((r) => r.status === "rejected").length, 0);
  const s = await statsWhen(d.dir, "subject", (s) => s.inFlight === 0 && s.pending === 0);
  assert.deepEqual([s.redelivered, s.poisoned, s.workers], [0, 0, 1], JSON.stringify(s));
});
