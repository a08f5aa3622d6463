// Configuration versions (src/roles/config_versions.ts): the Subject's version table, the
// reference counts that retire old versions, where a paused flow resumes, and the rollout state
// machine on an injected clock. Pure: no sockets.
import assert from "node:assert/strict";
import { Rollout, sourcesHash, VersionBook, versionSlot } from "../src/roles/config_versions.ts";
import { type Flow, parseFlowFile } from "../src/topic/flow_file.ts";
import { PauseBook } from "../src/roles/pause_book.ts";
import { PausedStore } from "../src/roles/paused_store.ts";
import { utf8 } from "../src/wire/protocol.ts";

function flows(text: string): Map<string, Flow> {
  return new Map(parseFlowFile(text, "f.ini").flows.map((f) => [f.name, f]));
}
const V1 = flows("[A]\n?A?Push\nS?A?a\n??done\n[B]\n?B?Push\nS?B@ASYNC?wait\nS?B?b\n??done\n");
const V2 = flows("[A]\n?A?Push\nS?A?a2\n??done\n");
const content = (f: Map<string, Flow>, hash = "h") => ({ flows: f, sources: [], hash });

Deno.test("config versions: a request keeps the version it started on; the old one retires with its last request", () => {
  const book = new VersionBook(content(V1));
  assert.equal(book.begin("r1"), 1);
  assert.equal(book.begin("r2"), 1);
  const v2 = book.propose(content(V2));
  assert.equal(v2, 2);
  // While version 2 rolls out, new requests still start on version 1.
  assert.equal(book.begin("r3"), 1);
  assert.deepEqual(book.commit(2), []);
  assert.equal(book.current, 2);
  assert.equal(book.begin("r4"), 2);
  // A continuation of r1 is routed with version 1's flows, one of r4 with version 2's.
  assert.equal(book.flowsFor("r1"), V1);
  assert.equal(book.flowsFor("r4"), V2);
  assert.equal(book.flowsFor(undefined), V2);
  assert.deepEqual(book.end("r1"), []);
  assert.deepEqual(book.end("r2"), []);
  assert.equal(book.refs(1), 1);
  assert.deepEqual(book.end("r3"), [1]);
  assert.equal(book.get(1), undefined);
  assert.deepEqual(book.live().map((v) => v.version), [2]);
  // The current version is never retired, even without requests.
  assert.deepEqual(book.end("r4"), []);
  assert.deepEqual(book.sweep(), []);
});

Deno.test("config versions: a version nobody uses at its commit retires at once; a dropped rollout leaves nothing", () => {
  const book = new VersionBook(content(V1));
  assert.deepEqual(book.commit(book.propose(content(V2))), [1]);
  const v3 = book.propose(content(V1));
  assert.throws(() => book.propose(content(V2)), RangeError); // one rollout at a time
  assert.equal(book.begin("r1"), 2); // the pending version takes no request
  book.drop(v3);
  assert.equal(book.get(v3), undefined);
  assert.equal(book.current, 2);
  assert.equal(book.propose(content(V2)), 4); // numbers are not reused
});

Deno.test("config versions: requests past the bound are forgotten; the next sweep retires what they held", () => {
  const book = new VersionBook(content(V1), 2);
  book.begin("r1");
  book.commit(book.propose(content(V2)));
  book.begin("r2");
  book.begin("r3"); // r1 forgotten: version 1 has no request left
  assert.equal(book.tracked, 2);
  assert.equal(book.versionOf("r1"), undefined);
  assert.deepEqual(book.sweep(), [1]);
});

Deno.test("config versions: a paused flow resumes on its version while alive, else the current one if it has the flow", () => {
  const book = new VersionBook(content(V1));
  book.begin("keep"); // holds version 1
  book.commit(book.propose(content(V2)));
  assert.equal(book.resumeOn(1, "B")?.version, 1);
  assert.equal(book.resumeOn(undefined, "B")?.version, 1); // recorded before versions: 1
  book.end("keep");
  assert.equal(book.get(1), undefined);
  assert.equal(book.resumeOn(1, "A")?.version, 2);
  assert.equal(book.resumeOn(1, "A")?.flow, V2.get("A"));
  assert.equal(book.resumeOn(1, "B"), undefined); // removed by version 2
});

Deno.test("config versions: a paused flow whose flow a reload removed ends with bad_resume naming it", () => {
  const book = new VersionBook(content(V1));
  const store = new PausedStore(":memory:");
  const pauses = new PauseBook({
    store,
    flows: V1,
    timeout: 60_000,
    resumeOn: (p) => book.resumeOn(p.version, p.flow),
  });
  const token = pauses.pause("B", 1, "r1", 1, "{}", 1);
  assert.equal(store.list()[0].version, 1);
  book.commit(book.propose(content(V2)));
  const r = pauses.resume("B", { v: 1, id: "x", resume: token }, utf8("{}"));
  assert.equal(r.kind, "error");
  if (r.kind === "error") {
    assert.equal(r.error.code, "bad_resume");
    assert.match(r.error.message, /flow "B" was removed by a reload/);
  }
  store.close();
});

Deno.test("config versions: slots run 1..255 and a version 255 after a live one is refused", () => {
  assert.deepEqual([1, 2, 255, 256, 510].map(versionSlot), [1, 2, 255, 1, 255]);
  const book = new VersionBook(content(V1));
  book.begin("old"); // version 1 stays alive
  for (let v = 2; v <= 255; v++) book.commit(book.propose(content(V2)));
  assert.throws(() => book.propose(content(V2)), /version 1 is still in use/);
  book.end("old");
  assert.equal(book.propose(content(V2)), 256);
});

Deno.test("rollout: loaded once every worker answers; a refusal or the deadline fails it; leavers are not waited for", () => {
  const r = new Rollout(2, ["w1", "w2"], 1000, 0);
  r.loaded("w1");
  r.joined("w3");
  assert.deepEqual(r.outcome(10), { state: "pending" });
  r.left("w2");
  r.loaded("w3");
  assert.deepEqual(r.outcome(20), { state: "loaded" });

  const refused = new Rollout(3, ["w1", "w2"], 1000, 0);
  refused.refused("w2", "cannot import ./h.ts");
  const out = refused.outcome(10);
  assert.equal(out.state, "failed");
  assert.match(out.state === "failed" ? out.reason : "", /w2 refused version 3: cannot import/);

  const silent = new Rollout(4, ["w1"], 1000, 0);
  assert.equal(silent.outcome(999).state, "pending");
  const late = silent.outcome(1000);
  assert.equal(late.state, "failed");
  assert.match(late.state === "failed" ? late.reason : "", /no answer within 1000 ms from worker\(s\) w1/);
});

Deno.test("config versions: the sources hash depends on names, texts and order", async () => {
  const a = { file: "/x/a.ini", text: "A" };
  const b = { file: "/x/b.ini", text: "B" };
  assert.equal(await sourcesHash([a, b]), await sourcesHash([{ ...a }, { ...b }]));
  assert.notEqual(await sourcesHash([a, b]), await sourcesHash([b, a]));
  assert.notEqual(await sourcesHash([a]), await sourcesHash([{ ...a, text: "A2" }]));
});
