// A sandbox's handler code can post anything to the worker's main thread (found by an outside
// attack): a results batch that hands a step to another component's sandbox (that component's
// handler ran for a flow that never uses it), a `done` that skips the next component's step, a
// message that is not the protocol's (`postMessage(null)` ended the worker process). Real
// deployments: two components, each in a sandbox of its own; the forging handler finds its step's
// dispatch number as an attacker did, from the tags its sandbox reads.
import assert from "node:assert/strict";
import { rolePids } from "../testing/deployment.ts";
import { startDeployment } from "./helpers.ts";

const SRC = new URL("../src/", import.meta.url).href;

const FLOWS = `[A]
?A?Push
X?A?forge
??done

[AB]
?AB?Push
X?AB?forge
X?AB?count
??done

[B]
?B?Push
X?B?count
??done

[C]
?C?Push
Y?C?prep
X?C?count
??done
`;

/** Component A: `forge` posts what `values.mode` says, then returns as a handler does. */
const FORGER = `
import { BatchWriter } from "${SRC}wire/batch.ts";
import { parseFlowFile } from "${SRC}topic/flow_file.ts";
import { TopicCache, utf8 } from "${SRC}wire/protocol.ts";
const flows = new Map(parseFlowFile(${JSON.stringify(FLOWS)}, "f.ini").flows.map((f) => [f.name, f]));
const topics = new TopicCache();
// A step's dispatch number is the last batch tag its sandbox read before calling the handler.
let d = 0;
const getFloat64 = DataView.prototype.getFloat64;
DataView.prototype.getFloat64 = function (offset, little) {
  const v = getFloat64.call(this, offset, little);
  if (little && Number.isInteger(v) && v > 0) d = v;
  return v;
};
const post = (kind, topic, header, values) => {
  const w = new BatchWriter();
  w.add(d, kind, topic, utf8(JSON.stringify(header)), utf8(JSON.stringify(values)));
  self.postMessage({ type: "results", batch: w.take().slice(), steps: 0 });
};
export async function forge(values, ctx) {
  if (values.mode === "handoff") {
    // Step 1 of flow B, handed to sandbox 1 (component B's), for a request of flow A.
    post(16 + 1, topics.step(flows.get("B"), 1), { v: 1, id: ctx.id, pos: 1, n: 0 }, { by: "A" });
  } else if (values.mode === "skip") {
    // Flow AB ends here, B's step skipped.
    post(1, topics.done(flows.get("AB")), { v: 1, id: ctx.id, n: 2 }, { forged: true });
  } else if (values.mode === "otherid" || values.mode === "otherflow") {
    // Where this segment does hand off (step 2 of AB, to B), but for another request, or on
    // another flow's topic: B's handler ran with the id, flow and values the forger chose.
    const flow = flows.get(values.mode === "otherflow" ? "C" : "AB");
    const id = values.mode === "otherid" ? "VICTIM" : ctx.id;
    post(16 + 1, topics.step(flow, 2), { v: 1, id, pos: 2, n: 1 }, { injected: true });
  } else if (values.mode === "kind") {
    post(16 + 60, topics.step(flows.get("B"), 1), { v: 1, id: ctx.id, pos: 1, n: 0 }, {});
  } else if (values.mode === "null") {
    self.postMessage(null);
  } else if (values.mode === "oversize") {
    // Its own step's final, with values just over max_message_size (the default, 1 MiB), which
    // its sandbox's encoder would have refused.
    post(1, topics.done(flows.get("A")), { v: 1, id: ctx.id, n: 1 }, { big: "x".repeat(1024 * 1024) });
  }
  // Forging, it never returns: the forged message is the only answer its step gets.
  if (values.mode !== "none") await new Promise(() => {});
  return { ...values, forged: "returned" };
}
`;

/** Component B: counts its runs (its sandbox's memory), so a run nobody asked for shows. */
const COUNTER = `let n = 0;\nexport function count(values) { return { ...values, count: ++n }; }\n`;

