// Results that cannot leave a worker as they are (SPEC §6): values JSON cannot encode (BigInt,
// cycles) and values over max_message_size end in a `handler_error` naming why; the worker keeps
// running and nothing is redelivered. And values just under the limit go all the way through.
// Real processes (`cli.ts start`), real sockets.
import assert from "node:assert/strict";
import { rolePids, roleStats } from "../testing/deployment.ts";
import type { Deployment } from "./helpers.ts";
import { startDeployment } from "./helpers.ts";

const FILES = [
  new URL("./testdata/results/flows.ini", import.meta.url).pathname,
  new URL("./testdata/results/mapping.ini", import.meta.url).pathname,
];

/** Generous: a worker that crashes on the result makes the request wait for good. */
const TIMEOUT = { timeout: 30_000 };

/**
 * A generous heartbeat timeout: encoding 50 MB takes seconds on a busy machine, and each
 * circular result costs V8 100-300 ms to report, while the worker sends no heartbeat; the
 * tests are about crashes and re-runs, not about silence.
 */
const ARGS = ["--heartbeat-timeout", "20000"];

/** The Subject's counters, as written at least `ms` after now (they are written every second). */
async function subjectStatsAfter(d: Deployment, ms = 1500): Promise<Record<string, unknown>> {
  const since = Date.now() + ms;
  for (let i = 0; i < 100; i++) {
    const s = await roleStats(d.dir, "subject");
    if (Number(s.at) >= since) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the Subject's counters were not written");
}

/** The worker keeps serving, was not restarted, and the Subject redelivered nothing. */
async function assertWorkerUnharmed(d: Deployment, workersBefore: number[]): Promise<void> {
  await using client = await d.connect();
  const after = await client.request("Echo", { still: "serving" }, TIMEOUT);
  assert.equal(after.action, "done", JSON.stringify(after.error));
  assert.deepEqual(after.values, { still: "serving" });
  assert.deepEqual(await rolePids(d.dir, "worker"), workersBefore, "the worker process was not restarted");
  const s = await subjectStatsAfter(d);
  assert.equal(s.redelivered, 0, "no step was redelivered");
  assert.equal(s.lost, 0, "no step was lost on the way");
  assert.deepEqual(s.dropped, {}, "nothing was dropped");
}

Deno.test("a result JSON cannot encode (BigInt, sync and async; a cycle) is a handler_error naming the key path; the worker keeps serving", async () => {
  await using d = await startDeployment({ workers: 1, files: FILES, args: ARGS });
  await using client = await d.connect();
  const workers = await rolePids(d.dir, "worker");
  assert.equal(workers.length, 1);

  const big = await client.request("BigInt", { k: 1 }, TIMEOUT);
  assert.equal(big.error?.code, "handler_error", JSON.stringify(big));
  assert.match(
    big.error!.message,
    /^handler for \S*bigint returned values JSON cannot encode: values\.a\.b\[2\]: BigInt$/,
  );
  assert.deepEqual(big.values, { k: 1 }, "the error carries the step's input values");

  const later = await client.request("BigIntLater", { k: 2 }, TIMEOUT);
  assert.equal(later.error?.code, "handler_error", JSON.stringify(later));
  assert.match(
    later.error!.message,
    /bigint_later returned values JSON cannot encode: values\.total: BigInt$/,
  );
  assert.deepEqual(later.values, { k: 2 });

  const cycle = await client.request("Cycle", { k: 3 }, TIMEOUT);
  assert.equal(cycle.error?.code, "handler_error", JSON.stringify(cycle));
  assert.match(
    cycle.error!.message,
    /cycle returned values JSON cannot encode: values\.self: circular reference \(to values\)$/,
  );
  assert.deepEqual(cycle.values, { k: 3 });

  // The second step's handler returns the cycle; the error names that handler.
  const second = await client.request("CycleSecond", { k: 4 }, TIMEOUT);
  assert.equal(second.error?.code, "handler_error", JSON.stringify(second));
  assert.match(
    second.error!.message,
    /^handler for \S*CycleSecond\S*cycle returned .*values\.self: circular reference/,
  );
  assert.deepEqual(second.values, { k: 4 });

  // An error whose values cannot be sent leaves them out, and says so.
  const thrown = await client.request("ThrowPoisoned", { k: 5 }, TIMEOUT);
  assert.equal(thrown.error?.code, "handler_error", JSON.stringify(thrown));
  assert.equal(
    thrown.error!.message,
    "gave up (values left out: values JSON cannot encode: values.big: BigInt)",
  );
  assert.deepEqual(thrown.values, {});

  // An error message is cut at 4,096 characters.
  const long = await client.request("LongError", { k: 6 }, TIMEOUT);
  assert.equal(long.error?.code, "handler_error");
  assert.equal(long.error!.message.length, 4096 - 40 + "…(95944 more characters)".length);
  assert.match(long.error!.message, /^e{4056}…\(95944 more characters\)$/);
  assert.deepEqual(long.values, { k: 6 });

  // Many at once, mixed with good requests: every one answered, each as it should be.
  const mixed = await Promise.all(
    Array.from(
      { length: 60 },
      (_, i) => client.request(["BigInt", "BigIntLater", "Echo"][i % 3], { i }, TIMEOUT),
    ),
  );
  mixed.forEach((p, i) => {
    if (i % 3 === 2) assert.equal(p.action, "done", JSON.stringify(p.error));
    else assert.equal(p.error?.code, "handler_error", JSON.stringify(p.error));
    assert.equal(p.values.i, i);
  });

  await assertWorkerUnharmed(d, workers);
});

Deno.test("a result over max_message_size (2 MB, 50 MB) is a handler_error with its size and the limit, never re-run", async () => {
  await using d = await startDeployment({ workers: 1, files: FILES, args: ARGS });
  await using client = await d.connect();
  const workers = await rolePids(d.dir, "worker");
  assert.equal(workers.length, 1);
  for (const bytes of [2_000_000, 50_000_000]) {
    const p = await client.request("Huge", { bytes }, TIMEOUT);
    assert.equal(p.error?.code, "handler_error", JSON.stringify(p).slice(0, 300));
    const encoded = JSON.stringify({ bytes, s: "x".repeat(bytes) }).length;
    assert.equal(
      p.error!.message,
      `handler for T?Huge?huge returned ${encoded} bytes of values, over max_message_size (1048576 bytes)`,
    );
    assert.deepEqual(p.values, { bytes }, "the error carries the step's input values, not the result");
  }
  await assertWorkerUnharmed(d, workers);
});

Deno.test("a request of 1,048,500 bytes of values (just under max_message_size) through a pass-through handler ends in `done` with the same values", async () => {
  await using d = await startDeployment({ workers: 1, files: FILES, args: ARGS });
  await using client = await d.connect();
  const workers = await rolePids(d.dir, "worker");
  const values = { s: "y".repeat(1_048_500 - '{"s":""}'.length) };
  assert.equal(JSON.stringify(values).length, 1_048_500);
  for (let i = 0; i < 3; i++) {
    const p = await client.request("Echo", values, TIMEOUT);
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.equal(p.values.s, values.s);
  }
  await assertWorkerUnharmed(d, workers);
});
