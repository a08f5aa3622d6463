// Live reconfiguration (issue 22): `cli.ts reload` and `Client.reload` against a real `cli.ts
// start` deployment (its own processes, ipc in a temporary directory). New handler code serves
// new requests once every worker holds it; bad files and handler modules that do not load change
// nothing; a worker killed during a rollout comes back on the new version; a paused flow resumes
// on its own version while it is alive, else on the current one, else with bad_resume.
import assert from "node:assert/strict";
import { ReloadError } from "../src/client/reload.ts";
import { currentFiles } from "../src/cli/reload.ts";
import { killRole, rolePids, roleStats } from "../testing/deployment.ts";
import { copyComponent, deploy, eventually, reloadCli, reloadKey } from "./reload_fixture.ts";
import { runCli } from "./helpers.ts";

/** The counters every live worker of `dir` wrote last. */
async function workerStats(dir: string): Promise<Record<string, unknown>[]> {
  const out = [];
  for (const pid of await rolePids(dir, "worker")) {
    try {
      out.push(JSON.parse(await Deno.readTextFile(`${dir}/stats/worker-${pid}.json`)));
    } catch { /* being rewritten */ }
  }
  return out;
}

const stamps = (v: Record<string, unknown>) => [v.one, v.two, v.three];

Deno.test("reload: new handler code serves new requests once every worker holds it; stats show each role's version", async () => {
  const c = await copyComponent();
  await using d = await deploy(c);
  const client = await d.connect();
  try {
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]);
    await c.setStamp("v2");
    // No files: the current version's, read again.
    const r = await reloadCli(d);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { version: 2 });
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v2", "v2", "v2"]);
    assert.ok(
      await eventually(async () => {
        const s = await roleStats(d.dir, "subject");
        const ws = await workerStats(d.dir);
        return s.version === 2 && ws.length === 2 && ws.every((w) => w.version === 2);
      }),
      "the Subject and both workers report version 2",
    );
    const s = await roleStats(d.dir, "subject");
    assert.deepEqual(s.versions, [2], "version 1 is retired: no request uses it");
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a flow file with a syntax error changes nothing; the CLI and the Subject name file:line:column", async () => {
  const c = await copyComponent();
  await using d = await deploy(c);
  const client = await d.connect();
  try {
    await c.setStamp("v2");
    const bad = await c.write("bad.ini", "[Broken]\n?Broken?Push\nSubject?Broken\n??done\n");
    const r = await reloadCli(d, [c.flows, bad, c.mapping]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /bad\.ini:3:\d+: error: /);
    assert.match(r.stderr, /nothing was reloaded/);
    // Straight to the Subject (no check in the client): it checks the files itself.
    const e = await assertRejectsReload(
      client.reload([c.flows, bad, c.mapping], { key: await reloadKey(d) }),
      /error\(s\): nothing changed/,
    );
    assert.ok(e.diagnostics.some((l) => /bad\.ini:3:\d+: error: /.test(l)), e.diagnostics.join("\n"));
    // Nothing changed: the old handler code still answers.
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]);
    const s = await roleStats(d.dir, "subject");
    assert.equal(s.version, 1);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a handler module that throws on import is refused by the workers; the rollout is rolled back", async () => {
  const c = await copyComponent();
  await using d = await deploy(c);
  const client = await d.connect();
  try {
    await c.setStamp("v2");
    await c.write("broken.ts", 'throw new Error("boom at import");\nexport function two() {}\n');
    const mapping = await c.write(
      "mapping2.ini",
      "[actionmapping]\n??One = ./stamp.ts#one\n??Two = ./broken.ts#two\n??Three = ./stamp.ts#three\n",
    );
    // The CLI checks as flows --strict does: it imports the module, and names the entry.
    const r = await reloadCli(d, [c.flows, mapping]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /mapping2\.ini:3:\d+: error: .*broken\.ts.*boom at import/);
    // Sent without that check, every worker imports it, refuses the version, and it is dropped.
    await assertRejectsReload(
      client.reload([c.flows, mapping], { key: await reloadKey(d) }),
      /refused version 2: .*boom at import.*nothing changed/,
    );
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]);
    assert.ok(
      await eventually(async () => {
        const s = await roleStats(d.dir, "subject");
        const ws = await workerStats(d.dir);
        return s.version === 1 && s.reloadsFailed === 1 &&
          ws.every((w) => JSON.stringify(w.versions) === "[1]");
      }),
      "the Subject and the workers hold version 1 only",
    );
    // The next good reload is version 3 (2 is not reused).
    const ok = await reloadCli(d, [c.flows, c.mapping]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { version: 3 });
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v2", "v2", "v2"]);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a reload without the Subject's key is refused and changes nothing", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { workers: 1 });
  const client = await d.connect();
  try {
    await c.setStamp("v2");
    await assertRejectsReload(
      client.reload([c.flows, c.mapping], { key: "guess" }),
      /key is not the Subject's \(reload\.key in its runtime directory; a Subject restarted since the key was read writes a new one: send the reload again\)/,
    );
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a worker killed during a rollout comes back on the new version", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { args: ["--heartbeat-timeout", "2000"] });
  const client = await d.connect();
  try {
    // Version 2's handler module takes 2 s to import: the kill lands while the workers load it.
    await c.write(
      "stamp.ts",
      (await Deno.readTextFile(c.stamp)).replace('"v1"', '"v2"') +
        "\nawait new Promise((r) => setTimeout(r, 2000));\n",
    );
    const key = await reloadKey(d);
    const [before] = await rolePids(d.dir, "worker");
    const reloading = client.reload([c.flows, c.mapping], { key });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await killRole(d.dir, "worker", 0), before);
    assert.equal(await reloading, 2);
    assert.ok(
      await eventually(async () => {
        const pids = await rolePids(d.dir, "worker");
        const ws = await workerStats(d.dir);
        return pids.length === 2 && !pids.includes(before) && ws.length === 2 &&
          ws.every((w) => w.version === 2);
      }, 20_000),
      "the restarted worker holds version 2, as the other does",
    );
    const results = await Promise.all(Array.from({ length: 20 }, () => client.request("Stamp")));
    for (const p of results) assert.deepEqual(stamps(p.values), ["v2", "v2", "v2"]);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a paused flow resumes on its own version while alive, else the current one, else bad_resume", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { workers: 1 });
  const client = await d.connect();
  const key = await reloadKey(d);
  try {
    // Three flows paused on version 1, and a slow request that keeps version 1 alive a while.
    const paused = [];
    const sub = await client.subscribe("Wait~ASYNC~");
    for (let i = 0; i < 3; i++) {
      void client.send("Wait", { i });
      const p = (await sub.next()).value;
      assert.ok(p.resume, "a pause publication with its token");
      assert.equal(p.values.one, "v1");
      paused.push(p.resume as string);
    }
    const slow = client.request("Slow", { ms: 20_000 }, { timeout: 60_000 }); // longer than two reloads on a loaded machine
    await c.setStamp("v2");
    assert.equal(await client.reload([c.flows, c.mapping], { key }), 2);
    await c.setStamp("v3");
    assert.equal(await client.reload([c.flows, c.mapping], { key }), 3);
    // Version 1 is alive (the slow request runs on it): the first resumes on it.
    const s = await roleStats(d.dir, "subject");
    assert.ok((s.versions as number[]).includes(1), `live versions ${s.versions}`);
    const own = await client.resume(paused[0], { ok: true });
    assert.deepEqual([own.values.one, own.values.three], ["v1", "v1"]);
    const slowDone = (await slow).values;
    assert.deepEqual([slowDone.one, slowDone.three], ["v1", "v1"]);
    // Version 1 retired: the second resumes on the current version, which has its flow.
    assert.ok(
      await eventually(async () => !((await roleStats(d.dir, "subject")).versions as number[]).includes(1)),
      "version 1 is retired once the slow request ended",
    );
    const current = await client.resume(paused[1], { ok: true });
    assert.equal(current.error, undefined, JSON.stringify(current));
    assert.deepEqual([current.values.one, current.values.three], ["v1", "v3"]);
    // A fourth version removes the flow: the third ends with bad_resume naming it.
    const flows = await c.write(
      "flows4.ini",
      (await Deno.readTextFile(c.flows)).replace(/\[Wait\][^[]*/, ""),
    );
    assert.equal(await client.reload([flows, c.mapping], { key }), 4);
    const gone = await client.resume(paused[2], { ok: true });
    assert.equal(gone.error?.code, "bad_resume");
    assert.match(gone.error!.message, /flow "Wait" was removed by a reload/);
    assert.ok(
      await eventually(async () => (await roleStats(d.dir, "subject")).paused === 0),
      "no flow paused",
    );
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

async function assertRejectsReload(p: Promise<unknown>, message: RegExp): Promise<ReloadError> {
  const e = await p.then(() => undefined, (e) => e);
  assert.ok(e instanceof ReloadError, `a ReloadError, got ${e}`);
  assert.match(e.message, message);
  return e;
}

Deno.test("start --watch: a change to a handler module or a flow file is reloaded; a broken one changes nothing", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { workers: 1, args: ["--watch"] });
  const client = await d.connect();
  try {
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]);
    await c.setStamp("v2");
    assert.ok(
      await eventually(async () => (await client.request("Stamp")).values.one === "v2", 20_000),
      "the edited handler module serves new requests",
    );
    assert.ok(await eventually(async () => (await roleStats(d.dir, "subject")).version === 2));
    // A flow file saved with an error: nothing is reloaded, the deployment serves on.
    const text = await Deno.readTextFile(c.flows);
    await Deno.writeTextFile(c.flows, text.replace("Subject?Stamp?Three", "Subject?Stamp"));
    await new Promise((r) => setTimeout(r, 2000));
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v2", "v2", "v2"]);
    assert.equal((await roleStats(d.dir, "subject")).version, 2);
    // Saved again, fixed and with a flow added: reloaded.
    await Deno.writeTextFile(c.flows, text + "\n[Extra]\n?Extra?Push\nSubject?Extra?One\n??done\n");
    assert.ok(
      await eventually(async () => (await roleStats(d.dir, "subject")).version === 3, 20_000),
      "the fixed file is version 3",
    );
    assert.equal((await client.request("Extra")).values.one, "v2");
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("start --watch: an edit to a module a handler imports (in another folder) is reloaded, also one in a folder made after start", async () => {
  const c = await copyComponent();
  await Deno.mkdir(`${c.dir}/lib`);
  const tag = await c.write("lib/tag.ts", 'export const TAG = "t1";\n');
  // An optional plugin in a folder that does not exist yet: watching it must not stop the watch.
  await c.write(
    "tagged.ts",
    [
      'import { TAG } from "./lib/tag.ts";',
      "export async function tag(v: Record<string, unknown>) {",
      '  const extra = await import("./plugins/extra.ts").then((m) => m.E, () => "none");',
      "  return { ...v, tag: TAG, extra };",
      "}",
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(c.mapping, "\n??Tag = ./tagged.ts#tag\n", { append: true });
  await Deno.writeTextFile(c.flows, "\n[Tag]\n?Tag?Push\nSubject?Tag?Tag\n??done\n", { append: true });
  await using d = await deploy(c, { workers: 1, args: ["--watch"] });
  const client = await d.connect();
  const tagged = async () => (await client.request("Tag")).values;
  try {
    assert.deepEqual(await tagged(), { tag: "t1", extra: "none" });
    await Deno.writeTextFile(tag, 'export const TAG = "t2";\n');
    assert.ok(
      await eventually(async () => (await tagged()).tag === "t2", 20_000),
      "the edited imported module serves new requests",
    );
    assert.ok(await eventually(async () => (await roleStats(d.dir, "subject")).version === 2), "version 2");
    // The plugin's folder is made, then the plugin: reloaded, and the folder is watched from then on.
    await Deno.mkdir(`${c.dir}/plugins`);
    const plugin = await c.write("plugins/extra.ts", 'export const E = "e1";\n');
    assert.ok(
      await eventually(async () => (await tagged()).extra === "e1", 20_000),
      "the module in the new folder serves new requests",
    );
    await Deno.writeTextFile(plugin, 'export const E = "e2";\n');
    assert.ok(await eventually(async () => (await tagged()).extra === "e2", 20_000), "and its edits too");
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a Subject SIGKILLed after a reload comes back with the reloaded files, not start's", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { workers: 1 });
  const client = await d.connect();
  try {
    const flows = await c.write(
      "flows2.ini",
      (await Deno.readTextFile(c.flows)) + "\n[Extra]\n?Extra?Push\nSubject?Extra?One\n??done\n",
    );
    const r = await reloadCli(d, [flows, c.mapping]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await client.request("Extra")).values.one, "v1");
    const [before] = await rolePids(d.dir, "subject");
    assert.equal(await killRole(d.dir, "subject"), before);
    assert.ok(
      await eventually(async () => {
        const pids = await rolePids(d.dir, "subject");
        return pids.length === 1 && pids[0] !== before;
      }, 20_000),
      "the Subject was restarted",
    );
    // The restarted Subject has the added flow (start's files do not), and its worker serves it.
    const p = await client.request("Extra", {}, { timeout: 20_000 });
    assert.equal(p.error, undefined, JSON.stringify(p));
    assert.equal(p.values.one, "v1");
    const s = await roleStats(d.dir, "subject");
    assert.deepEqual(s.files, [flows, c.mapping]);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a handler module whose top-level await never ends fails the CLI's check within handler_import_timeout, naming it; nothing changes", async () => {
  const c = await copyComponent();
  await using d = await deploy(c);
  try {
    // A timer keeps the event loop alive: imported in-process, the command waited for ever.
    await c.write(
      "hang.ts",
      "await new Promise(() => setInterval(() => {}, 1000));\nexport function two() {}\n",
    );
    const mapping = await c.write(
      "mapping2.ini",
      "[actionmapping]\n??One = ./stamp.ts#one\n??Two = ./hang.ts#two\n??Three = ./stamp.ts#three\n",
    );
    const t0 = performance.now();
    const r = await runCli(["reload", ...d.flags, "--handler-import-timeout", "2000", c.flows, mapping]);
    const ms = performance.now() - t0;
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /mapping2\.ini:3:\d+: error: .*hang\.ts.*did not finish importing within 2000 ms/);
    assert.ok(ms < 30_000, `took ${Math.round(ms)} ms`);
    assert.equal((await roleStats(d.dir, "subject")).version, 1, "nothing was sent");
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: files over max_message_size are refused by the CLI at once, naming the size; nothing is sent (the Subject dropped it unanswered)", async () => {
  const c = await copyComponent();
  await using d = await deploy(c);
  try {
    const flows = await c.write("big.ini", `${"; padding\n".repeat(500)}${await Deno.readTextFile(c.flows)}`);
    const t0 = performance.now();
    const r = await runCli(["reload", ...d.flags, "--max-message-size", "4096", flows, c.mapping]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /\d+-byte message, over the Subject's max_message_size \(4096\): nothing was sent/,
    );
    assert.ok(performance.now() - t0 < 20_000, "at once, not after the reload's 60 s wait");
    assert.equal((await roleStats(d.dir, "subject")).version, 1);
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload: a Subject SIGKILLed mid-rollout ends the waiting reload at once with why (it waited out its 60 s)", async () => {
  const c = await copyComponent();
  await using d = await deploy(c, { workers: 1 });
  const client = await d.connect();
  try {
    // A module that takes 4 s to import keeps the rollout open.
    await c.write("slow.ts", 'await new Promise((r) => setTimeout(r, 4000));\nexport * from "./stamp.ts";\n');
    const mapping = await c.write(
      "mapping2.ini",
      "[actionmapping]\n??One = ./slow.ts#one\n??Two = ./slow.ts#two\n??Three = ./slow.ts#three\n",
    );
    assert.deepEqual(stamps((await client.request("Stamp")).values), ["v1", "v1", "v1"]); // the client knows this Subject
    const t0 = performance.now();
    const reload = client.reload([c.flows, mapping], { key: await reloadKey(d) });
    await new Promise((r) => setTimeout(r, 1000));
    await killRole(d.dir, "subject");
    await assertRejectsReload(reload, /Subject restarted while this reload waited.*outcome is unknown/);
    const ms = performance.now() - t0;
    assert.ok(ms < 30_000, `ended after ${Math.round(ms)} ms`);
  } finally {
    await client.close();
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("reload with no files takes the newest row of a live Subject: not a dead Subject's, however new, nor a row without files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-current-" });
  const dead = new Deno.Command("true").spawn();
  await dead.status;
  const live = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    await Deno.mkdir(`${dir}/stats`);
    const row = (pid: number, at: number, files?: string[]) =>
      Deno.writeTextFile(`${dir}/stats/subject-${pid}.json`, JSON.stringify({ at, files }));
    assert.equal(await currentFiles(dir), undefined, "no Subject");
    await row(Deno.pid, 1_000, ["older.ini"]);
    await row(live.pid, 2_000, ["newer.ini", "mapping.ini"]);
    // A Subject killed where nobody removed its row (start killed too), with older files.
    await row(dead.pid, 9_000, ["dead.ini"]);
    await Deno.writeTextFile(
      `${dir}/stats/worker-${Deno.pid}.json`,
      JSON.stringify({ at: 10_000, files: ["w"] }),
    );
    assert.deepEqual(await currentFiles(dir), ["newer.ini", "mapping.ini"]);
    await row(live.pid, 3_000); // no files (yet): skipped
    assert.deepEqual(await currentFiles(dir), ["older.ini"]);
    await Deno.writeTextFile(`${dir}/stats/subject-${Deno.pid}.json`, "{ half written");
    assert.equal(await currentFiles(dir), undefined);
  } finally {
    live.kill("SIGKILL");
    await live.status;
    await Deno.remove(dir, { recursive: true });
  }
});
