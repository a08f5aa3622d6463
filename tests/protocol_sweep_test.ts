// What the correctness sweep (issue 17) found, over real processes: refusals answered on the
// service's DEALER (NACK), error publications that are always JSON objects, resume answers under
// the resume's own id, and concurrent resumes of one token that each learn which one won.
import assert from "node:assert/strict";
import { type Client, Client as ZClient, RequestRefusedError } from "../src/client/client.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { BatchWriter, KIND_CODES, readBatch } from "../src/wire/batch.ts";
import { Reactor, type ReactorSocket } from "../src/zmq/reactor.ts";
import { startDeployment } from "./helpers.ts";
import { roleStats } from "../testing/deployment.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A raw service: a DEALER to the Subject whose ACK and NACK frames are collected. */
async function rawService(reactor: Reactor, subject: string) {
  const s = reactor.socket("DEALER");
  await s.connect(subject);
  const acked = new Set<string>();
  const refused = new Map<string, { reason: string; message: string; t?: number }>();
  const waiters: (() => void)[] = [];
  s.onMessage((f) => {
    const list = JSON.parse(dec.decode(f[1]));
    if (dec.decode(f[0]) === "ACK") { for (const id of list) acked.add(id); }
    if (dec.decode(f[0]) === "NACK") { for (const r of list) refused.set(r.id, r); }
    for (const w of waiters.splice(0)) w();
  });
  /** Waits until `id` is acknowledged or refused (10 s at most). */
  const answer = async (id: string) => {
    const deadline = performance.now() + 10_000;
    while (!acked.has(id) && !refused.has(id) && performance.now() < deadline) {
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return { acked: acked.has(id), refused: refused.get(id) };
  };
  return { socket: s as ReactorSocket, answer };
}

/** The last publication of each request id, as they arrive; `stop()` ends the collecting. */
async function lastPublications(client: Client) {
  const seen = new Map<string, Publication>();
  const stream = await client.subscribe("");
  const collecting = (async () => {
    for await (const p of stream) seen.set(p.id, p);
  })();
  return {
    seen,
    stop: async () => {
      await stream.return!();
      await collecting;
    },
  };
}

const frames = (topic: string, header: object | string, values: string) => [
  enc.encode(topic),
  enc.encode(typeof header === "string" ? header : JSON.stringify(header)),
  enc.encode(values),
];

Deno.test("dropped messages are refused on the DEALER (NACK) with their reason, never acknowledged", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--max-message-size", "2048"] });
  const reactor = new Reactor();
  try {
    const svc = await rawService(reactor, d.subject);
    // A flow name with a space: its error could reach no subscriber, so the sender is told.
    // Each with a send number (`t`), which a refusal echoes (the last: none, the header unread).
    await svc.socket.send(frames("Ca lc~~~~", { v: 1, id: "bad-topic", t: 11 }, "{}"));
    // A ping whose action does not start with ping.
    await svc.socket.send(frames("~~~~pong-1", { v: 1, id: "bad-ping", k: "ping", t: 12 }, "{}"));
    // Four frames after the identity, the header where it belongs.
    await svc.socket.send([
      ...frames("Three~~~~", { v: 1, id: "four-frames", t: 13 }, "{}"),
      enc.encode("x"),
    ]);
    // A values frame over max_message_size.
    await svc.socket.send(frames("Three~~~~", { v: 1, id: "too-big", t: 14 }, `{"a":"${"x".repeat(4096)}"}`));
    // A header with a usable id but a position that is not a whole number from 0.
    await svc.socket.send(frames("Three~~~~", { v: 1, id: "bad-pos", pos: -1, t: 15 }, "{}"));
    // And a good one, acknowledged.
    await svc.socket.send(frames("Three~~~~", { v: 1, id: "good" }, "{}"));
    const expect: [string, string, number | undefined][] = [
      ["bad-topic", "bad_topic", 11],
      ["bad-ping", "bad_topic", 12],
      ["four-frames", "frame_count", 13],
      ["too-big", "oversize", 14],
      ["bad-pos", "bad_header", undefined],
    ];
    for (const [id, reason, t] of expect) {
      const a = await svc.answer(id);
      assert.equal(a.acked, false, `${id} is not acknowledged`);
      assert.equal(a.refused?.reason, reason, `${id}: ${JSON.stringify(a)}`);
      assert.equal(a.refused?.t, t, `${id}: its send number echoed`);
      assert.ok(a.refused!.message.length > 0);
    }
    assert.equal((await svc.answer("good")).acked, true);
  } finally {
    await reactor.close();
  }
  // The bundled client turns a refusal into an error instead of resending forever.
  await using client = await d.connect();
  await assert.rejects(
    client.request("Ca lc", {}, { timeout: 10_000 }),
    (e) => e instanceof RequestRefusedError && e.reason === "bad_topic",
  );
  await assert.rejects(
    client.send("Three", { a: "x".repeat(4096) }),
    (e) => e instanceof RequestRefusedError && e.reason === "oversize",
  );
});

