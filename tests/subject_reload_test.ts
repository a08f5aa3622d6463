// The Subject's reloads (src/roles/subject_reload.ts) over a recording host, on an injected
// clock: a joining worker is held until it holds every live version; a rollout switches only
// when every worker loaded it, and is dropped everywhere on a refusal or a timeout; a worker that
// joins during a rollout is waited for, and forgotten if it goes silent; its caller gets one answer.
// No sockets.
import assert from "node:assert/strict";
import { sourcesHash, VersionBook } from "../src/roles/config_versions.ts";
import { Reloads } from "../src/roles/subject_reload.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { text, utf8 } from "../src/wire/protocol.ts";
import { logger } from "../src/log.ts";

const FLOWS = "[A]\n?A?Push\nS?A?a\n??done\n";
const MAPPING = "[actionmapping]\n??a = ./h.ts#a\n";
const v1 = [{ file: "/c/flows.ini", text: FLOWS }, { file: "/c/mapping.ini", text: MAPPING }];
const v2 = [{ file: "/c/flows.ini", text: FLOWS + "[B]\n?B?Push\nS?B?b\n??done\n" }, v1[1]];

async function setup(restored = false) {
  const clock = { now: 0 };
  const toWorker: [string, string, Record<string, unknown>][] = [];
  const answers: Record<string, unknown>[] = [];
  const admitted: string[] = [];
  const flows = new Map(parseFlowFile(FLOWS, "/c/flows.ini").flows.map((f) => [f.name, f]));
  const hash = await sourcesHash(v1);
  const book = new VersionBook({ flows, sources: v1, hash });
  const reloads = new Reloads(book, {
    toWorker: (id, [type, body]) => toWorker.push([text(id), text(type), JSON.parse(text(body))]),
    toService: (_id, [, body]) => answers.push(JSON.parse(text(body))),
    admit: (key) => admitted.push(key),
  }, {
    key: "k",
    timeoutMs: 1000,
    silentAfterMs: 400,
    log: logger("subject"),
    now: () => clock.now,
    restored,
  });
  const status = (base: string) => utf8(JSON.stringify({ credit: 1, base }));
  const reload = (files = v2, key = "k") =>
    reloads.onReload(utf8("svc"), utf8(JSON.stringify({ ref: "r", key, files })));
  const loaded = (w: string, version: number, error?: string) =>
    reloads.onLoaded(w, utf8(JSON.stringify({ version, error })));
  return { clock, toWorker, answers, admitted, reloads, book, hash, status, reload, loaded };
}

Deno.test("subject reloads: a worker whose own files are the current version joins at once; one without them is held until it loaded them", async () => {
  const t = await setup();
  assert.equal(t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash)), false);
  assert.deepEqual(t.toWorker[0], ["w1", "CONFIG", { incarnation: t.reloads.incarnation, version: 1 }]);
  assert.equal(t.reloads.hold("w2", utf8("w2"), "READY", t.status("other")), true);
  const sent = t.toWorker[1][2] as { files: unknown[] };
  assert.equal(sent.files.length, 2, "the files of version 1");
  assert.equal(t.reloads.hold("w2", utf8("w2"), "HB", t.status("other")), true); // still held
  t.loaded("w2", 1);
  assert.deepEqual(t.admitted, ["w2"]);
  // A worker that says nothing of its files is never held (it runs its own).
  assert.equal(t.reloads.hold("w3", utf8("w3"), "READY", utf8('{"credit":1}')), false);
  assert.equal(t.reloads.workers, 2);
});

Deno.test("subject reloads: a rollout switches once every worker loaded it; one joining meanwhile is waited for", async () => {
  const t = await setup();
  t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash));
  t.toWorker.length = 0;
  await t.reload();
  assert.deepEqual(t.toWorker.map(([w, type, b]) => [w, type, b.version]), [["w1", "CONFIG", 2]]);
  t.reloads.hold("w2", utf8("w2"), "READY", t.status(t.hash)); // joins during the rollout
  t.loaded("w1", 2);
  assert.equal(t.book.current, 1, "w2 has not loaded it yet");
  assert.deepEqual(t.answers, []);
  t.loaded("w2", 2);
  assert.equal(t.book.current, 2);
  assert.deepEqual(t.answers, [{ ref: "r", version: 2 }]);
  // Version 1 had no request: retired on every worker.
  assert.deepEqual(t.toWorker.filter(([, type]) => type === "RETIRE").map(([w]) => w).sort(), ["w1", "w2"]);
});