async function components(): Promise<{ dir: string; files: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "zm-sbx-proto-" });
  await Deno.mkdir(`${dir}/a`);
  await Deno.mkdir(`${dir}/b`);
  await Deno.writeTextFile(`${dir}/flows.ini`, FLOWS);
  await Deno.writeTextFile(`${dir}/a/a.ts`, FORGER);
  await Deno.writeTextFile(`${dir}/a/mapping.ini`, "[actionmapping]\n??forge = ./a.ts#forge\n");
  await Deno.writeTextFile(`${dir}/b/b.ts`, COUNTER);
  await Deno.writeTextFile(`${dir}/b/mapping.ini`, "[actionmapping]\n??count = ./b.ts#count\n");
  return { dir, files: [`${dir}/flows.ini`, `${dir}/a/mapping.ini`, `${dir}/b/mapping.ini`] };
}

Deno.test("a sandbox cannot run another component's handler, skip its step, or end the worker by what it posts: it is restarted and its step poisoned", async () => {
  const c = await components();
  try {
    await using d = await startDeployment({ files: c.files, workers: 1 });
    await using client = await d.connect();
    const pids = await rolePids(d.dir, "worker");
    const count = async () => (await client.request("B", {}, { timeout: 20_000 })).values.count;
    assert.equal(await count(), 1);
    // Not forging, A's step and B's run in their own sandboxes.
    const plain = await client.request("AB", { mode: "none" }, { timeout: 20_000 });
    assert.equal(plain.action, "done", JSON.stringify(plain.error));
    assert.deepEqual([plain.values.forged, plain.values.count], ["returned", 2]);
    const cases: [string, string, RegExp][] = [
      // Before: B's handler ran for this request of flow A (its count went up).
      ["A", "handoff", /it answered handoff where its segment ends done at step 2 \(step 1 of A\)/],
      // Before: the final was A's forged done, B's step never ran.
      ["AB", "skip", /it answered done where its segment ends at step 2, another sandbox's \(step 1 of AB\)/],
      ["A", "kind", /a hand-off to sandbox 60, which is not another of this worker's/],
      // Before (the next two): B ran for request "VICTIM", or for flow C, with the forger's values.
      ["AB", "otherid", /a hand-off for request "VICTIM", not "[^"]+" \(step 1 of AB\)/],
      ["AB", "otherflow", /a hand-off whose topic is not step 2 of AB/],
      // Before: the worker process ended (TypeError reading null's type).
      ["A", "null", /a message that is not the sandbox protocol's \(null\)/],
      // Before: the request ended done with the forged values, larger than any request or result
      // may be (a result over twice the size was dropped by the Subject, and its step came again).
      ["A", "oversize", /a result of \d+ bytes, over max_message_size/],
    ];
    let runs = 2;
    for (const [flow, mode, why] of cases) {
      const p = await client.request(flow, { mode }, { timeout: 30_000 });
      assert.equal(
        p.error?.code,
        "poisoned",
        `${mode}: ${p.action} ${p.error?.message} ${JSON.stringify(p.values).slice(0, 200)}`,
      );
      assert.match(p.error!.message, why, mode);
      assert.equal(await count(), ++runs, `${mode}: B ran only for the requests that asked`);
      assert.deepEqual(await rolePids(d.dir, "worker"), pids, `${mode}: the same worker process serves`);
    }
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

/**
 * A component whose module, when its sandbox loads it, wraps `postMessage`, listens to the main
 * thread's messages and stops the clock far in the future, as an outside attack did to take the
 * loop monitor's buffer (and keep it beating from a thread of its own while the sandbox was
 * blocked) or to blind the monitor.
 */
const SNOOP = `
const seen = { monitor: false, init: false, batch: false };
// (start's check imports this module outside a sandbox too, where there is no postMessage.)
if (typeof self.postMessage === "function") {
  const post = self.postMessage.bind(self);
  self.postMessage = (m, t) => {
    if (m && m.monitor) seen.monitor = true;
    return post(m, t);
  };
  const look = (e) => {
    if (e.data instanceof Uint8Array) seen.batch = true;
    else if (e.data && e.data.type === "init") seen.init = true;
  };
  self.addEventListener("message", look);
  self.onmessage = look;
  Date.now = () => 8.64e15;
}
export function peek(values) { return { ...values, ...seen }; }
export function block(values) {
  const t = performance.now();
  while (performance.now() - t < 4000) { /* blocks its sandbox */ }
  return { ...values, blocked: true };
}
`;

Deno.test("handler code loaded in a sandbox cannot see the main thread's messages, take the loop monitor's buffer, or blind it by changing the clock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-sbx-snoop-" });
  try {
    await Deno.writeTextFile(
      `${dir}/flows.ini`,
      "[Peek]\n?Peek?Push\nX?Peek?peek\n??done\n\n[Block]\n?Block?Push\nX?Block?block\n??done\n",
    );
    await Deno.writeTextFile(`${dir}/snoop.ts`, SNOOP);
    await Deno.writeTextFile(
      `${dir}/mapping.ini`,
      "[actionmapping]\n??peek = ./snoop.ts#peek\n??block = ./snoop.ts#block\n\n[actiontimeout]\n??block = 1000\n",
    );
    await using d = await startDeployment({
      files: [`${dir}/flows.ini`, `${dir}/mapping.ini`],
      workers: 1,
      args: ["--max-deliveries", "1"],
    });
    await using client = await d.connect();
    const p = await client.request("Peek", {}, { timeout: 20_000 });
    assert.equal(p.action, "done", JSON.stringify(p.error));
    // Before: all three true.
    assert.deepEqual([p.values.monitor, p.values.init, p.values.batch], [false, false, false]);
    const t0 = performance.now();
    const b = await client.request("Block", {}, { timeout: 20_000 });
    const took = performance.now() - t0;
    // Before: done after 4 s (the monitor read the handler's clock, so it never looked blocked).
    assert.equal(b.error?.code, "poisoned", JSON.stringify(b));
    assert.match(b.error!.message, /blocked its event loop for \d+ ms/);
    assert.ok(took < 3900, `the blocked step ended after ${Math.round(took)} ms`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sandbox cannot take another component's steps by listing its keys as loaded", async () => {
  const c = await components();
  try {
    // A's module makes its sandbox load (and report) B's key too: it then ran B's steps, with B's
    // values, and B's handler never ran (an outside re-attack).
    await Deno.writeTextFile(
      `${c.dir}/a/a.ts`,
      `import { HandlerRegistry } from "${SRC}handler.ts";
if (typeof self.postMessage === "function") {
  const load = HandlerRegistry.prototype.loadEntries;
  HandlerRegistry.prototype.loadEntries = function (entries, ...rest) {
    entries.push({ ...entries[0], lookup: "X?B?count", text: "X?B?count" });
    return load.call(this, entries, ...rest);
  };
}
export function forge(values) { return { ...values, by: "A" }; }
`,
    );
    await using d = await startDeployment({ files: c.files, workers: 1 });
    await using client = await d.connect();
    const p = await client.request("B", { secret: "B-only" }, { timeout: 20_000 });
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.deepEqual(p.values, { secret: "B-only", count: 1 }, "B's own handler ran");
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("a handler that posts garbage when its sandbox holds two steps has them charged in turn: both end poisoned, no endless restarts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-sbx-two-" });
  try {
    await Deno.writeTextFile(`${dir}/flows.ini`, "[L]\n?L?Push\nX?L?loop\n??done\n");
    // Waits for a second step, then posts what is not a message of the protocol, with no handler
    // running: neither step was charged, and the two came back for ever (an outside re-attack:
    // 30 restarts in 25 s, none poisoned).
    await Deno.writeTextFile(
      `${dir}/loop.ts`,
      `let held = 0;
export async function loop() {
  held++;
  const t0 = performance.now();
  while (held < 2 && performance.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 50));
  self.postMessage(null);
  await new Promise(() => {});
}
`,
    );
    await Deno.writeTextFile(`${dir}/mapping.ini`, "[actionmapping]\n??loop = ./loop.ts#loop\n");
    await using d = await startDeployment({
      files: [`${dir}/flows.ini`, `${dir}/mapping.ini`],
      workers: 1,
      args: ["--max-deliveries", "2"],
    });
    await using client = await d.connect();
    const both = await Promise.all([0, 1].map(() => client.request("L", {}, { timeout: 40_000 })));
    for (const p of both) {
      assert.equal(p.error?.code, "poisoned", JSON.stringify(p));
      assert.match(p.error!.message, /sent a message that is not the sandbox protocol's \(null\)/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
