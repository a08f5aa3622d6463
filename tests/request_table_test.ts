// The Subject's one entry per request in flight (src/roles/request_table.ts), shared by the
// connection cap, the request metrics and the configuration versions, as the Subject wires them.
import assert from "node:assert/strict";
import { RequestTable } from "../src/roles/request_table.ts";
import { ConnectionQuota } from "../src/roles/connection_quota.ts";
import { RequestMetrics } from "../src/roles/request_metrics.ts";
import { VersionBook } from "../src/roles/config_versions.ts";
import { BatchWriter } from "../src/wire/batch.ts";

const enc = (s: string) => new TextEncoder().encode(s);

function final(id: string): Uint8Array {
  const b = new BatchWriter();
  b.add(0, 0, enc("F~~~~done"), enc(JSON.stringify({ v: 1, id })), enc("{}"));
  return b.take().slice();
}

/** The three parts on one table, as the Subject builds them. */
function parts(maxTracked?: number) {
  let now = 0;
  const table = new RequestTable(maxTracked);
  const quota = new ConnectionQuota({ limit: 100, table });
  const metrics = new RequestMetrics(() => now, undefined, table);
  const book = new VersionBook({ flows: new Map(), sources: [], hash: "a" }, undefined, table);
  const accept = (connection: string, id: string) => {
    assert.ok(quota.admit(connection, id));
    metrics.accepted(id);
    book.begin(id);
  };
  return { table, quota, metrics, book, accept, tick: (ms: number) => now += ms };
}

Deno.test("request table: one entry per request for all three parts; it goes when the last part lets go", () => {
  const { table, quota, metrics, book, accept } = parts();
  accept("A", "r1");
  accept("A", "r2");
  assert.equal(table.size, 2, "one entry per request, not one per part");
  assert.equal(quota.tracked, 2);
  assert.equal(book.tracked, 2);
  // r2 ends the usual way: its final leaves (the metrics time it, then the cap and version let go).
  metrics.published(final("r2"), (id) => {
    quota.release(id);
    book.end(id);
  });
  assert.equal(table.size, 1);
  assert.equal(quota.inFlight("A"), 1);
  assert.equal(book.refs(1), 1);
  assert.equal(metrics.snapshot().flows.F.count, 1);
});

Deno.test("request table: a paused request leaves the table (its time kept by the metrics); resumed, it comes back last", () => {
  const { table, quota, metrics, book, accept, tick } = parts();
  accept("A", "r1");
  accept("A", "r2");
  // r1 pauses: the cap and its version let go; the metrics keep timing it, outside the table.
  quota.release("r1");
  book.end("r1");
  assert.equal(table.size, 1, "a paused request takes no place in the table");
  assert.equal(book.versionOf("r1"), undefined);
  metrics.accepted("r1"); // a copy of the paused request: still timed from the first acceptance
  tick(40);
  // Resumed (the Subject's #resume): a new entry, after r2's.
  assert.ok(quota.admit("B", "r1"));
  book.begin("r1");
  assert.equal(table.size, 2);
  tick(10);
  metrics.published(final("r1"), (id) => {
    quota.release(id);
    book.end(id);
  });
  assert.equal(table.size, 1);
  const f = metrics.snapshot().flows.F;
  assert.equal(f.count, 1);
  assert.ok(Math.abs(f.sum - 0.05) < 1e-9, `timed from its first acceptance: ${f.sum}`);
});

Deno.test("request table: a part letting go of what it does not hold changes nothing of the others", () => {
  const { table, quota, metrics, book, accept } = parts();
  accept("A", "r1");
  book.end("r1");
  book.end("r1"); // twice: nothing more
  quota.release("never");
  metrics.published(final("never"));
  assert.equal(table.size, 1);
  assert.equal(quota.inFlight("A"), 1);
  assert.ok(quota.admit("A", "r1"), "still in flight: counts once");
  assert.equal(quota.inFlight("A"), 1);
});

Deno.test("request table: past its bound the oldest request is forgotten by every part", () => {
  const { table, quota, metrics, book, accept } = parts(2);
  accept("A", "r1");
  accept("B", "r2");
  accept("B", "r3"); // r1 forgotten
  assert.equal(table.size, 2);
  assert.equal(quota.inFlight("A"), 0, "its connection's count went down");
  assert.equal(quota.tracked, 2);
  assert.equal(book.tracked, 2);
  assert.equal(book.refs(1), 2, "its version's reference went too");
  // Its final, late: counted, not timed, and nothing else moves.
  metrics.published(final("r1"));
  quota.release("r1");
  assert.deepEqual(book.end("r1"), []);
  assert.equal(metrics.snapshot().flows.F.count, 0);
  assert.equal(quota.inFlight("B"), 2);
  assert.equal(table.size, 2);
});

Deno.test("request table: paused requests push no request in flight out, nor retire its version", () => {
  const { quota, book, accept } = parts(3);
  const pause = (id: string) => {
    quota.release(id);
    book.end(id);
  };
  accept("A", "live"); // long-running, on version 1
  accept("A", "p1");
  pause("p1");
  accept("A", "p2");
  pause("p2");
  book.commit(book.propose({ flows: new Map(), sources: [], hash: "b" }));
  accept("B", "r2"); // two requests in flight (live, r2), under the bound of 3
  assert.equal(book.versionOf("live"), 1);
  assert.equal(quota.inFlight("A"), 1);
  assert.deepEqual(book.sweep(), [], "version 1 is still in use");
});

Deno.test("request table: past its bound, a request resumed later outlives one accepted before its resume", () => {
  const { quota, book, accept } = parts(3);
  accept("A", "p1");
  quota.release("p1");
  book.end("p1"); // paused
  accept("A", "r2");
  assert.ok(quota.admit("A", "p1")); // resumed
  book.begin("p1", 1);
  accept("A", "r3");
  accept("A", "r4"); // over 3: the oldest in flight, r2, goes
  assert.equal(book.versionOf("r2"), undefined);
  assert.equal(book.versionOf("p1"), 1);
});

Deno.test("request table: one set of request metrics per table (a second one's park hook is refused)", () => {
  const table = new RequestTable();
  new RequestMetrics(() => 0, undefined, table);
  assert.throws(() => new RequestMetrics(() => 0, undefined, table), /one park hook/);
});

Deno.test("request table: the paused requests' times are bounded too: past the bound the oldest is counted, not timed", () => {
  const table = new RequestTable();
  const quota = new ConnectionQuota({ limit: 100, table });
  const metrics = new RequestMetrics(() => 0, 2, table);
  const book = new VersionBook({ flows: new Map(), sources: [], hash: "a" }, undefined, table);
  for (const id of ["p1", "p2", "p3"]) {
    quota.admit("A", id);
    metrics.accepted(id);
    book.begin(id);
    quota.release(id); // paused
    book.end(id);
  }
  assert.equal(table.size, 0);
  for (const id of ["p1", "p2", "p3"]) metrics.published(final(id));
  const f = metrics.snapshot().flows.F;
  assert.equal(f.outcomes.done, 3);
  assert.equal(f.count, 2, "p1's time was forgotten past the bound of 2");
});