Deno.test("error publications always carry a JSON object, whatever values the request had", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const { seen, stop } = await lastPublications(client);
  const reactor = new Reactor();
  try {
    const svc = await rawService(reactor, d.subject);
    const cases: [string, string, string][] = [
      ["Three~~~~", "not-json", "not json"],
      ["Three~~~~", "array", "[1,2]"],
      ["Three~~~~", "string", '"s"'],
      ["Nope~~~~", "unknown-flow", "not json"],
    ];
    for (const [topic, id, values] of cases) await svc.socket.send(frames(topic, { v: 1, id }, values));
    const deadline = performance.now() + 10_000;
    while (cases.some(([, id]) => !seen.has(id)) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const [, id] of cases) {
      const p = seen.get(id);
      assert.ok(p, `an error publication for ${id}`);
      assert.equal(p.action, "error");
      assert.deepEqual(p.values, {}, `${id}: values ${JSON.stringify(p.values)}`);
    }
    assert.equal(seen.get("not-json")!.error?.code, "bad_request");
    assert.equal(seen.get("unknown-flow")!.error?.code, "unknown_flow");
  } finally {
    await reactor.close();
    await stop();
  }
});

Deno.test("resume answers: bad_resume for malformed and unknown-flow tokens; two resumes of one token each learn which won", async () => {
  await using d = await startDeployment({ workers: 2 });
  await using client = await d.connect();
  await using other = await d.connect();

  const malformed = await client.resume("not-a-token", { a: 1 }, { timeout: 10_000 });
  assert.equal(malformed.error?.code, "bad_resume", JSON.stringify(malformed));
  assert.match(malformed.error!.message, /malformed/);
  const unknownFlow = await client.resume(`Nope~${"0".repeat(32)}~someone`, {}, { timeout: 10_000 });
  assert.equal(unknownFlow.error?.code, "bad_resume", JSON.stringify(unknownFlow));
  assert.equal(unknownFlow.topic, "Nope~~~~error", "on the flow the resume came on");

  const pauses = await client.subscribe("Pause~ASYNC~");
  const races = 25;
  for (let i = 0; i < races; i++) {
    const final = client.request("Pause", { i }, { id: `race-${i}`, timeout: 20_000 });
    const pause = (await pauses.next()).value as Publication;
    assert.equal(pause.id, `race-${i}`);
    const [a, b] = await Promise.all([
      client.resume(pause.resume!, { by: "a" }, { id: `race-${i}-a`, timeout: 20_000 }),
      other.resume(pause.resume!, { by: "b" }, { id: `race-${i}-b`, timeout: 20_000 }),
    ]);
    const winners = [a, b].filter((p) => p.action === "done");
    const losers = [a, b].filter((p) => p.error?.code === "bad_resume");
    assert.equal(winners.length, 1, `race ${i}: one winner (${a.action}, ${b.action})`);
    assert.equal(losers.length, 1, `race ${i}: one loser`);
    const winner = winners[0];
    assert.equal(winner.id, `race-${i}`, "the winner gets the original request's final");
    assert.equal(winner.values.by, a === winner ? "a" : "b", "with its own values");
    assert.equal(losers[0].id, a === winner ? `race-${i}-b` : `race-${i}-a`, "the loser, under its own id");
    assert.deepEqual((await final).values, winner.values);
  }
  await pauses.return!();
});

