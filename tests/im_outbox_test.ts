// The Subject's bookkeeping of batches towards the Integration Manager (src/roles/im_outbox.ts): pure.
import assert from "node:assert/strict";
import { ImOutbox, type OutboxEntry } from "../src/roles/im_outbox.ts";

const bytes = (n: number) => new Uint8Array(n);

/** Sends everything queued, in order; returns what was sent. */
function sendAll(box: ImOutbox): OutboxEntry[] {
  const out: OutboxEntry[] = [];
  for (let e = box.next(); e; e = box.next()) {
    box.sent(e);
    out.push(e);
  }
  return out;
}

Deno.test("outbox: batches are held, in bytes, until acknowledged; sequence numbers start at the given base", () => {
  const box = new ImOutbox(5000);
  const a = box.add(bytes(10));
  const b = box.add(bytes(20));
  assert.deepEqual([a.seq, b.seq], [5000, 5001]);
  assert.equal(box.bytes, 30);
  assert.deepEqual(sendAll(box), [a, b]);
  assert.equal(box.next(), undefined, "nothing is sent twice without a reason");
  const r = box.ack("i1", [a.seq, b.seq]);
  assert.deepEqual(r, { restarted: false, previous: undefined, resent: 0, givenUp: [] });
  assert.equal(box.size, 0);
  assert.equal(box.bytes, 0);
  assert.equal(box.incarnation, "i1");
  // A repeat's second acknowledgement, or an unknown number, changes nothing.
  assert.equal(box.ack("i1", [a.seq, 42]).resent, 0);
});

Deno.test("outbox: an acknowledgement of a later send shows an earlier unacknowledged batch lost: it is sent again first", () => {
  const box = new ImOutbox(1);
  const [a, b, c] = [box.add(bytes(1)), box.add(bytes(2)), box.add(bytes(3))];
  sendAll(box);
  const d = box.add(bytes(4)); // queued, not sent yet
  const r = box.ack("i1", [b.seq]);
  assert.equal(r.resent, 1);
  assert.equal(box.bytes, 1 + 3 + 4);
  assert.deepEqual(sendAll(box), [a, d], "oldest first; c is still in flight, not lost");
  assert.equal(box.ack("i1", [c.seq, a.seq, d.seq]).resent, 0);
  assert.equal(box.size, 0);
});

Deno.test("outbox: no acknowledgement yet (a slow IM) is never a reason to send again", () => {
  const box = new ImOutbox(1);
  box.add(bytes(1));
  box.add(bytes(1));
  sendAll(box);
  assert.equal(box.ack("i1", []).resent, 0);
  assert.equal(box.next(), undefined);
  assert.equal(box.size, 2);
});

Deno.test("outbox: a ping's answer shows what was lost before it; pings are never sent again", () => {
  const box = new ImOutbox(1);
  const a = box.add(bytes(8));
  sendAll(box);
  const p1 = box.ping();
  box.sent(p1);
  const p2 = box.ping(); // replaces the unanswered p1
  box.dropPing(); // could not be sent
  assert.notEqual(p1.seq, p2.seq);
  const p3 = box.ping();
  box.sent(p3);
  assert.equal(box.ack("i1", [p3.seq]).resent, 1);
  assert.deepEqual(sendAll(box), [a]);
  assert.equal(box.size, 1, "a ping is not a batch");
});

Deno.test("outbox: a new incarnation answering shows a restart; what the dead IM held is sent again, oldest first", () => {
  const box = new ImOutbox(1);
  const a = box.add(bytes(1));
  sendAll(box);
  box.ack("old", [a.seq]);
  const [b, c] = [box.add(bytes(1)), box.add(bytes(1))];
  sendAll(box); // into the dying IM
  const d = box.add(bytes(1)); // while it is away: waits
  const p = box.ping();
  box.sent(p); // the new IM is up
  const r = box.ack("new", [p.seq]);
  assert.equal(r.restarted, true);
  assert.equal(r.previous, "old");
  assert.equal(r.resent, 2);
  assert.deepEqual(sendAll(box), [b, c, d]);
  assert.equal(box.ack("new", [b.seq, c.seq, d.seq]).resent, 0);
  assert.equal(box.size, 0);
});

Deno.test("outbox: a batch the same live IM skips again and again is given up (bounded retries)", () => {
  const box = new ImOutbox(1, 3);
  const p0 = box.ping();
  box.sent(p0);
  box.ack("i1", [p0.seq]);
  const big = box.add(bytes(100));
  let given: readonly OutboxEntry[] = [];
  for (let round = 0; round < 10 && !given.length; round++) {
    assert.deepEqual(sendAll(box), [big]);
    const p = box.ping();
    box.sent(p);
    given = box.ack("i1", [p.seq]).givenUp;
  }
  assert.deepEqual(given, [big]);
  assert.equal(big.misses, 4);
  assert.equal(box.size, 0);
  assert.equal(box.bytes, 0);
  assert.equal(box.next(), undefined);
});

Deno.test("outbox: a batch waiting for room in the socket when losses are found is sent once, in seq order", () => {
  const box = new ImOutbox(1);
  const a = box.add(bytes(1));
  box.sent(box.next()!);
  const b = box.add(bytes(1));
  const c = box.add(bytes(1));
  const waiting = box.next()!; // b: handed to the socket's queue, not sent yet
  assert.equal(waiting, b);
  const p = box.ping();
  box.sent(p);
  assert.equal(box.ack("i1", [p.seq]).resent, 1); // a
  assert.equal(box.next(), a, "the lost one goes first");
  box.sent(b); // the queued send completes
  assert.deepEqual(sendAll(box), [a, c]);
  box.ack("i1", [b.seq, a.seq, c.seq]);
  assert.equal(box.size, 0);
});
