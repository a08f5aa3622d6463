// A worker's configuration versions (src/roles/worker_versions.ts): CONFIG messages load a
// version (its handler modules imported afresh), or name the worker's own files; steps find
// their version by slot; RETIRE closes a version, also one retired while it loaded; a new Subject
// incarnation's numbering replaces the old one, loads of the old one still under way included.
// Handlers run on the test's thread (no sandbox).
import assert from "node:assert/strict";
import { type Runtime, WorkerVersions } from "../src/roles/worker_versions.ts";
import type { HandlerCalls } from "../src/roles/handler_calls.ts";
import type { StepRunner } from "../src/roles/step_runner.ts";
import type { HandlerRegistry } from "../src/handler.ts";
import { utf8 } from "../src/wire/protocol.ts";
import { logger } from "../src/log.ts";

async function setup(importDelayMs = 0) {
  const dir = await Deno.makeTempDir({ prefix: "zmv" });
  const module = `${dir}/h.ts`;
  const write = (stamp: string) =>
    Deno.writeTextFile(
      module,
      `await new Promise((r) => setTimeout(r, ${importDelayMs}));\nexport const a = () => ({ stamp: ${
        JSON.stringify(stamp)
      } });\n`,
    );
  await write("v1");
  const files = [
    { file: `${dir}/flows.ini`, text: "[A]\n?A?Push\nS?A?a\n??done\n" },
    { file: `${dir}/mapping.ini`, text: "[actionmapping]\n??a = ./h.ts#a\n" },
  ];
  const stopped: string[] = [];
  const registries: HandlerRegistry[] = [];
  const fakeRuntime = (name: string) => ({
    calls: { stop: () => stopped.push(name) } as unknown as HandlerCalls,
    runner: { name } as unknown as StepRunner,
  });
  const base: Runtime = { version: 0, ...fakeRuntime("base") };
  let made = 0;
  const versions = new WorkerVersions({
    base,
    maker: {
      onThread: (handlers) => {
        registries.push(handlers);
        return fakeRuntime(`made${++made}`);
      },
    },
    importTimeout: 5000,
    closeAfter: 0,
    log: logger("worker"),
  });
  const config = (body: Record<string, unknown>) => versions.config(utf8(JSON.stringify(body)));
  const retire = (version: number) => versions.retire(utf8(JSON.stringify({ version })));
  const name = (r: Runtime | undefined) => (r?.runner as unknown as { name: string } | undefined)?.name;
  return { dir, files, write, versions, config, retire, stopped, registries, base, name };
}

const call = (reg: HandlerRegistry) =>
  reg.resolve({ sender: "S", context: "A", action: "a" })!.entry.call({}, {} as never);

Deno.test("worker versions: its own files until versions come; a version's handler module is imported afresh", async () => {
  const t = await setup();
  try {
    assert.equal(t.name(t.versions.forSlot(1)), "base", "no version yet: its own files run every step");
    assert.deepEqual(await t.config({ incarnation: "i1", version: 1 }), { version: 1 });
    assert.equal(t.name(t.versions.forSlot(1)), "base");
    await t.write("v2");
    assert.deepEqual(await t.config({ incarnation: "i1", version: 2, files: t.files }), { version: 2 });
    assert.equal(t.name(t.versions.forSlot(2)), "made1");
    assert.deepEqual(call(t.registries[0]), { stamp: "v2" });
    await t.write("v3");
    await t.config({ incarnation: "i1", version: 3, files: t.files });
    assert.deepEqual(call(t.registries[1]), { stamp: "v3" }, "imported again, not from the module cache");
    assert.deepEqual(call(t.registries[0]), { stamp: "v2" }, "version 2 keeps its code");
    assert.equal(t.versions.forSlot(4), undefined, "a version it does not hold");
    assert.equal(t.name(t.versions.forSlot(0)), "made2", "slot 0: the newest");
    assert.deepEqual(t.versions.versions(), [1, 2, 3]);
    t.retire(2);
    assert.deepEqual(t.stopped, ["made1"]);
    t.retire(1);
    assert.deepEqual(t.stopped, ["made1", "base"], "its own files close once no slot holds them");
    assert.deepEqual(t.versions.versions(), [3]);
  } finally {
    await Deno.remove(t.dir, { recursive: true });
  }
});

