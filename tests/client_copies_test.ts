// Copies of one request id answered differently (src/client/copies.ts): a copy refused
// `overloaded` while another, once there was room, was accepted and ran. The pure bookkeeping,
// then the client against a fake Subject that answers in the orders a real one makes only now and
// then (an outside attack saw it once in about 60 rounds: every caller told `overloaded`, and
// the request ran).
import assert from "node:assert/strict";
import { compareRanks, CopyAnswers } from "../src/client/copies.ts";
import { RequestRefusedError } from "../src/client/client.ts";
import { encodeHeader, errorFrames, type Publication, utf8 } from "../src/wire/protocol.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import { type FakeHub, fakeHub, type Received } from "./fake_hub.ts";
import { LOST_ANSWER_MS } from "../src/client/unacked.ts";

Deno.test("CopyAnswers: a copy refused while another waits is moot once that one is accepted", () => {
  const c = new CopyAnswers();
  assert.equal(c.refuse("r", 1), false, "the other copy waits: moot for now");
  c.ack("r", 0, false);
  assert.equal(c.size, 0, "every copy answered: nothing kept");
});

Deno.test("CopyAnswers: the acceptance may come before the refusal of an earlier copy (one acknowledgement period)", () => {
  const c = new CopyAnswers();
  c.ack("r", 1, false); // the refused copy still waits for its answer
  assert.equal(c.refuse("r", 0), false);
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: every copy refused: the refusal stands at the last answer", () => {
  const c = new CopyAnswers();
  assert.equal(c.refuse("r", 1), false);
  assert.equal(c.refuse("r", 0), true);
  assert.equal(c.refuse("one", 0), true, "one copy, refused");
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: a copy accepted while a caller waits for its final makes a later refusal moot (a restarted Subject's), until the final", () => {
  const c = new CopyAnswers();
  c.ack("r", 0, true);
  assert.equal(c.running("r"), true);
  assert.equal(c.refuse("r", 0), false, "accepted before: it is to run");
  c.ended("r");
  assert.equal(c.refuse("r", 0), true);
  c.ack("s", 0, false); // nobody waits for its final: nothing kept
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: a refusal of a send is moot when a later send known at the acceptance named the same Subject incarnation or a later-heard one; not when unnumbered, unknown, or followed only by sends named for an earlier-heard one", () => {
  const c = new CopyAnswers();
  const run = (first: number, last: number, heard: number) => ({ first, last, rank: { heard } });
  // A (rank 1): 1, 2; B (rank 2): 4; A again (a late announcement of the dead A): 6; B again: 8
  c.ack("r", 0, true, [run(1, 2, 1), run(4, 4, 2), run(6, 6, 1), run(8, 8, 2)]);
  assert.deepEqual(
    [1, 2, 4, 6, 8, 3, 9, undefined].map((t) => c.refusedEarlier("r", t)),
    [true, true, true, true, false, false, false, false],
  );
  // P (1), then A (2), then B (3): the dead A's refusal, with a send to B after it, is moot.
  c.ack("p", 0, true, [run(1, 1, 1), run(2, 2, 2), run(3, 3, 3)]);
  assert.deepEqual([1, 2, 3].map((t) => c.refusedEarlier("p", t)), [true, true, false]);
  // B's refusal with only a send named for the dead A after it (B drops that one unread): not moot.
  c.ack("q", 0, true, [run(1, 1, 1), run(2, 2, 2), run(3, 3, 1)]);
  assert.deepEqual([1, 2, 3].map((t) => c.refusedEarlier("q", t)), [true, false, false]);
  c.ack("q", 0, true, [run(2, 2, 2), run(3, 3, 1), run(5, 5, 2)]); // a later acceptance adds what it knew of
  assert.equal(c.refusedEarlier("q", 2), true);
  assert.equal(c.refusedEarlier("other", 1), false, "not running");
  c.ended("r");
  assert.equal(c.refusedEarlier("r", 1), false);
  c.ack("s", 0, false, [run(1, 2, 1)]); // nobody waits for its final: nothing kept
  assert.equal(c.refusedEarlier("s", 1), false);
  c.ended("p");
  c.ended("q");
  assert.equal(c.size, 0);
});

const refusedFinal = (id: string) =>
  errorFrames("Flow", { id }, "overloaded", "over the cap", utf8("{}"), true);
const done = (id: string) => [utf8("Flow~~~~done"), encodeHeader({ v: 1, id }), utf8('{"ran":true}')];
const outcome = <T>(p: Promise<T>) =>
  withTimeout(p.then((v) => ({ ok: v }), (e) => ({ error: e })), 3000).then((o) =>
    o === TIMED_OUT ? "hung" : o
  );
/** What a final came to: its action (`done`, or `error:CODE`), or why there was none. */
const finalOf = async (p: Promise<Publication>) => {
  const o = await outcome(p);
  if (typeof o === "string") return o;
  if ("error" in o) return `threw ${String(o.error)}`;
  return o.ok.action === "done" ? "done" : `error:${o.ok.error?.code}`;
};

/** The next send named for incarnation `s`, past those named for another (a live Subject drops them). */
const nextNamed = async (hub: FakeHub, s: string, what = ""): Promise<Received> => {
  let c;
  while ((c = await hub.poll(2000)) && c.s !== s) { /* named for a dead Subject */ }
  assert.equal(c?.s, s, `${what}: sent again to ${s}`);
  return c!;
};

Deno.test("client: a copy refused overloaded while another copy of the id is accepted: both callers are told accepted, and both finals are the request's own", async () => {
  await using hub = await fakeHub("A");
  const first = hub.client.submit("Flow", {}, { id: "dup", timeout: 5000 });
  const c1 = await hub.next();
  const second = hub.client.submit("Flow", {}, { id: "dup", timeout: 5000 });
  const c2 = await hub.next();
  assert.deepEqual([c1.id, c2.id], ["dup", "dup"]);
  await hub.nack(c1, "dup", "overloaded", true); // the cap was full for the first copy
  await hub.publish(refusedFinal("dup"));
  await hub.ack(c2, "dup"); // room for the second: it runs
  await hub.publish(done("dup"));
  const [a1, a2, f1, f2] = await Promise.all(
    [first.accepted, second.accepted, first.final, second.final].map((p) => outcome(p as Promise<unknown>)),
  );
  assert.deepEqual([a1, a2], [{ ok: "dup" }, { ok: "dup" }]);
  for (const f of [f1, f2]) {
    assert.ok(typeof f === "object" && "ok" in f, String(f));
    assert.deepEqual((f.ok as { values: unknown }).values, { ran: true });
  }
});

Deno.test("client: copies of one id acknowledged before the earlier copy's refusal (one acknowledgement period): both send()s resolve", async () => {
  await using hub = await fakeHub("A");
  const first = hub.client.send("Flow", {}, { id: "dup2" });
  const c1 = await hub.next();
  const second = hub.client.send("Flow", {}, { id: "dup2" });
  await hub.next();
  await hub.ack(c1, "dup2");
  await hub.nack(c1, "dup2", "overloaded", true);
  assert.deepEqual(await Promise.all([outcome(first), outcome(second)]), [{ ok: "dup2" }, { ok: "dup2" }]);
});

Deno.test("client: every copy of an id refused: each caller is told overloaded, and its final is the refusal's error publication", async () => {
  await using hub = await fakeHub("A");
  const first = hub.client.submit("Flow", {}, { id: "dup3", timeout: 5000 });
  const c1 = await hub.next();
  const second = hub.client.submit("Flow", {}, { id: "dup3", timeout: 5000 });
  const c2 = await hub.next();
  await hub.publish(refusedFinal("dup3")); // before its refusal: held while the second copy waits
  await hub.nack(c1, "dup3", "overloaded", true);
  await hub.nack(c2, "dup3", "overloaded", true);
  await hub.publish(refusedFinal("dup3"));
  for (const a of await Promise.all([outcome(first.accepted), outcome(second.accepted)])) {
    assert.ok(typeof a === "object" && "error" in a && a.error instanceof RequestRefusedError, String(a));
  }
  assert.deepEqual(await Promise.all([finalOf(first.final), finalOf(second.final)]), [
    "error:overloaded",
    "error:overloaded",
  ]);
});

Deno.test("client: send() resolves when its own message is acknowledged, while another id's still waits (it waited for every message of the client)", async () => {
  await using hub = await fakeHub("A");
  const slow = hub.client.send("Flow", {}, { id: "never" });
  slow.catch(() => {});
  await hub.next(); // never acknowledged
  const quick = hub.client.send("Flow", {}, { id: "quick" });
  const q = await hub.next();
  await hub.ack(q, "quick");
  assert.deepEqual(await outcome(quick), { ok: "quick" });
});

Deno.test("client: the error publication of a refused copy that comes while the next copy waits does not answer that copy (one client's retries: the copy that ran was told refused)", async () => {
  await using hub = await fakeHub("A");
  const first = hub.client.send("Flow", {}, { id: "retry" });
  const c1 = await hub.next();
  await hub.nack(c1, "retry", "overloaded", true);
  assert.ok((await outcome(first) as { error: unknown }).error instanceof RequestRefusedError);
  const second = hub.client.submit("Flow", {}, { id: "retry", timeout: 5000 });
  const c2 = await hub.next();
  await hub.publish(refusedFinal("retry")); // the first copy's, late
  await hub.ack(c2, "retry");
  await hub.publish(done("retry"));
  assert.deepEqual(await outcome(second.accepted), { ok: "retry" });
  assert.equal(await finalOf(second.final), "done");
});

Deno.test("client: another service's copy of the id, refused and published, does not answer this client's copy", async () => {
  await using hub = await fakeHub("A");
  const mine = hub.client.submit("Flow", {}, { id: "shared", timeout: 5000 });
  const c = await hub.next();
  await hub.publish(refusedFinal("shared")); // another connection's copy, over its cap
  await hub.ack(c, "shared");
  await hub.publish(done("shared"));
  assert.deepEqual(await outcome(mine.accepted), { ok: "shared" });
  assert.equal(await finalOf(mine.final), "done");
});

Deno.test("client: a request accepted, then refused overloaded by the restarted Subject it was sent again to, is sent again later and runs (before, its caller got overloaded)", async () => {
  await using hub = await fakeHub("A", 200);
  const s = hub.client.submit("Flow", { k: 1 }, { id: "kept", timeout: 10_000 });
  const c = await hub.next();
  await hub.ack(c, "kept");
  assert.deepEqual(await outcome(s.accepted), { ok: "kept" });
  await hub.hello("B"); // A died
  const again = await hub.next();
  assert.deepEqual([again.id, again.s], ["kept", "B"]);
  await hub.nack(again, "kept", "overloaded", true); // B over its connection's cap
  await hub.publish(refusedFinal("kept"));
  const later = await hub.next(); // after resendAfter
  assert.deepEqual([later.id, later.s], ["kept", "B"]);
  await hub.ack(later, "kept");
  await hub.publish(done("kept"));
  assert.equal(await finalOf(s.final), "done");
});

Deno.test("client: a request sent again while the Subject stalls, its first send refused and a resend accepted: its caller is told accepted, and its final is the request's own", async () => {
  await using hub = await fakeHub("A", 100);
  const s = hub.client.submit("Flow", {}, { id: "stalled", timeout: 5000 });
  const first = await hub.next();
  const again = await hub.next(); // no answer within resendAfter: sent again
  assert.deepEqual([first.id, again.id], ["stalled", "stalled"]);
  // The Subject reads its backlog: the first send over the cap, the resend once there is room.
  await hub.nack(first, "stalled", "overloaded", true);
  await hub.publish(refusedFinal("stalled"));
  await hub.ack(again, "stalled");
  await hub.publish(done("stalled"));
  assert.deepEqual(await outcome(s.accepted), { ok: "stalled" });
  assert.equal(await finalOf(s.final), "done");
});

Deno.test("client: a Subject that stalls longer than LOST_ANSWER_MS between refusing the first send and accepting a resend: the caller is told accepted (each refusal names its send)", async () => {
  await using hub = await fakeHub("A", 100);
  const s = hub.client.submit("Flow", {}, { id: "long", timeout: 20_000 });
  const first = await hub.next();
  const again = await hub.next();
  assert.ok(first.t !== undefined && again.t !== undefined && again.t > first.t, "each send has a number");
  await hub.nack(first, "long", "overloaded", true);
  await hub.publish(refusedFinal("long"));
  // The Subject stops before it answers the resend, for longer than the wait for a lost answer;
  // the client keeps sending the request again meanwhile.
  let resends = 0;
  const until = performance.now() + LOST_ANSWER_MS + 700;
  while (performance.now() < until) if ((await hub.poll(until - performance.now()))?.id === "long") resends++;
  await hub.ack(again, "long");
  await hub.publish(done("long"));
  assert.deepEqual(await outcome(s.accepted), { ok: "long" });
  assert.equal(await finalOf(s.final), "done");
  assert.ok(resends > 5, `sent again while the refusal waited: ${resends}`);
});

Deno.test("client: a refusal of the id's latest send stands at once; one of an earlier send waits, and the request is sent again until a send's answer decides", async () => {
  await using hub = await fakeHub("A", 100);
  const s = hub.client.submit("Flow", {}, { id: "lost", timeout: 5000 });
  const first = await hub.next();
  await hub.next(); // sent again; this send is lost unanswered (dropped with its connection, say)
  const t0 = performance.now();
  await hub.nack(first, "lost", "overloaded", true);
  // The refusal was of an earlier send: sent again. Each send from now on is refused; the first
  // refusal of the latest send decides (a resend may leave before an answer comes).
  let settled = false;
  const answered = outcome(s.accepted).finally(() => (settled = true));
  let refusals = 0;
  while (!settled) {
    const c = await hub.poll(100);
    if (!c) continue;
    await hub.nack(c, "lost", "overloaded", true);
    refusals++;
  }
  assert.ok(refusals >= 1 && refusals <= 3, `refusals until one stood: ${refusals}`);
  const refused = await answered as { error: unknown };
  assert.ok(refused.error instanceof RequestRefusedError, String(refused.error));
  assert.ok(performance.now() - t0 < 2000, "no wait for the lost send's answer");
  assert.equal(await finalOf(s.final), "error:overloaded");
});

Deno.test("client: one send() sent again, the resend accepted and the first send refused in the same flush (ACK list, then NACK list): the caller is told accepted", async () => {
  await using hub = await fakeHub("A", 100);
  const sent = outcome(hub.client.send("Flow", {}, { id: "flush" }));
  const first = await hub.next();
  const again = await hub.next();
  await Promise.all([hub.ack(again, "flush"), hub.nack(first, "flush", "overloaded", true)]);
  assert.deepEqual(await sent, { ok: "flush" });
  await hub.client.flush();
});

Deno.test("client: one send() sent again twice, answered in one flush by ACKs of two sends and then a refusal of the first (or an ACK and two refusals): the caller is told accepted", async () => {
  for (const order of ["ack, ack, nack", "ack, nack, nack"]) {
    await using hub = await fakeHub("A", 100);
    const sent = outcome(hub.client.send("Flow", {}, { id: "many" }));
    const [first, second, third] = [await hub.next(), await hub.next(), await hub.next()];
    await Promise.all(
      order === "ack, ack, nack"
        ? [hub.ack(second, "many"), hub.ack(third, "many"), hub.nack(first, "many", "overloaded", true)]
        : [
          hub.ack(third, "many"),
          hub.nack(first, "many", "overloaded", true),
          hub.nack(second, "many", "overloaded", true),
        ],
    );
    assert.deepEqual(await sent, { ok: "many" }, order);
    assert.equal(await withTimeout(hub.client.flush(), 1000), undefined, `${order}: nothing left to send`);
  }
});

Deno.test("client: a request accepted, then its Subject restarted with a max_message_size under its values: its caller is told refused oversize at once (it was dropped unread and waited out its timeout)", async () => {
  await using hub = await fakeHub("A", 100);
  await hub.hello("A", JSON.stringify({ max_message_size: 8192 }));
  const s = hub.client.submit("Flow", { pad: "x".repeat(6000) }, { id: "big", timeout: 20_000 });
  const c = await hub.next();
  await hub.ack(c, "big");
  assert.deepEqual(await outcome(s.accepted), { ok: "big" });
  const t0 = performance.now();
  await hub.hello("B", JSON.stringify({ max_message_size: 2048 }));
  const final = await outcome(s.final) as { error: unknown };
  assert.ok(
    final.error instanceof RequestRefusedError && final.error.reason === "oversize",
    String(final.error),
  );
  assert.ok(performance.now() - t0 < 2000);
  assert.equal(await hub.poll(300), undefined, "not sent to the new Subject");
});

Deno.test("client: a request sent again to a restarted Subject, whose predecessor's acknowledgement is read only then, and refused overloaded by the new one: it is sent again and runs (it waited out its timeout)", async () => {
  await using hub = await fakeHub("A", 100);
  const final = outcome(hub.client.request("Flow", {}, { id: "late-ack", timeout: 10_000 }));
  const c1 = await hub.next();
  await hub.hello("B");
  const c2 = await hub.next(); // sent again to B
  await hub.ack(c1, "late-ack"); // A's acknowledgement of the first send, read late
  await hub.nack(c2, "late-ack", "overloaded", true); // B, over its cap
  await hub.publish(refusedFinal("late-ack"));
  const c3 = await hub.next(); // after resendAfter
  assert.equal(c3.id, "late-ack");
  await hub.ack(c3, "late-ack");
  await hub.publish(done("late-ack"));
  assert.equal((await final as { ok?: { action: string } }).ok?.action, "done");
});

Deno.test("client: two copies of one id, one over a restarted Subject's smaller max_message_size: both callers are told refused oversize, and neither copy is sent (one was, and would have run)", async () => {
  await using hub = await fakeHub("A", 100);
  await hub.hello("A", JSON.stringify({ max_message_size: 8192 }));
  const small = outcome(hub.client.send("Flow", { pad: "x" }, { id: "two" }));
  const big = outcome(hub.client.send("Flow", { pad: "x".repeat(5000) }, { id: "two" }));
  await hub.next(); // both unanswered
  await hub.hello("B", JSON.stringify({ max_message_size: 2048 }));
  for (const o of [await small, await big] as { error?: unknown }[]) {
    assert.ok(o.error instanceof RequestRefusedError && o.error.reason === "oversize", String(o.error));
  }
  assert.equal(await hub.poll(300), undefined, "nothing of the id is sent to the new Subject");
});

Deno.test("client: a request() sent again, the resend accepted and then the first send refused in the same flush: it is not sent a third time (the moot refusal sent it again, and past the duplicate window it would run twice)", async () => {
  await using hub = await fakeHub("A", 100);
  const final = outcome(hub.client.request("Flow", {}, { id: "moot", timeout: 10_000 }));
  const first = await hub.next();
  const again = await hub.next(); // after resendAfter
  await Promise.all([hub.ack(again, "moot"), hub.nack(first, "moot", "overloaded", true)]);
  await hub.publish(refusedFinal("moot")); // the first send's error publication
  assert.equal(await hub.poll(400), undefined, "not sent again: the resend was accepted");
  await hub.publish(done("moot"));
  assert.equal((await final as { ok?: { action: string } }).ok?.action, "done");
});

Deno.test("client: two callers with one id, the first copy refused over the cap and the second accepted, in one flush: both are told accepted and get the request's own final, and it is not sent again (with resends off, both were told overloaded)", async () => {
  for (const resendAfter of [100, 0]) {
    await using hub = await fakeHub("A", resendAfter);
    const first = hub.client.submit("Flow", {}, { id: "pair", timeout: 5000 });
    const c1 = await hub.next();
    const second = hub.client.submit("Flow", {}, { id: "pair", timeout: 5000 });
    const c2 = await hub.next();
    await Promise.all([hub.ack(c2, "pair"), hub.nack(c1, "pair", "overloaded", true)]);
    await hub.publish(refusedFinal("pair"));
    for (const s of [first, second]) {
      assert.deepEqual(await outcome(s.accepted), { ok: "pair" }, `${resendAfter}`);
    }
    assert.equal(await hub.poll(400), undefined, `resendAfter ${resendAfter}: not sent again`);
    await hub.publish(done("pair"));
    for (const s of [first, second]) assert.equal(await finalOf(s.final), "done");
  }
});

Deno.test("client: a request sent to a restarted Subject, named again for its predecessor by a late announcement, then for the new one again, whose later send the new Subject accepts while refusing the first in one flush: not sent again, and with resends off its caller is told accepted (the refusal was taken for a restarted Subject's)", async () => {
  for (const resendAfter of [100, 0]) {
    await using hub = await fakeHub("A", resendAfter);
    const s = hub.client.submit("Flow", {}, { id: "flip", timeout: 5000 });
    await hub.next(); // to A
    await hub.hello("B"); // A died
    const c2 = await hub.next(); // to B
    await hub.hello("A"); // A's last announcement, read late
    await hub.next(); // named for A: B drops it unread
    await hub.hello("B"); // B's next announcement
    const c4 = await hub.next(); // to B
    assert.deepEqual([c2.s, c4.s], ["B", "B"]);
    await Promise.all([hub.ack(c4, "flip"), hub.nack(c2, "flip", "overloaded", true)]);
    await hub.publish(refusedFinal("flip"));
    assert.deepEqual(await outcome(s.accepted), { ok: "flip" }, `resendAfter ${resendAfter}`);
    assert.equal(await hub.poll(400), undefined, `resendAfter ${resendAfter}: not sent again`);
    await hub.publish(done("flip"));
    assert.equal(await finalOf(s.final), "done");
  }
});

Deno.test("client: a request refused by a restarted Subject after its predecessor's acknowledgement, read late, is sent again even when another acknowledgement of the predecessor's comes before that send (it took the send's place, and the caller waited out its timeout)", async () => {
  await using hub = await fakeHub("A", 150);
  const final = outcome(hub.client.request("Flow", {}, { id: "dup-ack", timeout: 10_000 }));
  const c1 = await hub.next(); // to A
  const c2 = await hub.next(); // to A again, after resendAfter: A stalls
  await hub.hello("B"); // A died
  const c3 = await hub.next(); // to B
  await hub.ack(c1, "dup-ack"); // A's acknowledgement of the first send, read late
  await hub.nack(c3, "dup-ack", "overloaded", true); // B, over its cap
  await hub.publish(refusedFinal("dup-ack"));
  await hub.ack(c2, "dup-ack"); // A's acknowledgement of its duplicate, from a later flush, read late
  const c4 = await hub.poll(2000);
  assert.equal(c4?.s, "B", "sent again to B");
  await hub.ack(c4!, "dup-ack");
  await hub.publish(done("dup-ack"));
  assert.equal((await final as { ok?: { action: string } }).ok?.action, "done");
});

Deno.test("client: a refusal by a Subject that has since died, read after its successor's announcement and a send to the successor, decides nothing: not sent again once the successor accepts, and with resends off its caller is not told overloaded", async () => {
  for (const resendAfter of [300, 0]) {
    await using hub = await fakeHub("P", resendAfter);
    const final = outcome(hub.client.request("Flow", {}, { id: "three", timeout: 5000 }));
    const c1 = await hub.next(); // to P
    await hub.hello("A"); // P died
    const c2 = await hub.next(); // to A
    await hub.hello("B"); // A died
    const c3 = await hub.next(); // to B
    assert.deepEqual([c1.s, c2.s, c3.s], ["P", "A", "B"]);
    await hub.ack(c1, "three"); // P's acknowledgement, read late
    await hub.nack(c2, "three", "overloaded", true); // A's refusal, read late
    await hub.publish(refusedFinal("three"));
    await hub.ack(c3, "three"); // B accepts
    assert.equal(await hub.poll(600), undefined, `resendAfter ${resendAfter}: not sent again`);
    await hub.publish(done("three"));
    assert.equal(
      (await final as { ok?: { action: string } }).ok?.action,
      "done",
      `resendAfter ${resendAfter}`,
    );
  }
});

Deno.test("compareRanks: by when two incarnations started when both announced it and it differs, else by the order heard of", () => {
  assert.ok(
    compareRanks({ heard: 3, started: 1_000 }, { heard: 2, started: 2_000 }) < 0,
    "started first, heard of later",
  );
  assert.ok(
    compareRanks({ heard: 3, started: 1_000 }, { heard: 2, started: 1_000 }) > 0,
    "a tie: heard of later",
  );
  assert.ok(
    compareRanks({ heard: 3 }, { heard: 2, started: 2_000 }) > 0,
    "one announced none (a rollback): as heard of",
  );
  assert.ok(compareRanks({ heard: 2, started: 2_000 }, { heard: 3 }) < 0);
  assert.equal(compareRanks({ heard: 2, started: 5 }, { heard: 2, started: 5 }), 0);
});

Deno.test("client: a restarted Subject B refuses the request sent to it, after its predecessor's acceptance read late, and the only send after B's is named for a dead Subject whose last announcement came later (a flap back to A; a crash loop whose A started before B; a rollback to a B that announces no start): the refusal is not taken for moot, and the request is sent again to B and runs (with resends off, its caller is told overloaded)", async () => {
  const A = JSON.stringify({ started: 1_000_000 }), B = JSON.stringify({ started: 2_000_000 });
  const cases = [
    { name: "flap", first: "A", announced: [["B", "{}"], ["A", "{}"]], b: "{}" },
    { name: "crash loop", first: "P", announced: [["B", B], ["A", A]], b: B },
    { name: "rollback", first: "P", announced: [["A", A], ["B", "{}"], ["A", A]], b: "{}" },
  ];
  for (const { name, first, announced, b } of cases) {
    for (const resendAfter of [300, 0]) {
      const what = `${name}, resendAfter ${resendAfter}`;
      await using hub = await fakeHub(first, resendAfter);
      const final = outcome(hub.client.request("Flow", {}, { id: "x", timeout: 5000 }));
      const c1 = await hub.next(); // to the first Subject, which accepts it and dies
      const sends: Received[] = [];
      for (const [s, values] of announced) {
        await hub.hello(s, values);
        sends.push(await hub.next()); // to each announced at once
      }
      assert.equal(sends.at(-1)!.s, "A", what); // B drops it unread
      await hub.ack(c1, "x"); // the first Subject's acknowledgement, read late
      await hub.nack(sends.findLast((c) => c.s === "B")!, "x", "overloaded", true); // B, over its cap
      await hub.publish(refusedFinal("x"));
      await hub.hello("B", b); // B's next announcement
      if (resendAfter === 0) {
        // Nothing sends it again: the refusal stands, and the caller is told (it waited out its timeout).
        const got = await final as { ok?: { action: string; error?: { code: string } } };
        assert.deepEqual([got.ok?.action, got.ok?.error?.code], ["error", "overloaded"], what);
        continue;
      }
      await hub.ack(await nextNamed(hub, "B", what), "x");
      await hub.publish(done("x"));
      assert.equal((await final as { ok?: { action: string } }).ok?.action, "done", what);
    }
  }
});
