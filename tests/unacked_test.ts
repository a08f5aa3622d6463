// The client's acknowledgement bookkeeping (src/client/unacked.ts), with the time passed in.
import assert from "node:assert/strict";
import { LOST_ANSWER_MS, Unacked } from "../src/client/unacked.ts";

const f = (s: string) => [new TextEncoder().encode(s)];
const names = (xs: readonly (readonly Uint8Array[])[]) => xs.map((x) => new TextDecoder().decode(x[0]));

Deno.test("Unacked: an acceptance retires the oldest message of its id; unknown ids are ignored", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0);
  u.add("a", f("a2"), 0); // a resume under the same id
  u.add("b", f("b1"), 0);
  for (const id of ["a", "zzz"]) u.answer(id, 0);
  assert.deepEqual(names(u.due(0)), ["a2", "b1"]);
  u.answer("a", 0);
  u.answer("b", 0);
  assert.equal(u.size, 0);
});

Deno.test("Unacked: only messages late by `after` are due, and each is due again only `after` later", () => {
  const u = new Unacked();
  u.add("a", f("a"), 0);
  u.add("b", f("b"), 500);
  assert.deepEqual(names(u.due(1000, 1000)), ["a"]);
  assert.deepEqual(names(u.due(1200, 1000)), []);
  assert.deepEqual(names(u.due(1500, 1000)), ["b"]);
  assert.deepEqual(names(u.due(2000, 1000)), ["a"]);
  assert.deepEqual(names(u.due(2000)), ["a", "b"], "without `after`: every one");
});

Deno.test("Unacked: settled() resolves once the last message is acknowledged or forgotten", async () => {
  const u = new Unacked();
  await u.settled(); // nothing pending: at once
  u.add("a", f("a"), 0);
  u.add("b", f("b"), 0);
  let settled = false;
  const p = u.settled().then(() => (settled = true));
  u.answer("a", 0);
  await Promise.resolve();
  assert.equal(settled, false);
  assert.equal(u.delete("b"), true);
  await p;
  assert.equal(settled, true);
  assert.equal(u.delete("b"), false);
});

Deno.test("Unacked: restamp rewrites every message kept, in place and in order", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0);
  u.add("a", f("a2"), 0);
  u.add("b", f("b1"), 0);
  u.restamp((m) => f(`${new TextDecoder().decode(m[0])}'`));
  assert.deepEqual(names(u.due(0)), ["a1'", "a2'", "b1'"]);
  u.answer("a", 0);
  assert.deepEqual(names(u.due(0)), ["a2'", "b1'"]);
});

const refusal = { reason: "overloaded", message: "full", answered: true, copy: undefined };

Deno.test("Unacked: each send counts, resends too; a refusal keeps the message while resends of it await their answers, an acceptance forgets it", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0);
  assert.equal(names(u.due(2000, 1000)).length, 1, "late: sent again");
  assert.equal(u.count("a"), 2);
  assert.equal(u.answer("a", 2001, refusal), 1, "the first send refused: the resend may yet be accepted");
  assert.equal(u.has("a"), true);
  assert.deepEqual(names(u.due(5000, 1000)), [], "a refused id is not sent again while its answers come");
  assert.equal(u.answer("a", 2002), 0, "the resend accepted");
  assert.equal(u.has("a"), false);
  u.add("b", f("b1"), 0);
  u.due(2000, 1000);
  assert.equal(
    u.answer("b", 2001),
    1,
    "accepted: forgotten; the resend's answer is still owed (and decides nothing)",
  );
  assert.equal(u.has("b"), false);
  assert.equal(u.answer("b", 2002, refusal), 0, "that answer: ignored");
});

Deno.test("Unacked: a refusal waits for the answers to the other sends up to LOST_ANSWER_MS after the last answer; a restart forgets what was sent", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0);
  u.due(2000, 1000);
  u.answer("a", 2001, refusal);
  assert.deepEqual(names(u.due(4000, 1000)), [], "a Subject that stalled answers its backlog later");
  assert.deepEqual(u.lost(2001 + LOST_ANSWER_MS - 1, 1000), []);
  assert.equal(u.count("a"), 1);
  assert.equal(u.answer("a", 4001, refusal), 0, "the resend refused too: every send answered");
  assert.equal(u.has("a"), false);
  u.add("z", f("z1"), 0);
  u.due(2000, 1000);
  u.answer("z", 2001, refusal); // the other send was dropped unanswered (oversize, with its connection)
  assert.deepEqual(u.lost(2001 + LOST_ANSWER_MS, 1000), [["z", refusal]]);
  assert.equal(u.has("z"), false);
  u.add("b", f("b1"), 0);
  u.add("c", f("c1"), 0);
  u.due(2000, 1000);
  u.answer("c", 2001); // accepted; its resend's answer will never come (the Subject died)
  assert.deepEqual(u.restarted(), []);
  assert.equal(u.count("b"), 0, "nothing sent to the new Subject yet");
  assert.deepEqual(names(u.due(3000)), ["b1"], "b is sent again; c, accepted, is not");
  assert.equal(u.count("b"), 1);
});