Deno.test("worker versions: bad files and modules are refused with why; a version retired while it loaded is closed", async () => {
  const t = await setup(300);
  try {
    const bad = await t.config({
      incarnation: "i1",
      version: 2,
      files: [{ file: `${t.dir}/flows.ini`, text: "[A]\n?A?Push\nS?A\n??done\n" }],
    });
    assert.match(bad.error!, /flows\.ini:3:\d+: error: /);
    const missing = await t.config({
      incarnation: "i1",
      version: 3,
      files: [t.files[0], { file: `${t.dir}/mapping.ini`, text: "[actionmapping]\n??a = ./nope.ts#a\n" }],
    });
    assert.match(missing.error!, /mapping\.ini:2: \.\/nope\.ts#a: cannot import/);
    const loading = t.config({ incarnation: "i1", version: 4, files: t.files });
    t.retire(4);
    assert.deepEqual(await loading, { version: 4, error: "retired while it loaded" });
    assert.deepEqual(t.stopped, ["made1"]);
    assert.deepEqual(t.versions.versions(), [0], "it holds no version: its own files only");
    // A syntax error in a module the mapped one imports: named with its file, line and column.
    await Deno.writeTextFile(`${t.dir}/syn.ts`, "export function a( {\n");
    await Deno.writeTextFile(`${t.dir}/wrap.ts`, 'export * from "./syn.ts";\n');
    const syn = await t.config({
      incarnation: "i1",
      version: 5,
      files: [t.files[0], { file: `${t.dir}/mapping.ini`, text: "[actionmapping]\n??a = ./wrap.ts#a\n" }],
    });
    assert.match(syn.error!, /mapping\.ini:2: \.\/wrap\.ts#a: cannot import .*SyntaxError.*syn\.ts:1:\d+/);
  } finally {
    await Deno.remove(t.dir, { recursive: true });
  }
});

Deno.test("worker versions: a new Subject incarnation numbers afresh; the old versions close", async () => {
  const t = await setup();
  try {
    await t.config({ incarnation: "i1", version: 2, files: t.files });
    assert.equal(t.name(t.versions.forSlot(2)), "made1");
    await t.config({ incarnation: "i2", version: 1 });
    assert.deepEqual(t.versions.versions(), [1]);
    assert.equal(t.versions.forSlot(2), undefined);
    await new Promise((r) => setTimeout(r, 20)); // closeAfter 0
    assert.deepEqual(t.stopped, ["made1"]);
  } finally {
    await Deno.remove(t.dir, { recursive: true });
  }
});

Deno.test("worker versions: a version still loading when a new Subject incarnation speaks is closed, not held under its number", async () => {
  const t = await setup(300); // each import takes 300 ms
  try {
    const first = t.config({ incarnation: "i1", version: 2, files: t.files });
    // The Subject died mid-rollout; its successor numbers from 1 again.
    assert.deepEqual(await t.config({ incarnation: "i2", version: 1 }), { version: 1 });
    const late = await first;
    assert.match(late.error!, /Subject restarted while it loaded/);
    assert.equal(t.versions.forSlot(2), undefined, "the old incarnation's version 2 is not held");
    assert.deepEqual(t.stopped, ["made1"], "it was closed");
    // The new incarnation's own version 2, with other code: imported afresh, not the old one's.
    await t.write("v2");
    assert.deepEqual(await t.config({ incarnation: "i2", version: 2, files: t.files }), { version: 2 });
    assert.equal(t.name(t.versions.forSlot(2)), "made2");
    assert.deepEqual(await call(t.registries[1]), { stamp: "v2" });
  } finally {
    await Deno.remove(t.dir, { recursive: true });
  }
});
