// The client's acknowledgement bookkeeping (src/client/unacked.ts), with the time passed in.
import assert from "node:assert/strict";
import { Unacked } from "../src/client/unacked.ts";

const f = (s: string) => [new TextEncoder().encode(s)];
const names = (xs: readonly (readonly Uint8Array[])[]) => xs.map((x) => new TextDecoder().decode(x[0]));

Deno.test("Unacked: an acknowledgement retires the oldest message of its id; unknown ids are ignored", () => {
  const u = new Unacked();
  u.add("a", f("a1"), 0);
  u.add("a", f("a2"), 0); // a resume under the same id
  u.add("b", f("b1"), 0);
  u.ack(["a", "zzz", 7]);
  assert.deepEqual(names(u.due(0)), ["a2", "b1"]);
  u.ack(["a", "b"]);
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
  u.ack(["a"]);
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
  u.ack(["a"]);
  assert.deepEqual(names(u.due(0)), ["a2'", "b1'"]);
});
