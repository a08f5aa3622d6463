// End-to-end tests: a real `start` (Subject, Integration Manager, 2 worker processes) over
// real sockets, driven by real clients.
import assert from "node:assert/strict";
import type { Publication } from "../src/wire/protocol.ts";
import { readUntil } from "../src/_async.ts";
import { runCli, startDeployment } from "./helpers.ts";

const EXAMPLE = [
  new URL("../examples/hello/flows.ini", import.meta.url).pathname,
  new URL("../examples/hello/action_mapping.ini", import.meta.url).pathname,
];

Deno.test("runtime over ipc with 2 worker processes", async (t) => {
  await using d = await startDeployment({
    workers: 2,
    args: ["--step-limit", "4", "--handler-timeout", "300"],
  });
  await using client = await d.connect();

  await t.step("a 3-step flow runs every step in order and publishes done", async () => {
    const p = await client.request("Three", { start: 1 });
    assert.equal(p.topic, "Three~~~~done");
    assert.equal(p.action, "done");
    assert.deepEqual(p.values, { start: 1, trace: ["one", "two", "three"] });
    assert.equal(p.error, undefined);
  });

  await t.step("a @PUBLISH step is handled by a subscribed service that continues the flow", async () => {
    await using service = await d.connect();
    const seen: Publication[] = [];
    await service.handle("T?Svc?approve", (v) => {
      return { ...v, approvedBy: "service" };
    }, { flow: "Svc" });
    const tap = await client.subscribe("Svc~PUBLISH~");
    const p = await client.request("Svc", { order: 7 });
    assert.deepEqual(p.values, { order: 7, trace: ["one", "two"], approvedBy: "service" });
    const step = (await tap.next()).value as Publication;
    seen.push(step);
    await tap.return!();
    assert.equal(seen[0].topic, "Svc~PUBLISH~T~Svc~approve");
    assert.equal(seen[0].id, p.id, "the step publication carries the request id");
    assert.deepEqual(seen[0].values, { order: 7, trace: ["one"] });
  });

  await t.step("1,000 concurrent requests are each answered exactly once with their own values", async () => {
    const finals = new Map<string, number>();
    const tap = await client.subscribe("Three~~~~");
    const counting = (async () => {
      for await (const p of tap) {
        finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
        if (finals.size === 1000) break;
      }
    })();
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => client.request("Three", { i }, { id: `req-${i}` })),
    );
    results.forEach((p, i) => {
      assert.equal(p.id, `req-${i}`);
      assert.deepEqual(p.values, { i, trace: ["one", "two", "three"] });
    });
    await counting;
    assert.equal(finals.size, 1000);
    assert.ok([...finals.values()].every((n) => n === 1), "one final publication per request id");
  });

  await t.step("load is spread over both worker processes", async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.request("Who", { i, ms: 5 })),
    );
    const pids = new Set(results.map((p) => p.values.pid));
    assert.equal(pids.size, 2, `served by ${[...pids].join(", ")}`);
  });

  await t.step("errors come back as error publications on the flow's topic", async () => {
    const unknown = await client.request("NoSuchFlow", {});
    assert.equal(unknown.topic, "NoSuchFlow~~~~error");
    assert.equal(unknown.error?.code, "unknown_flow");

    const boom = await client.request("Boom", { x: 1 });
    assert.equal(boom.topic, "Boom~~~~error");
    assert.deepEqual(boom.error, { code: "handler_error", message: "kaboom" });

    const unmapped = await client.request("Unmapped", {});
    assert.equal(unmapped.error?.code, "no_handler");
    assert.match(unmapped.error!.message, /T\?Unmapped\?nothing_maps_this/);

    const slow = await client.request("Slow", { ms: 2000 });
    assert.equal(slow.error?.code, "timeout");
    const fast = await client.request("Slow", { ms: 1 });
    assert.deepEqual(fast.values, { ms: 1, slept: true }, "the worker is free again after a timeout");

    const loop = await client.request("Loop", {});
    assert.equal(loop.error?.code, "step_limit");

    const noStep = await client.request("Three", {}, { key: "X?Other?zzz" });
    assert.equal(noStep.error?.code, "no_step");
  });

  await t.step("a service that exits right after its last reply loses nothing", async () => {
    // A separate process handles one @PUBLISH step and exits as soon as its handler returns
    // (after draining: waiting for the Subject to accept the continuation).
    const service = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./peers/one_shot_service.ts", import.meta.url).pathname,
        d.subject,
        d.publisher,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = service.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await reader.read()).value?.trim(), "ready");
    const p = await client.request("Svc", { last: true });
    assert.deepEqual(p.values, { last: true, trace: ["one", "two"], approvedBy: "one-shot" });
    assert.equal((await service.status).code, 0);
    reader.releaseLock();
  });

  await t.step("send without --wait exits once accepted, and the request still runs", async () => {
    const tap = await client.subscribe("Three~~~~");
    const r = await runCli(["send", "Three", "--data", '{"fire":"forget"}', "--id", "fire-1", ...d.flags]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { id: "fire-1" });
    for (;;) {
      const p = (await tap.next()).value as Publication;
      if (p.id === "fire-1") {
        assert.deepEqual(p.values, { fire: "forget", trace: ["one", "two", "three"] });
        break;
      }
    }
    await tap.return!();
  });

  assert.equal(await d.stop(), 0, "start exits 0 after SIGINT");
});