Deno.test("a worker's results are checked: one for another request (also by a second id key) or on a topic its flow cannot publish is refused", async () => {
  // A deployment with no worker of its own; a rogue one, written from PROTOCOL.md, joins.
  await using d = await startDeployment({ workers: 0 });
  await using client = await d.connect();
  const seen: Publication[] = [];
  const stream = await client.subscribe("");
  const collecting = (async () => {
    for await (const p of stream) seen.push(p);
  })();
  const reactor = new Reactor();
  try {
    const rogue = reactor.socket("DEALER", { routingId: "rogue" });
    await rogue.connect(`ipc://${d.dir}/workers`);
    const steps: { d: number; header: { id: string } }[] = [];
    const allSteps = Promise.withResolvers<void>();
    rogue.onMessage((f) => {
      for (const r of readBatch(f[1]) ?? []) {
        steps.push({ d: r.tag, header: JSON.parse(dec.decode(r.frames[1])) });
      }
      if (steps.length >= 3) allSteps.resolve();
    });
    await rogue.send([enc.encode("READY"), enc.encode('{"credit": 10}')]);
    const answers = [
      client.request("Three", { k: "steals" }, { id: "victim-a", timeout: 10_000 }),
      client.request("Three", { k: "spoofs" }, { id: "victim-b", timeout: 10_000 }),
      client.request("Three", { k: "twice" }, { id: "victim-c", timeout: 10_000 }),
    ];
    await withTimeout(allSteps.promise, 10_000);
    assert.equal(steps.length, 3, "the rogue worker got the three steps");
    const results = new BatchWriter();
    const [a, b, c] = steps;
    // For step a: a "done" for some other request. For step b: a publication on a topic of its
    // own choosing, claimed as a @PUBLISH result.
    results.add(
      a.d,
      KIND_CODES.done,
      enc.encode("Three~~~~done"),
      enc.encode('{"v":1,"id":"someone-else"}'),
      enc.encode('{"stolen":true}'),
    );
    results.add(
      b.d,
      KIND_CODES.publish,
      enc.encode("Three~PUBLISH~X~Y~anything"),
      enc.encode(JSON.stringify({ v: 1, id: b.header.id, pos: 1 })),
      enc.encode('{"spoofed":true}'),
    );
    // For step c: a "done" that starts as its step's header did, then names another request in a
    // second id key (the one a JSON parser, so every subscriber, takes).
    results.add(
      c.d,
      KIND_CODES.done,
      enc.encode("Three~~~~done"),
      enc.encode(`{"v":1,"id":${JSON.stringify(c.header.id)},"id":"someone-else"}`),
      enc.encode('{"stolen":true}'),
    );
    await rogue.send([enc.encode("RESULTS"), results.take().slice()]);
    for (const p of await Promise.all(answers)) {
      assert.equal(p.action, "error", JSON.stringify(p));
      assert.equal(p.error?.code, "handler_error");
      assert.match(p.error!.message, /the worker's result was refused/);
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(seen.filter((p) => p.id === "someone-else" || p.topic.includes("anything")), []);
    assert.ok(
      seen.every((p) => !p.values.stolen && !p.values.spoofed),
      "nothing the rogue made up was published",
    );
  } finally {
    await reactor.close();
    await stream.return!();
    await collecting;
  }
});

/** Waits (10 s at most) until the Subject's counters satisfy `ok`; returns them. */
async function subjectStats(dir: string, ok: (s: Record<string, unknown>) => boolean) {
  let s: Record<string, unknown> = {};
  for (let i = 0; i < 100; i++) {
    s = await roleStats(dir, "subject").catch(() => ({}));
    if (ok(s)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return s;
}

Deno.test("a worker's heartbeat sets its credit: credit 0 after READY with 1,000 stops new steps until credit comes back", async () => {
  // A short drain at the end: the step this worker takes is never answered.
  await using d = await startDeployment({ workers: 0, args: ["--handler-timeout", "500"] });
  await using client = await d.connect();
  const reactor = new Reactor();
  try {
    const w = reactor.socket("DEALER", { routingId: "paced" });
    await w.connect(`ipc://${d.dir}/workers`);
    let received = 0;
    w.onMessage((f) => received += readBatch(f[1])?.length ?? 0);
    await w.send([enc.encode("READY"), enc.encode('{"credit": 1000}')]);
    await w.send([enc.encode("HB"), enc.encode('{"credit": 0, "holding": [], "last": 0}')]);
    // The request comes on another socket: wait until the Subject has read the heartbeat (its
    // counters: one worker, no credit), else it may take the request while READY's credit holds,
    // and rightly send the step.
    const s = await subjectStats(d.dir, (s) => s.workers === 1 && s.credit === 0);
    assert.ok(s.workers === 1 && s.credit === 0, "the Subject's counters show the worker with credit 0");
    const pending = client.request("Three", {}, { timeout: 10_000 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(received, 0, "no step while the worker's credit is 0");
    await w.send([enc.encode("HB"), enc.encode('{"credit": 5, "holding": [], "last": 0}')]);
    const deadline = performance.now() + 5000;
    while (received === 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(received, 1, "the step came once the heartbeat gave credit");
    void pending;
  } finally {
    await reactor.close();
  }
});

Deno.test("two workers whose routing ids read alike as UTF-8 are two workers: one step each", async () => {
  // libzmq's own kind of id (a 0 and a counter); both decode to "\0\x01\x02\x03\uFFFD". Keyed by
  // that text, the Subject counted one worker, and one of the two got both steps (checked).
  await using d = await startDeployment({ workers: 0, args: ["--handler-timeout", "500"] });
  await using client = await d.connect();
  const reactor = new Reactor();
  try {
    const got = [0, 0];
    const both = Promise.withResolvers<void>();
    for (const [k, last] of [0x80, 0x81].entries()) {
      const w = reactor.socket("DEALER", { routingId: new Uint8Array([0, 1, 2, 3, last]) });
      await w.connect(`ipc://${d.dir}/workers`);
      w.onMessage((f) => {
        got[k] += readBatch(f[1])?.length ?? 0;
        if (got[0] + got[1] >= 2) both.resolve();
      });
      await w.send([enc.encode("READY"), enc.encode('{"credit": 1}')]);
    }
    assert.equal((await subjectStats(d.dir, (s) => s.workers === 2)).workers, 2, "two workers joined");
    const pending = [0, 1].map(() => client.request("Three", {}, { timeout: 5000 }).catch(() => undefined));
    await withTimeout(both.promise, 5000);
    assert.deepEqual(got, [1, 1], "one step each (credit 1 each)");
    void pending;
  } finally {
    await reactor.close();
  }
});

Deno.test("a worker whose name is UTF-8 beyond ASCII reports a blocked handler (STUCK) in that name: the Subject takes it", async () => {
  // Keyed one character per byte, its key was "wÃ¶rker-Ã¼" and the report's name "wörker-ü": the
  // report was dropped as a bad worker message (found by an outside review).
  const id = "wörker-ü";
  // A heartbeat timeout longer than the test: the worker, which sends no heartbeat, can leave only
  // through its report.
  await using d = await startDeployment({
    workers: 0,
    args: ["--handler-timeout", "500", "--heartbeat-timeout", "30000"],
  });
  await using client = await d.connect();
  const reactor = new Reactor();
  try {
    const w = reactor.socket("DEALER", { routingId: id });
    await w.connect(`ipc://${d.dir}/workers`);
    const tags: number[] = [];
    const stepped = Promise.withResolvers<void>();
    w.onMessage((f) => {
      for (const r of readBatch(f[1]) ?? []) tags.push(r.tag);
      stepped.resolve();
    });
    await w.send([enc.encode("READY"), enc.encode('{"credit": 10, "watch": "secret"}')]);
    const pending = client.request("Three", {}, { timeout: 10_000 }).catch(() => undefined);
    await withTimeout(stepped.promise, 5000);
    assert.equal(tags.length, 1, "the worker got the step");
    const before = await subjectStats(d.dir, (s) => s.workers === 1);
    assert.equal(before.workers, 1);
    const report = { worker: id, d: tags[0], ms: 0, why: "a test", token: "secret" };
    await w.send([enc.encode("STUCK"), enc.encode(JSON.stringify(report))]);
    const after = await subjectStats(d.dir, (s) => s.workers === 0);
    assert.deepEqual(
      { workers: after.workers, dropped: after.dropped },
      { workers: 0, dropped: before.dropped },
      "the report took the worker out, and was not itself dropped",
    );
    void pending;
  } finally {
    await reactor.close();
  }
});

Deno.test("only the worker a step was sent to may answer it: a forged final for another worker's step is refused", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  assert.equal((await client.request("Three", {})).action, "done"); // the real worker has joined
  const reactor = new Reactor();
  try {
    const rogue = reactor.socket("DEALER", { routingId: "forger" });
    await rogue.connect(`ipc://${d.dir}/workers`);
    const bait: number[] = [];
    rogue.onMessage((f) => {
      for (const r of readBatch(f[1]) ?? []) bait.push(r.tag);
    });
    // More credit than the real worker: the next step comes here, and shows the numbering.
    await rogue.send([enc.encode("READY"), enc.encode('{"credit": 1000}')]);
    await new Promise((r) => setTimeout(r, 200));
    void client.send("Three", { bait: true });
    const deadline = performance.now() + 5000;
    while (!bait.length && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(bait.length, 1, "the rogue got its bait step");
    const d0 = bait[0];
    // No more steps for the rogue; the victim goes to the real worker.
    await rogue.send([enc.encode("HB"), enc.encode(JSON.stringify({ credit: 0, holding: [d0], last: d0 }))]);
    await new Promise((r) => setTimeout(r, 200));
    const victim = client.request("Slow", { ms: 600 }, { id: "victim", timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 200));
    const forged = new BatchWriter();
    for (let d = d0 + 1; d <= d0 + 20; d++) {
      forged.add(
        d,
        KIND_CODES.done,
        enc.encode("Slow~~~~done"),
        enc.encode('{"v":1,"id":"victim"}'),
        enc.encode('{"forged":true}'),
      );
    }
    await rogue.send([enc.encode("RESULTS"), forged.take().slice()]);
    const p = await victim;
    assert.equal(p.action, "done");
    assert.equal(p.values.forged, undefined, `the forged final was published: ${JSON.stringify(p.values)}`);
    assert.equal(p.values.slept, true, "the real worker's result");
  } finally {
    await reactor.close();
  }
});

Deno.test("a service's error continuation carries a documented code; a header pos 0 starts after the entry step", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const { seen, stop } = await lastPublications(client);
  const reactor = new Reactor();
  try {
    const svc = await rawService(reactor, d.subject);
    await svc.socket.send(
      frames("Three~~~~", { v: 1, id: "odd-code", pos: 2, error: { code: 123, message: "x" } }, "{}"),
    );
    await svc.socket.send(frames("Three~~~~", { v: 1, id: "string-error", pos: 2, error: "boom" }, "{}"));
    await svc.socket.send(frames("Three~~~~", { v: 1, id: "pos-0", pos: 0 }, "{}"));
    const deadline = performance.now() + 10_000;
    while (seen.size < 3 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen.get("odd-code")?.error?.code, "handler_error");
    assert.equal(seen.get("string-error")?.error?.code, "handler_error");
    assert.equal(seen.get("string-error")?.error?.message, "boom");
    assert.equal(seen.get("pos-0")?.action, "done", JSON.stringify(seen.get("pos-0")));
    assert.deepEqual(seen.get("pos-0")?.values.trace, ["one", "two", "three"]);
  } finally {
    await reactor.close();
    await stop();
  }
});

Deno.test("a client not told the Subject's max_message_size learns it from the Subject's announcement: it then refuses larger values itself, and keeps its batches within it (with resends off, nothing waits for ever)", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--max-message-size", "4096"] });
  await using client = await ZClient.connect({
    subject: d.subject,
    publisher: d.publisher,
    resendAfter: 0,
  });
  // It learns it with the Subject's incarnation: from the first request() (whose subscription
  // waits for a ping, which the Subject announces itself before), or within a second.
  assert.equal((await client.request("Three", {}, { timeout: 10_000 })).action, "done");
  // 60 requests in one turn, 3.6 KB of values in all with their topics and headers more: several
  // batches, each under 4 KiB (one batch over it is dropped unread, and unanswered).
  const sends = Array.from({ length: 60 }, (_, k) => client.send("Three", { k, pad: "x".repeat(40) }));
  assert.notEqual(await withTimeout(Promise.all(sends), 10_000), TIMED_OUT, "every request answered");
  for (const size of [6_000, 70_000]) {
    const t0 = performance.now();
    await assert.rejects(
      client.send("Three", { a: "x".repeat(size) }),
      (e) => e instanceof RequestRefusedError && e.reason === "oversize" && /4096/.test(e.message),
    );
    assert.ok(performance.now() - t0 < 100, "refused by the client, at once");
  }
  await withTimeout(client.flush(), 5000).then((r) => assert.notEqual(r, TIMED_OUT, "nothing left waiting"));
});

Deno.test("the Subject's announcement carries when it started (ms since the epoch) and its max_message_size", async () => {
  const before = Date.now();
  await using d = await startDeployment({ workers: 1, args: ["--max-message-size", "4096"] });
  const reactor = new Reactor();
  try {
    const sub = reactor.socket("SUB");
    await sub.subscribe("~~~~hello");
    await sub.connect(d.publisher);
    const it = sub.messages()[Symbol.asyncIterator]();
    const m = await withTimeout(it.next(), 5000); // announced every second
    assert.notEqual(m, TIMED_OUT, "an announcement within 5 s");
    const frames = (m as IteratorResult<Uint8Array[]>).value;
    const values = JSON.parse(new TextDecoder().decode(frames[2]));
    assert.equal(values.max_message_size, 4096);
    assert.ok(Number.isSafeInteger(values.started), JSON.stringify(values));
    assert.ok(
      values.started >= before - 1000 && values.started <= Date.now(),
      `${values.started} since ${before}`,
    );
  } finally {
    await reactor.close();
  }
});
