import assert from "node:assert/strict";
import { inTransaction, PausedStore, WriteGate } from "../src/roles/paused_store.ts";
import { makeToken, parseToken } from "../src/wire/protocol.ts";

const flow = (token: string, deadline: number) => ({
  token,
  id: "req~1",
  flow: "F",
  position: 2,
  n: 1,
  values: '{"a":1}',
  pausedAt: 0,
  deadline,
});

/** A store holding one paused flow, token `t` (request `req~1`, deadline 2000). */
function oneToken() {
  const s = new PausedStore(":memory:");
  const t = makeToken("F", "req~1");
  s.save(flow(t, 2000));
  return { s, t };
}

/** A resume `resume` reaching Subject incarnation `incarnation`. */
const by = (resume: string, incarnation = "i1", keepUntil = 5000) => ({ resume, incarnation, keepUntil });

Deno.test("a token resumes once; expired flows are taken by expire(), not take()", () => {
  const s = new PausedStore(":memory:");
  const t1 = makeToken("F", "req~1");
  s.save(flow(t1, 2000));
  assert.equal(s.count(), 1);
  assert.deepEqual(s.take(t1, by("a"), 1000), {
    kind: "taken",
    paused: { ...flow(t1, 5000), takenBy: "a" },
  });
  assert.deepEqual(s.take(t1, by("b"), 1000), { kind: "none" }, "second use, by another resume");
  assert.equal(s.count(), 0, "a taken token's flow is not waiting for a resume");
  const t2 = makeToken("F", "req~1");
  s.save(flow(t2, 2000));
  assert.deepEqual(s.take(t2, by("a"), 2000), { kind: "none" }, "expired");
  assert.deepEqual(s.expire(2000, "i1").map((p) => p.token), [t2]);
  assert.equal(s.count(), 0);
  s.close();
});

Deno.test("a taken token is kept: the resume that took it takes it again in a later Subject incarnation, no other resume ever", () => {
  const { s, t } = oneToken();
  assert.equal(s.take(t, by("a", "i1"), 1000).kind, "taken");
  // The same resume again in the same incarnation: its flow runs there already.
  assert.deepEqual(s.take(t, by("a", "i1"), 1000), { kind: "repeat", id: "req~1" });
  assert.deepEqual(s.take(t, by("b", "i2"), 1000), { kind: "none" });
  // That Subject died with the flow running: the same resume, sent again to its successor.
  const again = s.take(t, by("a", "i2", 9000), 1000);
  assert.equal(again.kind, "taken");
  assert.equal(again.kind === "taken" && again.paused.deadline, 9000, "kept until the new keepUntil");
  // The successor's expiry leaves a token it took to its running flow, even past its deadline.
  assert.deepEqual(s.expire(9000, "i2"), []);
  s.close();
});

Deno.test("a finished token never expires into a timeout; its resume, sent again, is a repeat, or runs it again with rerunEnded (a final lost with an IM in the Subject's process)", () => {
  const { s, t } = oneToken();
  assert.equal(s.take(t, by("a", "i1", 3000), 1000).kind, "taken");
  s.finish(t);
  assert.deepEqual(
    s.take(t, by("a", "i1"), 1000),
    { kind: "repeat", id: "req~1" },
    "ended in this incarnation",
  );
  assert.deepEqual(s.take(t, by("a", "i2"), 1000), { kind: "repeat", id: "req~1" }, "the IM has its final");
  assert.deepEqual(s.take(t, by("b", "i2"), 1000), { kind: "none" });
  assert.deepEqual(s.expire(3000, "i2"), [], "its mark goes silently at its deadline");
  assert.deepEqual(s.take(t, by("a", "i2"), 1000), { kind: "none" }, "gone");
  const u = makeToken("F", "req~2");
  s.save({ ...flow(u, 2000), id: "req~2" });
  assert.equal(s.take(u, by("a", "i1", 3000), 1000).kind, "taken");
  s.finish(u);
  const rerun = { ...by("a", "i2", 3000), rerunEnded: true };
  assert.equal(s.take(u, rerun, 1000).kind, "taken", "rerunEnded: runs again");
  assert.deepEqual(
    s.take(u, { ...by("b", "i3"), rerunEnded: true }, 1000),
    { kind: "none" },
    "no other resume",
  );
  assert.equal(s.expire(3000, "i3").length, 1, "taken again, not ended: expires in a later incarnation");
  s.close();
});

Deno.test("a token whose flow paused again is finished with the new pause's save: its resume does not take it again", () => {
  const { s, t } = oneToken();
  assert.equal(s.take(t, by("a", "i1"), 1000).kind, "taken");
  const next = makeToken("F", "req~1");
  s.save({ ...flow(next, 4000), position: 4 }, t);
  assert.deepEqual(s.take(t, by("a", "i2"), 1000), { kind: "repeat", id: "req~1" }, "after a restart too");
  assert.deepEqual(s.list().map((p) => p.token), [next], "the new pause waits for its resume");
  assert.deepEqual(s.expire(5000, "i2").map((p) => p.token), [next], "the finished token expires silently");
  s.close();
});

