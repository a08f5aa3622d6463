// The Subject's intake (src/roles/intake.ts) and result gate (src/roles/result_gate.ts): pure
// decisions on requests and results, acknowledgement batching on an injected clock, back-pressure.
import assert from "node:assert/strict";
import { ACK_EVERY_MS, AckBook, type Admission, Intake, pressure } from "../src/roles/intake.ts";
import { poisonedError, ResultGate, Step } from "../src/roles/result_gate.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { BatchView, BatchWriter, KIND_CODES } from "../src/wire/batch.ts";
import { TopicCache, utf8 } from "../src/wire/protocol.ts";

const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\nS?F@ASYNC?wait\n??done\n", "f.ini").flows[0];
const flows = new Map([["F", flow]]);

function setup(duplicateWindow = 100, incarnation?: string, kept?: (id: string) => boolean) {
  const clock = { now: 0 };
  let changes = 0;
  const acks = new AckBook(() => changes++, () => clock.now);
  const intake = new Intake({ flows, duplicateWindow, incarnation, kept });
  const ack = acks.list(utf8("svc"));
  const admit = (topic: string, header: object | string, values = "{}", draining = false): Admission =>
    intake.admit(
      acks,
      ack,
      [utf8(topic), utf8(typeof header === "string" ? header : JSON.stringify(header)), utf8(values)],
      draining,
    );
  return { clock, acks, ack, admit, intake, changes: () => changes };
}

Deno.test("intake: a request is acknowledged and routed where its flow starts, or at its position", () => {
  const { ack, admit, changes } = setup();
  const a = admit("F~~~F~Push", { v: 1, id: "r1" });
  assert.equal(a.do, "route");
  assert.deepEqual(a.do === "route" && [a.flow, a.position, a.header.id], [flow, 1, "r1"]);
  const b = admit("F~~S~F~a", { v: 1, id: "r2", pos: 2, n: 1 });
  assert.deepEqual(b.do === "route" && [b.position, b.header.n], [2, 1]);
  assert.deepEqual(ack.ids, ["r1", "r2"]);
  assert.equal(changes(), 2, "each acknowledgement asks for a flush");
});

Deno.test("intake: a duplicate (same id, position, step count, token) is acknowledged and dropped; window 0 keeps none", () => {
  const { ack, admit } = setup();
  admit("F~~~F~Push", { v: 1, id: "r1" });
  const again = admit("F~~~F~Push", { v: 1, id: "r1" });
  // A new request's copy names the request (its kept final, if any, is published again).
  assert.deepEqual(again, {
    do: "drop",
    reason: "duplicate",
    detail: 'request "r1" seen before',
    request: "r1",
    keep: false,
    flow: "F",
  });
  // A copy that asks for its final to be kept says so (the Subject answers it, see subject.ts).
  const keyed = admit("F~~~F~Push", { v: 1, id: "r1", keep: 1 });
  assert.deepEqual(keyed.do === "drop" && [keyed.request, keyed.keep], ["r1", true]);
  assert.equal(
    admit("F~~S~F~a", { v: 1, id: "r1", pos: 2, n: 1 }).do,
    "route",
    "a continuation is no duplicate",
  );
  const continuationAgain = admit("F~~S~F~a", { v: 1, id: "r1", pos: 2, n: 1 });
  assert.equal(continuationAgain.do, "drop");
  assert.equal("request" in continuationAgain ? continuationAgain.request : undefined, undefined);
  assert.deepEqual(ack.ids, ["r1", "r1", "r1", "r1", "r1"]);
  const off = setup(0);
  off.admit("F~~~F~Push", { v: 1, id: "r1" });
  assert.equal(off.admit("F~~~F~Push", { v: 1, id: "r1" }).do, "route");
});

