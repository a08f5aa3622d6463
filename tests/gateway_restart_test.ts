// The HTTP gateway's `?wait=0` when the Subject dies: a request answered 202 is kept by the gateway
// until its final publication and sent again to the restarted Subject, as a waited one is
// (`Client.submit`); its Idempotency-Key is remembered like a waited one's. Real processes (`start
// --http`), real sockets, a real SIGKILL.
import assert from "node:assert/strict";
import { freePort, killRole, rolePids, roleStats } from "../testing/deployment.ts";
import { countFinals, settle } from "./finals.ts";
import { startDeployment } from "./helpers.ts";

async function post(
  url: string,
  body: unknown,
  key: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "Idempotency-Key": key },
  });
  return { status: r.status, json: await r.json() };
}

Deno.test("gateway: 200 requests answered 202 (?wait=0) each get one final though the Subject is SIGKILLed while they run; their keys are remembered", async () => {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  await using d = await startDeployment({ workers: 2, args: ["--http", `127.0.0.1:${port}`] });
  await using client = await d.connect();
  const w = await countFinals(d, "Slow");
  try {
    // The gateway's subscriptions first (its first request of a flow waits for them).
    assert.equal((await post(`${url}/v1/flows/Slow`, { ms: 0 }, "warm-up")).status, 200);
    const n = 200;
    const keys = Array.from({ length: n }, (_, i) => `g-${i}`);
    // Each sleeps 1.5 s in its handler: all are accepted, none finished, when the Subject dies.
    const answers = await Promise.all(
      keys.map((key, i) => post(`${url}/v1/flows/Slow?wait=0`, { ms: 1500, i }, key)),
    );
    answers.forEach((a, i) => assert.equal(a.status, 202, `request ${i}`));
    // The request id: the key, then the digest that scopes it to its caller and flow.
    const ids = answers.map((a, i) => {
      const id = String(a.json.id);
      assert.match(id, new RegExp(`^${keys[i]}~[0-9a-f]{32}$`));
      return id;
    });
    const old = await killRole(d.dir, "subject");
    assert.ok(old !== undefined, "a Subject to kill");
    // Else the test would pass without anything sent again (a slow machine: the 202s took 1.5 s).
    const unfinished = ids.filter((id) => !w.finals.has(id)).length;
    assert.ok(unfinished >= n / 2, `only ${unfinished} of ${n} were unfinished when the Subject died`);
    // Lost, they would never come: bounded.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((r) => timer = setTimeout(() => r(false), 45_000));
    const got = await Promise.race([w.count(n + 1).then(() => true), late]);
    clearTimeout(timer);
    const missing = ids.filter((id) => !w.finals.has(id));
    assert.ok(got, `finals missing after 45 s: ${missing.length} (${missing.slice(0, 5).join(", ")}…)`);
    const pids = await rolePids(d.dir, "subject");
    assert.ok(pids.length === 1 && pids[0] !== old, "start restarted the Subject");
    // A retry of a 202'd key, waited: the first one's final, not a second run (its body differs).
    const retried = await post(`${url}/v1/flows/Slow`, { ms: 0, i: -1 }, "g-7");
    assert.equal(retried.status, 200);
    assert.equal((retried.json.values as { i: number }).i, 7, "the first request's final");
    // And with ?wait=0 again: 202, nothing sent.
    assert.deepEqual(await post(`${url}/v1/flows/Slow?wait=0`, { ms: 0, i: -2 }, "g-8"), {
      status: 202,
      json: { id: ids[8] },
    });
    const sentinel = await settle(d, client, w.seen, "Slow");
    const dupes = [...w.finals].filter(([, c]) => c !== 1);
    assert.deepEqual(dupes, [], "no request has two finals");
    assert.equal(w.finals.size, n + 2, "no final for anything else (warm-up, sentinel)");
    assert.equal(w.finals.get(sentinel), 1);
  } finally {
    await w.close();
  }
});

/** Resolves once the gateway at `url` answers `/healthz` (restarted by `start`); fails after 10 s. */
async function untilServing(url: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail("the gateway did not restart within 10 s");
}