Deno.test("a token taken in a Subject incarnation that died, and not taken again by its deadline, expires naming its resume", () => {
  const { s, t } = oneToken();
  assert.equal(s.take(t, by("a", "i1", 3000), 1000).kind, "taken");
  assert.deepEqual(s.expire(3000, "i2"), [{ ...flow(t, 3000), takenBy: "a" }]);
  assert.deepEqual(s.expire(3000, "i2"), [], "once");
  s.close();
});

Deno.test("a store written before tokens were kept when taken opens, and its paused flows resume", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/p.sqlite`;
  const { DatabaseSync } = await import("node:sqlite");
  const old = new DatabaseSync(path);
  old.exec(`CREATE TABLE paused (
    token TEXT PRIMARY KEY, id TEXT NOT NULL, flow TEXT NOT NULL, position INTEGER NOT NULL,
    n INTEGER NOT NULL, "values" TEXT NOT NULL, paused_at INTEGER NOT NULL, deadline INTEGER NOT NULL,
    version INTEGER)`);
  const t = makeToken("F", "req~1");
  old.prepare(`INSERT INTO paused VALUES (?, 'req~1', 'F', 2, 1, '{"a":1}', 0, 2000, 1)`).run(t);
  old.close();
  const s = new PausedStore(path);
  assert.equal(s.count(), 1);
  assert.deepEqual(s.take(t, by("a"), 1000), {
    kind: "taken",
    paused: { ...flow(t, 5000), version: 1, takenBy: "a" },
  });
  s.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("state survives reopening the file", async () => {
  const dir = await Deno.makeTempDir();
  const t = makeToken("F", "x");
  const a = new PausedStore(`${dir}/p.sqlite`);
  a.save(flow(t, Date.now() + 60_000));
  a.close();
  const b = new PausedStore(`${dir}/p.sqlite`);
  const taken = b.take(t, by("a", "i1", Date.now() + 60_000));
  assert.equal(taken.kind === "taken" && taken.paused.flow, "F");
  b.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokens name their flow and request id, even ids with '~'", () => {
  assert.deepEqual(parseToken(makeToken("Flow.A", "a~b~c")), { flow: "Flow.A", id: "a~b~c" });
  assert.equal(parseToken("garbage"), undefined);
});

Deno.test("WriteGate: after a failed write, writes throw at once for the pause, then are tried again (injected clock)", () => {
  const gate = new WriteGate(500);
  let tried = 0;
  const fail = () => {
    tried++;
    throw new Error("database is locked");
  };
  assert.equal(gate.run(() => 7, 0), 7);
  assert.throws(() => gate.run(fail, 100), /database is locked/);
  assert.throws(
    () => gate.run(() => tried++, 599),
    /not tried: a write to the store failed less than 500 ms ago/,
  );
  assert.equal(tried, 1, "not tried during the pause");
  assert.throws(() => gate.run(fail, 600), /database is locked/, "tried again once it is over");
  assert.equal(gate.run(() => "ok", 1100), "ok");
});

Deno.test("waiting(id): paused, or taken by a resume whose flow has not ended (in any incarnation); known(id): paused at all, until its row's deadline", () => {
  const { s, t } = oneToken();
  assert.deepEqual([s.waiting("req~1"), s.known("req~1")], [true, true], "paused");
  assert.deepEqual([s.waiting("other"), s.known("other")], [false, false]);
  s.take(t, by("a"), 1000);
  assert.deepEqual([s.waiting("req~1"), s.known("req~1")], [true, true], "resumed, its flow running");
  s.finish(t);
  assert.deepEqual([s.waiting("req~1"), s.known("req~1")], [false, true], "ended: known until its deadline");
  s.expire(6000);
  assert.deepEqual([s.waiting("req~1"), s.known("req~1")], [false, false], "past its deadline: forgotten");
  s.close();
});

Deno.test("inTransaction: a full database (SQLite rolls back by itself) throws SQLite's error, not the rollback's, and leaves no transaction open", async () => {
  const { DatabaseSync } = await import("node:sqlite");
  const dir = await Deno.makeTempDir();
  const db = new DatabaseSync(`${dir}/full.sqlite`);
  try {
    db.exec("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 8;"); // 8 pages: a full disk, for SQLite
    const insert = db.prepare("INSERT INTO t VALUES (?)");
    assert.throws(
      () => inTransaction(db, "BEGIN IMMEDIATE", () => insert.run(new Uint8Array(64 * 1024))),
      /database or disk is full/,
    );
    assert.equal(db.isTransaction, false);
    inTransaction(db, "BEGIN", () => insert.run(new Uint8Array(16))); // and it is usable again
    assert.equal((db.prepare("SELECT count(*) AS c FROM t").get() as { c: number }).c, 1);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
  }
});