Deno.test("intake: a new request sent with keep whose final is kept (an earlier Subject ran it) is a duplicate, with or without the window; others are not", () => {
  for (const window of [100, 0]) {
    // Each on an intake of its own: the window would take the second copy for a duplicate.
    const admit = (header: object) =>
      setup(window, undefined, (id) => id === "ran").admit("F~~~F~Push", header);
    assert.deepEqual(admit({ v: 1, id: "ran", keep: 1 }), {
      do: "drop",
      reason: "duplicate",
      detail: 'request "ran" seen before',
      request: "ran",
      keep: true,
      flow: "F",
    });
    // Without keep, or as a continuation, the kept final does not answer it.
    assert.equal(admit({ v: 1, id: "ran" }).do, "route", `window ${window}`);
    const continuation = setup(window, undefined, () => true);
    assert.equal(continuation.admit("F~~S~F~a", { v: 1, id: "ran", pos: 2, n: 1, keep: 1 }).do, "route");
    assert.equal(admit({ v: 1, id: "new", keep: 1 }).do, "route");
  }
});

Deno.test("intake: a message naming another Subject incarnation is dropped as stale, neither acknowledged nor refused", () => {
  const { ack, admit } = setup(100, "aaaa");
  const stale = admit("F~~~F~Push", { v: 1, id: "r1", s: "bbbb" });
  assert.deepEqual(stale, { do: "drop", reason: "stale", detail: 'sent to Subject "bbbb"' });
  assert.deepEqual(ack.ids, [], "no acknowledgement: the sender sends it again, named for this Subject");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r1", s: "aaaa" }).do, "route", "not taken for a duplicate");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r2" }).do, "route", "a sender that names none is served");
  assert.deepEqual(ack.ids, ["r1", "r2"]);
  assert.deepEqual(admit("F~~~F~Push", { v: 1, id: "r3", s: 7 }), { do: "drop", reason: "bad_header" });
  assert.deepEqual(admit("F~~~F~Push", { v: 1, id: "r4", s: "x".repeat(65) }), {
    do: "drop",
    reason: "bad_header",
  });
  assert.deepEqual(
    admit("F~~~F~Push", { v: 1, id: "r5", s: "x".repeat(64) }),
    { do: "drop", reason: "stale", detail: `sent to Subject "${"x".repeat(64)}"` },
    "64 characters are a name (another incarnation's)",
  );
});

Deno.test("intake: bad headers, bad topics and misplaced pings are refused (NACK) when an id can be read", () => {
  const { ack, admit } = setup();
  assert.deepEqual(admit("F~~~F~Push", { v: 2, id: "h1" }), { do: "drop", reason: "bad_header" });
  assert.deepEqual(admit("F~~~F~Push", "not json"), { do: "drop", reason: "bad_header" });
  assert.equal(admit("F~~F~Push", { v: 1, id: "t1" }).do, "drop");
  assert.equal(admit("F!~~~F~Push", { v: 1, id: "t2" }).do, "drop");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "p1", k: "ping" }).do, "drop");
  assert.deepEqual(ack.nacks?.map((n) => [n.id, n.reason]), [
    ["h1", "bad_header"],
    ["t1", "bad_topic"],
    ["t2", "bad_topic"],
    ["p1", "bad_topic"],
  ]);
  assert.deepEqual(ack.ids, [], "nothing refused is acknowledged");
  assert.equal(admit("F~~~~ping-1", { v: 1, id: "p2", k: "ping" }).do, "ping");
});

Deno.test("intake: unknown flows, error continuations, positions with no step, and draining end in error publications", () => {
  const { admit } = setup();
  const error = (a: Admission): unknown[] =>
    a.do === "error" ? [a.error.flow, a.error.code, a.error.message] : [a];
  assert.deepEqual(error(admit("G~~~G~Push", { v: 1, id: "u" })), ["G", "unknown_flow", 'unknown flow "G"']);
  assert.deepEqual(
    error(admit("F~~S~F~a", { v: 1, id: "e1", pos: 2, error: { code: "timeout", message: "slow" } })),
    ["F", "timeout", "slow"],
  );
  assert.deepEqual(
    error(admit("F~~S~F~a", { v: 1, id: "e2", pos: 2, error: { code: "made_up", message: "x" } })),
    ["F", "handler_error", "x"],
    "only the documented codes pass",
  );
  assert.equal(error(admit("F~~S~F~a", { v: 1, id: "n1", pos: 99 }))[1], "no_step");
  assert.deepEqual(
    error(admit("F~~~F~Push", { v: 1, id: "d1" }, "{}", true)),
    ["F", "overloaded", "the Subject is shutting down"],
  );
  const resume = admit("X~~~X~wait", { v: 1, id: "z", resume: "F~abc~r1" });
  assert.deepEqual(resume.do === "resume" && resume.flow, "X", "a resume's errors go on its topic's flow");
});