Deno.test("gateway: keyed requests answered 202, then the gateway SIGKILLed before their finals: a retry to the restarted gateway gets each final (the Subject kept it: replay), and none runs twice; a paused one's retry gets its pause", async () => {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  await using d = await startDeployment({
    workers: 2,
    args: ["--http", `127.0.0.1:${port}`, "--http-wait-timeout", "5000"],
  });
  await using client = await d.connect();
  const w = await countFinals(d, "Slow");
  try {
    assert.equal((await post(`${url}/v1/flows/Slow`, { ms: 0 }, "warm-up")).status, 200);
    const n = 100;
    const keys = Array.from({ length: n }, (_, i) => `k-${i}`);
    // Each sleeps 1 s in its handler: accepted, none finished, when the gateway dies.
    const accepted = await Promise.all(
      keys.map((key, i) => post(`${url}/v1/flows/Slow?wait=0`, { ms: 1000, i }, key)),
    );
    accepted.forEach((a, i) => assert.equal(a.status, 202, `request ${i}`));
    const ids = accepted.map((a) => String(a.json.id));
    const old = await killRole(d.dir, "gateway");
    assert.ok(old !== undefined, "a gateway to kill");
    assert.ok(
      ids.filter((id) => !w.finals.has(id)).length >= n / 2,
      "most still running when the gateway died",
    );
    // Their finals are published while no gateway waits for them.
    await w.count(n + 1);
    await untilServing(url);
    const retried = await Promise.all(
      keys.map((key, i) => post(`${url}/v1/flows/Slow`, { ms: 0, i: -i }, key)),
    );
    retried.forEach((r, i) => {
      assert.equal(r.status, 200, `retry ${i}: ${JSON.stringify(r.json).slice(0, 200)}`);
      assert.equal((r.json.values as { i: number }).i, i, "the first request's final");
      assert.equal(r.json.replay, true);
      assert.equal(r.json.id, ids[i]);
    });
    // A keyed request that paused: its retry gets the pause again (202, the same token), and once
    // resumed, the final.
    const paused = await post(`${url}/v1/flows/Pause`, { a: 1 }, "p-1");
    assert.equal(paused.status, 202);
    assert.ok(await killRole(d.dir, "gateway") !== undefined, "a gateway to kill");
    await untilServing(url);
    const again = await post(`${url}/v1/flows/Pause`, { a: 2 }, "p-1");
    assert.equal(again.status, 202, JSON.stringify(again.json).slice(0, 200));
    assert.equal(again.json.resume, paused.json.resume, "the same pause");
    assert.equal(again.json.replay, true);
    const resumed = await fetch(`${url}/v1/resume/${encodeURIComponent(String(paused.json.resume))}`, {
      method: "POST",
      body: "{}",
    });
    assert.equal(resumed.status, 200);
    await resumed.body?.cancel();
    const sentinel = await settle(d, client, w.seen, "Slow");
    const dupes = [...w.finals].filter(([, c]) => c !== 1);
    assert.deepEqual(dupes, [], "no request ran twice");
    assert.equal(w.finals.size, n + 2);
    assert.equal(w.finals.get(sentinel), 1);
  } finally {
    await w.close();
  }
});

Deno.test("gateway: a keyed retry whose final the Subject no longer keeps (the gateway restarted, replay_buffer 0) is answered 410 forgotten at once, not run again", async () => {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  await using d = await startDeployment({
    workers: 1,
    args: ["--http", `127.0.0.1:${port}`, "--replay-buffer", "0", "--http-wait-timeout", "20000"],
  });
  const first = await post(`${url}/v1/flows/Three`, { i: 1 }, "gone");
  assert.equal(first.status, 200);
  assert.ok(await killRole(d.dir, "gateway") !== undefined, "a gateway to kill");
  await untilServing(url);
  const t0 = performance.now();
  // Before: the Subject dropped it as a duplicate, unanswered: 504 after http_wait_timeout (20 s).
  const retry = await post(`${url}/v1/flows/Three`, { i: 2 }, "gone");
  assert.ok(performance.now() - t0 < 5000, `answered after ${Math.round(performance.now() - t0)} ms`);
  assert.equal(retry.status, 410, JSON.stringify(retry.json));
  assert.equal((retry.json.error as { code: string }).code, "forgotten");
  // A new key runs.
  assert.equal((await post(`${url}/v1/flows/Three`, { i: 3 }, "new")).status, 200);
  // Two runs (the first and the new key) and the one refused answer: the retry ran nothing.
  let outcomes: unknown;
  let refused: unknown;
  for (let i = 0; i < 30; i++) {
    const s = await roleStats(d.dir, "subject") as {
      requests?: { flows: Record<string, { outcomes: object }> };
      refused?: number;
    };
    outcomes = s.requests?.flows.Three?.outcomes;
    refused = s.refused;
    if ((outcomes as { done?: number } | undefined)?.done === 2) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(outcomes, { done: 2 });
  assert.equal(refused, 1);
});

Deno.test("gateway: a keyed POST answered 503 (the Subject's connection cap) runs when retried with its key, as Retry-After says", async () => {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  await using _d = await startDeployment({
    workers: 1,
    args: ["--http", `127.0.0.1:${port}`, "--max-in-flight-per-connection", "1"],
  });
  assert.equal((await post(`${url}/v1/flows/Three`, {}, "warm-up")).status, 200);
  // 202 once the Subject took it: the gateway's connection has its one place taken.
  assert.equal((await post(`${url}/v1/flows/Slow?wait=0`, { ms: 1500 }, "slow")).status, 202);
  const refused = await post(`${url}/v1/flows/Three`, { i: 1 }, "busy");
  assert.equal(refused.status, 503, JSON.stringify(refused.json));
  // (A waited retry of the 202'd key gets that request's final.)
  assert.equal((await post(`${url}/v1/flows/Slow`, { ms: 1500 }, "slow")).status, 200);
  // Before: the gateway answered the retry with the 503 it remembered, and the Subject had the
  // request's id in its duplicate window: sent on, it was dropped.
  const retried = await post(`${url}/v1/flows/Three`, { i: 2 }, "busy");
  assert.equal(retried.status, 200, JSON.stringify(retried.json));
  assert.equal((retried.json.values as { i: number }).i, 2);
});