Deno.test("Unacked: sends are numbered; a refusal of the id's latest send stands at once, one of an earlier send waits and the message is sent again, with no lost-answer clock", () => {
  const stamped: string[] = [];
  const u = new Unacked((m, t) => {
    const name = `${new TextDecoder().decode(m[0]).split("#")[0]}#${t}`;
    stamped.push(name);
    return f(name);
  });
  const t1 = u.nextSend();
  u.add("a", f(`a#${t1}`), 0, t1);
  assert.deepEqual(names(u.due(2000, 1000)), ["a#2"], "sent again with the next number");
  assert.equal(u.answer("a", 2001, { ...refusal, t: 1 }), 1, "send 1 refused: send 2 may yet be accepted");
  assert.deepEqual(
    u.lost(2001 + LOST_ANSWER_MS * 10, 1000),
    [],
    "no clock: send 2's answer, or a resend's, decides",
  );
  assert.deepEqual(
    names(u.due(2001 + LOST_ANSWER_MS * 10, 1000)),
    ["a#3"],
    "still sent again while it waits",
  );
  assert.equal(u.count("a"), 2);
  assert.equal(u.answer("a", 9000, { ...refusal, t: 3 }), 0, "the latest send refused: it stands");
  assert.equal(u.has("a"), false, "send 2's answer is not waited for: it came before, or never will");
  assert.deepEqual(stamped, ["a#2", "a#3"]);

  u.add("b", f("b"), 0); // send 4
  u.due(2000, 1000); // send 5
  assert.equal(u.answer("b", 2001, { ...refusal, t: 4 }), 1);
  assert.equal(u.answer("b", 2002), 0, "send 5 accepted");
  assert.equal(u.has("b"), false);

  u.add("c", f("c"), 0); // send 6
  assert.equal(u.answer("c", 1, { ...refusal, t: 6 }), 0, "one send, refused");
  u.add("d", f("d"), 0, false); // kept for a restarted Subject: not sent yet
  assert.deepEqual(names(u.due(0)), ["d#7"]);
  assert.equal(u.answer("d", 1, { ...refusal, t: 7 }), 0);
});

Deno.test("Unacked: a refusal of a send made before the id's first send kept (an earlier copy's, forgotten once it was accepted) is ignored", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0); // send 1
  u.due(2000, 1000); // send 2
  assert.equal(u.answer("a", 2001), 1, "send 1 accepted; send 2's answer owed");
  assert.equal(u.has("a"), false);
  u.add("a", f("a2"), 2002); // a new copy of the id: send 3
  assert.equal(u.answer("a", 2003, { ...refusal, t: 2 }), 1, "send 2's late refusal: not this copy's");
  assert.equal(u.count("a"), 1);
  assert.deepEqual(names(u.due(2003)), ["a2"], "the copy is kept, to be sent again");
  assert.equal(u.answer("a", 2004, { ...refusal, t: 4 }), 0, "its latest send refused: it stands");
});

Deno.test("Unacked: sends are recorded in runs by the rank of the incarnation they named; messages waiting to be sent again, none sent since, await no answer", () => {
  const [a, b] = [{ heard: 1 }, { heard: 2, started: 5 }];
  let rank = a;
  const u = new Unacked((frames) => frames, () => rank);
  u.add("a", f("a1"), 0);
  u.add("a", f("a2"), 0); // a resume under the same id
  assert.equal(u.awaits("a"), true);
  rank = b;
  u.restarted(); // the Subject restarted: to be sent again
  assert.equal(u.awaits("a"), false, "nothing sent to the new Subject yet");
  assert.equal(u.due(1).length, 2);
  assert.equal(u.awaits("a"), true);
  u.add("b", f("b1"), 1, false); // to be sent by the next due()
  assert.equal(u.awaits("b"), false);
  assert.deepEqual(u.sends("a"), [{ first: 1, last: 2, rank: a }, { first: 3, last: 4, rank: b }]);
  u.sends("a")[0].last = 99; // a copy
  assert.equal(u.sends("a")[0].last, 2);
  assert.deepEqual(u.sends("b"), []);
  assert.deepEqual(u.sends("none"), []);
});
