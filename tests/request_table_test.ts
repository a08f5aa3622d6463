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
  const { table, quota, metrics, book, accept, tick } = parts();
  accept("A", "r1");
  accept("A", "r2");
  assert.equal(table.size, 2, "one entry per request, not one per part");
  assert.equal(quota.tracked, 2);
  assert.equal(book.tracked, 2);
  // r1 pauses: the cap and its version let go, the metrics still time it (to its final after the resume).
  quota.release("r1");
  book.end("r1");
  assert.equal(table.size, 2);
  assert.equal(book.versionOf("r1"), undefined);
  tick(40);
  metrics.published(final("r1"));
  assert.equal(table.size, 1, "r1's last part let go");
  assert.equal(metrics.snapshot().flows.F.count, 1);
  assert.ok(Math.abs(metrics.snapshot().flows.F.sum - 0.04) < 1e-9);
  // r2 ends the usual way: its final leaves (the cap and version first, then the metrics).
  quota.release("r2");
  book.end("r2");
  metrics.published(final("r2"));
  assert.equal(table.size, 0);
  assert.equal(quota.inFlight("A"), 0);
  assert.equal(book.refs(1), 0);
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

Deno.test("request table: a paused request's entry (metrics only) is the oldest, so it goes first; live ones stay", () => {
  const { table, quota, book, accept } = parts(3);
  accept("A", "paused");
  quota.release("paused");
  book.end("paused");
  accept("A", "r1");
  accept("A", "r2");
  accept("A", "r3"); // over 3: "paused" goes, not r1
  assert.equal(table.get("paused"), undefined);
  assert.equal(quota.inFlight("A"), 3);
  assert.equal(book.versionOf("r1"), 1);
});