Deno.test("acknowledgements: sent at most once per ACK_EVERY_MS while busy, everything owed at once", () => {
  const { clock, acks, ack, admit } = setup();
  admit("F~~~F~Push", { v: 1, id: "r1" });
  acks.refuse(acks.list(utf8("other")), "x", "oversize", "too big");
  acks.resumed(ack, "r-resume", "r0");
  assert.equal(acks.due(), false, "sent at 0 (the clock's start): not due yet");
  clock.now = ACK_EVERY_MS;
  assert.equal(acks.due(), true);
  const sent = acks.take();
  assert.deepEqual(sent.map((a) => [a.ids, a.nacks, a.resumed]), [
    [["r1"], undefined, [{ id: "r-resume", request: "r0" }]],
    [[], [{ id: "x", reason: "oversize", message: "too big" }], undefined],
  ]);
  assert.equal(acks.size, 0);
  assert.deepEqual(acks.take(), []);
  const next = acks.list(utf8("svc"));
  assert.notEqual(next, ack, "a new list once the last was taken");
  acks.accept(next, "r2");
  assert.equal(acks.due(), false, "just sent");
  clock.now += ACK_EVERY_MS;
  assert.deepEqual(acks.take().map((a) => a.ids), [["r2"]]);
});

Deno.test("acknowledgements: two connections whose routing ids decode to the same UTF-8 text are owed their own", () => {
  const { acks } = setup();
  acks.take(); // the set-up's own connection
  // libzmq's ids for peers that name none: a 0 and a counter. These two, consecutive, both decode
  // to "\0\x01\x02\x03\uFFFD" as UTF-8, and shared one list (and so one cap) before.
  const one = new Uint8Array([0, 1, 2, 3, 0x80]);
  const two = new Uint8Array([0, 1, 2, 3, 0x81]);
  acks.accept(acks.list(one), "a");
  acks.accept(acks.list(two), "b");
  acks.accept(acks.list(one.slice()), "c"); // the same id again, as a new receive's frame
  const sent = acks.take();
  assert.deepEqual(sent.map((a) => [[...a.idFrame], a.ids]), [[[...one], ["a", "c"]], [[...two], ["b"]]]);
  assert.notEqual(sent[0].key, sent[1].key);
  assert.equal(acks.list(utf8("worker-7")).key, "worker-7", "an ASCII id reads as itself");
});

Deno.test("back-pressure: stop reading at any limit, read again only once all are below half", () => {
  const limits = { maxPending: 100, backlog: 1000, held: 10_000 };
  assert.equal(pressure({ queued: 100, backlog: 0, held: 0 }, limits), "pause");
  assert.equal(pressure({ queued: 0, backlog: 1000, held: 0 }, limits), "pause");
  assert.equal(pressure({ queued: 0, backlog: 0, held: 10_000 }, limits), "pause");
  assert.equal(
    pressure({ queued: 60, backlog: 0, held: 0 }, limits),
    undefined,
    "between half and the limit",
  );
  assert.equal(pressure({ queued: 49, backlog: 499, held: 4999 }, limits), "resume");
  assert.equal(pressure({ queued: 49, backlog: 500, held: 0 }, limits), undefined);
});

/** A result gate that has sent step 1 of `flow` for request `id`. */
function gateSent(id: string, values = "{}") {
  const topics = new TopicCache();
  const gate = new ResultGate(topics, () => undefined, flows);
  const step = new Step(topics.step(flow, 1), utf8(JSON.stringify({ v: 1, id, pos: 1, n: 0 })), utf8(values));
  gate.sent(step, flow, id);
  return { topics, gate, step, out: new BatchWriter() };
}