Deno.test("runtime over tcp on loopback", async () => {
  await using d = await startDeployment({ workers: 2, transport: "tcp" });
  await using client = await d.connect();
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => client.request("Three", { i })));
  results.forEach((p, i) => assert.deepEqual(p.values, { i, trace: ["one", "two", "three"] }));
});

Deno.test("CLI: send --wait prints only the final publication; exit codes 0, 1 and 3; tap", async () => {
  await using d = await startDeployment({ workers: 1, files: EXAMPLE });
  const ok = await runCli(["send", "Hello", "--data", '{"name":"Ada"}', "--wait", ...d.flags]);
  assert.equal(ok.code, 0, ok.stderr);
  const p = JSON.parse(ok.stdout);
  assert.deepEqual(Object.keys(p), [
    "topic",
    "flow",
    "sender",
    "context",
    "decorator",
    "action",
    "id",
    "values",
  ]);
  assert.equal(p.topic, "Hello~~~~done");
  assert.equal(p.values.greeting, "Hello, Ada!");
  assert.equal(p.values.letters, 8);

  const err = await runCli(["send", "Nope", "--wait", ...d.flags]);
  assert.equal(err.code, 1);
  assert.equal(JSON.parse(err.stdout).error.code, "unknown_flow");

  const bad = await runCli(["send", "Hello", "--data", "[1]", ...d.flags]);
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /must be a JSON object/);

  const tap = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../cli.ts", import.meta.url).pathname,
      "tap",
      "Hello~",
      "--count",
      "1",
      ...d.flags,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { ZMANAGER_LOG: "warning" },
  }).spawn();
  // tap says on stderr when its subscription is active.
  const errReader = tap.stderr.pipeThrough(new TextDecoderStream()).getReader();
  assert.ok(await readUntil(errReader, "subscribed") !== undefined, "tap exited before it subscribed");
  const sent = await runCli([
    "send",
    "Hello",
    "--data",
    '{"name":"Tap"}',
    "--id",
    "tap-1",
    "--wait",
    ...d.flags,
  ]);
  assert.equal(sent.code, 0);
  let tapped = "";
  for await (const chunk of tap.stdout.pipeThrough(new TextDecoderStream())) tapped += chunk;
  assert.equal((await tap.status).code, 0);
  const line = JSON.parse(tapped.trim());
  assert.equal(line.id, "tap-1");
  assert.equal(line.topic, "Hello~~~~done");
  assert.equal(line.values.greeting, "Hello, Tap!");
  while (!(await errReader.read()).done) { /* drain stderr */ }
});

Deno.test("CLI: send --wait with no deployment times out with exit code 3", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  const r = await runCli(["send", "Hello", "--wait", "--timeout", "300", "--runtime-dir", dir]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /is the deployment running/);
  await Deno.remove(dir, { recursive: true });
});
