// Copies of one request id answered differently (src/client/copies.ts): a copy refused
// `overloaded` while another, once there was room, was accepted and ran. The pure bookkeeping,
// then the client against a fake Subject that answers in the orders a real one makes only now and
// then (an outside attack saw it once in about 60 rounds: every caller told `overloaded`, and
// the request ran).
import assert from "node:assert/strict";
import { CopyAnswers } from "../src/client/copies.ts";
import { RequestRefusedError } from "../src/client/client.ts";
import { encodeHeader, errorFrames, utf8 } from "../src/wire/protocol.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import { fakeHub } from "./fake_hub.ts";

Deno.test("CopyAnswers: a copy refused while another waits is moot once that one is accepted; its error publication too", () => {
  const c = new CopyAnswers<string>();
  assert.deepEqual(c.refuse("r", true, 1), { stands: false }, "the other copy waits");
  c.ack("r", 0);
  assert.equal(c.accepted("r"), true);
  assert.deepEqual(c.refusedFinal("r", "overloaded", 0), { stands: false });
  assert.equal(c.size, 0, "nothing more is due for r");
});

Deno.test("CopyAnswers: the acceptance may come before the refusal of an earlier copy (one acknowledgement period)", () => {
  const c = new CopyAnswers<string>();
  c.ack("r", 1); // the copy refused still waits for its answer
  assert.deepEqual(c.refuse("r", true, 0), { stands: false });
  assert.equal(c.size, 1, "its error publication is still due");
  assert.deepEqual(c.refusedFinal("r", "overloaded", 0), { stands: false });
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: an error publication before its refusal is held while another copy waits", () => {
  const c = new CopyAnswers<string>();
  assert.deepEqual(c.refusedFinal("r", "overloaded", 2), { stands: false }, "held");
  assert.deepEqual(c.refuse("r", true, 1), { stands: false });
  c.ack("r", 0);
  assert.equal(c.size, 1, "the accepted request's final is still to come");
  c.forget("r");
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: every copy refused: the refusal stands at the last answer, with the error publication held", () => {
  const c = new CopyAnswers<string>();
  assert.deepEqual(c.refusedFinal("r", "first", 2), { stands: false });
  assert.deepEqual(c.refuse("r", true, 1), { stands: false });
  assert.deepEqual(c.refuse("r", true, 0), { stands: true, final: "first" });
  assert.deepEqual(c.refusedFinal("r", "second", 0), { stands: true, final: "second" }, "the second copy's");
  assert.equal(c.size, 0);
});

Deno.test("CopyAnswers: one copy: its error publication answers it at once, before or after its refusal", () => {
  const c = new CopyAnswers<string>();
  assert.deepEqual(c.refusedFinal("a", "overloaded", 1), { stands: true, final: "overloaded" });
  assert.deepEqual(c.refuse("a", true, 0), { stands: true });
  assert.deepEqual(c.refuse("b", true, 0), { stands: true });
  assert.deepEqual(c.refusedFinal("b", "overloaded", 0), { stands: true, final: "overloaded" });
  assert.deepEqual(c.refuse("c", false, 0), { stands: true }, "a refusal with no publication");
  c.ack("d", 0); // one copy, accepted: no entry
  assert.equal(c.size, 0);
});

const refusedFinal = (id: string) =>
  errorFrames("Flow", { id }, "overloaded", "over the cap", utf8("{}"), true);
const done = (id: string) => [utf8("Flow~~~~done"), encodeHeader({ v: 1, id }), utf8('{"ran":true}')];
const outcome = <T>(p: Promise<T>) =>
  withTimeout(p.then((v) => ({ ok: v }), (e) => ({ error: e })), 3000).then((o) =>
    o === TIMED_OUT ? "hung" : o
  );

Deno.test("client: a copy refused overloaded while another copy of the id is accepted: both callers are told accepted, and both finals are the request's own", async () => {
  const hub = await fakeHub("A");
  try {
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
  } finally {
    await hub.close();
  }
});

Deno.test("client: copies of one id acknowledged before the earlier copy's refusal (one acknowledgement period): both send()s resolve", async () => {
  const hub = await fakeHub("A");
  try {
    const first = hub.client.send("Flow", {}, { id: "dup2" });
    const c1 = await hub.next();
    const second = hub.client.send("Flow", {}, { id: "dup2" });
    await hub.next();
    await hub.ack(c1, "dup2");
    await hub.nack(c1, "dup2", "overloaded", true);
    assert.deepEqual(await Promise.all([outcome(first), outcome(second)]), [{ ok: "dup2" }, { ok: "dup2" }]);
  } finally {
    await hub.close();
  }
});

Deno.test("client: every copy of an id refused: each caller is told overloaded, and the final is the error publication", async () => {
  const hub = await fakeHub("A");
  try {
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
    for (const f of await Promise.all([outcome(first.final), outcome(second.final)])) {
      assert.ok(typeof f === "object" && "ok" in f, String(f));
      assert.equal(f.ok.error?.code, "overloaded");
    }
  } finally {
    await hub.close();
  }
});

Deno.test("client: send() resolves when its own message is acknowledged, while another id's still waits (it waited for every message of the client)", async () => {
  const hub = await fakeHub("A");
  try {
    const slow = hub.client.send("Flow", {}, { id: "never" });
    slow.catch(() => {});
    await hub.next(); // never acknowledged
    const quick = hub.client.send("Flow", {}, { id: "quick" });
    const q = await hub.next();
    await hub.ack(q, "quick");
    assert.deepEqual(await outcome(quick), { ok: "quick" });
  } finally {
    await hub.close();
  }
});