Deno.test("result gate: a plain done passes unparsed; a result for another request is refused with an error; a pause is taken here", () => {
  const { topics, gate, step, out } = gateSent("r1", '{"in":1}');
  out.add(1, KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"r1","n":2}'), utf8("{}"));
  out.add(2, KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"other","n":2}'), utf8("{}"));
  out.add(
    3,
    KIND_CODES.pause,
    topics.step(flow, 2),
    utf8('{"v":1,"id":"r1","pos":2,"n":1}'),
    utf8('{"p":1}'),
  );
  out.add(4, KIND_CODES.pause, topics.step(flow, 2), utf8('{"v":1,"id":"r1","n":1}'), utf8("{}"));
  const view = BatchView.of(out.take())!;
  assert.equal(gate.plainDone(view, 0, step), true);
  assert.deepEqual(gate.judge(view, 0, step), { do: "publish", done: true });
  const refused = gate.judge(view, 1, step);
  assert.equal(refused.do, "refuse");
  if (refused.do === "refuse") {
    assert.deepEqual(refused.error && [refused.error.flow, refused.error.code, refused.error.header.id], [
      "F",
      "handler_error",
      "r1",
    ]);
    assert.match(refused.error!.message, /^the worker's result was refused: /);
  }
  const pause = gate.judge(view, 2, step);
  assert.deepEqual(pause.do === "pause" && [pause.flow, pause.position, pause.id, pause.n], [
    flow,
    2,
    "r1",
    1,
  ]);
  const noPos = gate.judge(view, 3, step);
  assert.deepEqual(noPos.do === "refuse" && noPos.why, "a pause result must name (pos) a @ASYNC step of F");
  const unknown = new Step(utf8("Z~~~Z~z"), utf8('{"v":1,"id":"r9"}'), utf8("{}"));
  assert.equal(
    gate.refusal(KIND_CODES.done, topics.done(flow), utf8('{"v":1,"id":"r9"}'), unknown),
    "the step it answers is not known",
  );
});

Deno.test("result gate: a done that names another request in a second id key is no plain done, and is refused", () => {
  const { topics, gate, step, out } = gateSent("victim");
  const headers = [
    '{"v":1,"id":"victim","id":"mine","n":2}', // JSON.parse, and so every subscriber, reads "mine"
    '{"v":1,"id":"victim","n":2,"id":"mine"}',
    '{"v":1,"id":"victim","n":2}', // as workers write it
    '{"v":1,"id":"victim"}',
    '{"v":1,"id":"victim","n":2,"x":{"id":"mine"}}', // its id is victim: checked in full, and passes
    '{"v":1,"id":"victim","n":2', // cut short (read in place: the next record's bytes follow it)
    '{"v":1,"id":"vic"}', // another request, whose id starts as this one's
  ];
  headers.forEach((h, i) => out.add(i, KIND_CODES.done, topics.done(flow), utf8(h), utf8("{}")));
  const view = BatchView.of(out.take())!;
  const plain = headers.map((_, i) => gate.plainDone(view, i, step));
  assert.deepEqual(plain, [false, false, true, true, false, false, false]);
  assert.deepEqual(headers.map((_, i) => gate.judge(view, i, step).do), [
    "refuse",
    "refuse",
    "publish",
    "publish",
    "publish",
    "refuse",
    "refuse",
  ]);
  // Only the plain ones are handed on as the step's request's final; the one checked in full is
  // published as it came, and read again where it is counted.
  assert.deepEqual(
    headers.map((_, i) => (gate.judge(view, i, step) as { done?: true }).done === true),
    plain,
  );
});

Deno.test("result gate: the poisoned error names every failed delivery", () => {
  const step = new Step(utf8("F~~S~F~a"), utf8('{"v":1,"id":"r1","pos":2,"n":1}'), utf8('{"x":1}'));
  const e = poisonedError(step, ["died", "went silent"]);
  assert.deepEqual([e.flow, e.header.id, e.header.pos, e.code], ["F", "r1", 2, "poisoned"]);
  assert.equal(
    e.message,
    "step F~~S~F~a was delivered 2 times and its worker failed each time: (1) died; (2) went silent",
  );
});

Deno.test("intake: a new request or resume answered with an error here (overloaded, unknown flow, no step) or refused after (over its connection's cap) is no duplicate when sent again; an answered continuation is", () => {
  const { admit } = setup();
  assert.equal(admit("F~~~F~Push", { v: 1, id: "d" }, "{}", true).do, "error", "draining: overloaded");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "d" }).do, "route", "sent again once it serves: it runs");
  assert.equal(admit("Nope~~~Nope~Push", { v: 1, id: "u" }).do, "error");
  assert.equal(admit("Nope~~~Nope~Push", { v: 1, id: "u" }).do, "error", "unknown_flow again, not dropped");
  assert.equal(admit("F~~X~F~nothing", { v: 1, id: "s" }).do, "error");
  assert.equal(admit("F~~X~F~nothing", { v: 1, id: "s" }).do, "error", "no_step again, not dropped");
  const resume = { v: 1, id: "r", resume: "F~0123456789abcdef0123456789abcdef~x" };
  assert.equal(admit("F~~~~", resume, "{}", true).do, "error");
  assert.equal(
    admit("F~~~~", resume).do,
    "resume",
    "a resume refused while draining is taken when sent again",
  );
  // A service's error continuation (it has a position) ends its request: a copy is a duplicate.
  const failed = { v: 1, id: "c", pos: 2, n: 1, error: { code: "handler_error", message: "x" } };
  assert.equal(admit("F~~S~F~a", failed).do, "error");
  assert.equal(admit("F~~S~F~a", failed).do, "drop");
});

