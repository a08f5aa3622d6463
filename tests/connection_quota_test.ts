// The per-connection cap on requests in flight (src/roles/connection_quota.ts), without sockets.
import assert from "node:assert/strict";
import { ConnectionQuota } from "../src/roles/connection_quota.ts";

Deno.test("quota: a connection at its cap is refused and counted; another connection is still admitted", () => {
  const q = new ConnectionQuota({ limit: 3 });
  for (const id of ["a1", "a2", "a3"]) assert.ok(q.admit("A", id));
  assert.equal(q.admit("A", "a4"), false);
  assert.equal(q.admit("A", "a5"), false);
  assert.equal(q.refused, 2);
  assert.ok(q.admit("B", "b1"));
  assert.equal(q.inFlight("A"), 3);
  assert.equal(q.inFlight("B"), 1);
  assert.equal(q.tracked, 4);
});

Deno.test("quota: a release makes room on that connection only; an unknown or repeated release changes nothing", () => {
  const q = new ConnectionQuota({ limit: 2 });
  q.admit("A", "a1");
  q.admit("A", "a2");
  q.admit("B", "b1");
  q.release("a1");
  q.release("a1");
  q.release("never-admitted");
  q.release("refused-one");
  assert.equal(q.inFlight("A"), 1);
  assert.equal(q.inFlight("B"), 1);
  assert.ok(q.admit("A", "a3"));
  assert.equal(q.admit("A", "a4"), false);
  for (const id of ["a2", "a3", "b1"]) q.release(id);
  assert.equal(q.tracked, 0);
  assert.equal(q.inFlight("A"), 0);
});

Deno.test("quota: a request already in flight (sent again with its id) counts once", () => {
  const q = new ConnectionQuota({ limit: 2 });
  assert.ok(q.admit("A", "r1"));
  assert.ok(q.admit("A", "r1"));
  assert.ok(q.admit("A", "r2"));
  assert.equal(q.inFlight("A"), 2);
  assert.equal(q.refused, 0);
});

Deno.test("quota: past maxTracked the oldest request is forgotten and its connection's count goes down", () => {
  const q = new ConnectionQuota({ limit: 10, maxTracked: 3 });
  q.admit("A", "a1");
  q.admit("B", "b1");
  q.admit("B", "b2");
  q.admit("B", "b3"); // a1 forgotten
  assert.equal(q.tracked, 3);
  assert.equal(q.inFlight("A"), 0);
  assert.equal(q.inFlight("B"), 3);
  q.release("a1"); // its final, late: nothing to release
  assert.equal(q.inFlight("B"), 3);
});

Deno.test("quota: room() says whether one more request of a connection would be admitted; a refusal is counted", () => {
  const q = new ConnectionQuota({ limit: 1 });
  assert.equal(q.room("a"), true);
  assert.equal(q.refused, 0, "asking is not refusing");
  assert.ok(q.admit("a", "r1"));
  assert.equal(q.room("a"), false);
  assert.equal(q.refused, 1);
  assert.equal(q.room("b"), true, "another connection has room");
  q.release("r1");
  assert.equal(q.room("a"), true);
});

Deno.test("quota: a connection whose count fell to zero counts afresh when it sends again; stale releases change nothing", () => {
  const q = new ConnectionQuota({ limit: 2 });
  assert.ok(q.admit("A", "r1"));
  q.release("r1");
  assert.equal(q.inFlight("A"), 0);
  assert.ok(q.admit("A", "r2"));
  assert.ok(q.admit("A", "r3"));
  q.release("r1"); // released already: not counted against the new requests
  assert.equal(q.inFlight("A"), 2);
  assert.equal(q.admit("A", "r4"), false);
  q.release("r2");
  assert.equal(q.inFlight("A"), 1);
  assert.ok(q.admit("A", "r4"));
  for (const id of ["r3", "r4", "r4"]) q.release(id);
  assert.equal(q.inFlight("A"), 0);
  assert.equal(q.tracked, 0);
});