Deno.test("subject reloads: a refusal or a silent worker drops the version everywhere and the caller is told", async () => {
  const t = await setup();
  t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash));
  t.reloads.hold("w2", utf8("w2"), "READY", t.status(t.hash));
  await t.reload();
  t.loaded("w1", 2);
  t.loaded("w2", 2, "cannot import ./h.ts: boom");
  assert.equal(t.book.current, 1);
  assert.equal(t.book.get(2), undefined);
  assert.match(
    String(t.answers[0].error),
    /w2 refused version 2: cannot import \.\/h\.ts: boom; nothing changed/,
  );
  assert.ok(t.toWorker.some(([w, type, b]) => w === "w1" && type === "RETIRE" && b.version === 2));

  await t.reload();
  t.loaded("w1", 3);
  t.clock.now = 999;
  t.reloads.tick();
  assert.equal(t.answers.length, 1, "still waiting for w2");
  t.clock.now = 1000;
  t.reloads.tick();
  assert.match(String(t.answers[1].error), /no answer within 1000 ms from worker\(s\) w2/);
  assert.equal(t.book.current, 1);
  assert.equal(t.reloads.failed, 2);
});

Deno.test("subject reloads: a worker that goes silent while it joins is forgotten: the rollout under way and the next do not wait for it", async () => {
  const t = await setup();
  t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash));
  await t.reload();
  // w2 connects during the rollout (held: it lacks the live versions), then is killed.
  assert.equal(t.reloads.hold("w2", utf8("w2"), "READY", t.status("other")), true);
  t.loaded("w1", 2);
  assert.equal(t.book.current, 1, "the rollout waits for w2");
  t.clock.now = 400;
  t.reloads.tick();
  assert.equal(t.book.current, 1, "not silent for longer than silentAfterMs yet");
  t.clock.now = 401;
  t.reloads.tick();
  assert.equal(t.book.current, 2, "w2 forgotten: the rollout ends without it");
  assert.deepEqual(t.answers, [{ ref: "r", version: 2 }]);
  const v3 = [{ file: "/c/flows.ini", text: v2[0].text + "[C]\n?C?Push\nS?C?c\n??done\n" }, v1[1]];
  t.toWorker.length = 0;
  await t.reload(v3);
  assert.deepEqual(t.toWorker.map(([w, type]) => [w, type]), [["w1", "CONFIG"]], "only w1 is sent it");
  t.loaded("w1", 3);
  assert.equal(t.book.current, 3);
  // If it speaks again, it joins afresh.
  assert.equal(t.reloads.hold("w2", utf8("w2"), "HB", t.status("other")), true);
  assert.ok(t.toWorker.some(([w, type, b]) => w === "w2" && type === "CONFIG" && b.version === 3));
});

Deno.test("subject reloads: a worker that leaves is not waited for; bad files and a wrong key change nothing", async () => {
  const t = await setup();
  t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash));
  t.reloads.hold("w2", utf8("w2"), "READY", t.status(t.hash));
  await t.reload();
  t.loaded("w1", 2);
  t.reloads.left("w2");
  assert.equal(t.book.current, 2);
  await t.reload([{ file: "/c/bad.ini", text: "[Bad]\n?Bad?Push\nS?Bad\n??done\n" }]);
  const bad = t.answers[1] as { error: string; diagnostics: string[] };
  assert.match(bad.error, /1 error\(s\): nothing changed/);
  assert.match(bad.diagnostics[0], /^\/c\/bad\.ini:3:\d+: error: /);
  await t.reload(v2, "guess");
  assert.match(String(t.answers[2].error), /key is not the Subject's/);
  assert.equal(t.book.current, 2);
  assert.equal(t.book.pending, undefined);
});

Deno.test("subject reloads: a worker's own files count as a version only for version 1 as loaded at start", async () => {
  // After a reload with the same files (new handler code), a joining worker loads it afresh.
  const t = await setup();
  await t.reload(v1);
  assert.equal(t.book.current, 2);
  assert.equal(t.reloads.hold("w1", utf8("w1"), "READY", t.status(t.hash)), true);
  assert.equal((t.toWorker.at(-1)![2] as { files: unknown[] }).files.length, 2);
  // A restarted Subject's version 1 is the last reload's files: not any worker's own.
  const r = await setup(true);
  assert.equal(r.reloads.hold("w1", utf8("w1"), "READY", r.status(r.hash)), true);
  assert.equal((r.toWorker.at(-1)![2] as { files: unknown[] }).files.length, 2);
});

Deno.test("subject reloads: a joining worker whose load failed (a timeout while it was stopped) is admitted once a later load of it succeeds", async () => {
  const t = await setup();
  assert.equal(t.reloads.hold("w2", utf8("w2"), "READY", t.status("other")), true);
  t.loaded("w2", 1, "its handler modules did not import within 10000 ms");
  assert.deepEqual(t.admitted, [], "not while it lacks the version");
  assert.equal(t.reloads.hold("w2", utf8("w2"), "HB", t.status("other")), true, "still held");
  t.loaded("w2", 1); // the import finished after all
  assert.deepEqual(t.admitted, ["w2"], "given work once it holds every live version");
});