Deno.test("intake: refused() forgets only the request admit just took (over its cap), never one seen before", () => {
  const { admit, intake, ack } = setup();
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r1" }).do, "route");
  intake.refused("overloaded", "over the cap"); // over its connection's cap
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r1" }).do, "route", "sent again: it runs");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r1" }).do, "drop");
  intake.refused("overloaded", "x"); // (a duplicate is never refused; if it were, it is still remembered)
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r1" }).do, "drop");
  assert.equal(admit("~~~~ping-1", { v: 1, id: "p", k: "ping" }).do, "ping");
  intake.refused("overloaded", "x"); // a ping is not remembered: nothing to forget, and r1 stays
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r2" }).do, "route");
  // A ping while draining is answered overloaded; r2, taken before it, stays remembered.
  assert.equal(admit("~~~~ping-2", { v: 1, id: "p2", k: "ping" }, "{}", true).do, "error");
  assert.equal(admit("F~~~F~Push", { v: 1, id: "r2" }).do, "drop");
  // Refused after admit took it: its acknowledgement became a refusal; the duplicates' stay.
  assert.deepEqual(ack.ids, ["r1", "r1", "r1", "r2", "r2"]);
  assert.deepEqual(ack.nacks, [
    { id: "r1", reason: "overloaded", message: "over the cap", answered: true },
    { id: "p", reason: "overloaded", message: "x", answered: true },
    { id: "p2", reason: "overloaded", message: "the Subject is shutting down", answered: true },
  ]);
});

Deno.test("intake: a new request or resume refused with an error publication is refused on its DEALER too (NACK, answered), never acknowledged; a continuation answered with an error is acknowledged", () => {
  const { admit, ack } = setup();
  admit("F~~~F~Push", { v: 1, id: "d", t: 7 }, "{}", true); // draining; its send number is echoed
  admit("Nope~~~Nope~Push", { v: 1, id: "u", t: 0 }); // not a send number: not echoed
  admit("F~~X~F~nothing", { v: 1, id: "s" });
  admit("F~~~~", { v: 1, id: "z", resume: "F~0123456789abcdef0123456789abcdef~x" }, "{}", true);
  admit("F~~S~F~a", { v: 1, id: "n1", pos: 99 }); // a continuation with no step: no_step, acknowledged
  admit("F~~~F~Push", { v: 1, id: "ok" });
  assert.deepEqual(ack.ids, ["n1", "ok"]);
  assert.deepEqual(ack.nacks?.map((n) => [n.id, n.reason, n.answered, n.t]), [
    ["d", "overloaded", true, 7],
    ["u", "unknown_flow", true, undefined],
    ["s", "no_step", true, undefined],
    ["z", "overloaded", true, undefined],
  ]);
});
