// The step runner that a worker's thread and each handler sandbox share: a segment runs until a
// step whose handler lives in another sandbox, and ends with that step's message (a hand-off);
// the sandbox's better error messages replace a handler's own. No sockets, no threads.
import assert from "node:assert/strict";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { deniedMessage } from "../src/topic/permissions.ts";
import { decodeHeader, decodeValues, encodeHeader, TopicCache } from "../src/wire/protocol.ts";
import { StepResults } from "../src/wire/step_result.ts";
import { type Handoff, StepRunner } from "../src/roles/step_runner.ts";
import type { StepResult } from "../src/wire/step_result.ts";
import type { Values } from "../src/handler.ts";

const flow = parseFlowFile("[F]\n?F?Push\nT?F?a\nT?F?b\nT?F?c\n??done\n", "f.ini").flows[0];
const enc = new TextEncoder();
const topics = new TopicCache();

/** A runner whose sandbox (0) maps `a` and `c`; `b` is sandbox 1's. */
function runner(ran: string[], fail?: Error): StepRunner {
  return new StepRunner({
    flows: new Map([[flow.name, flow]]),
    stepLimit: 100,
    encoder: new StepResults(1 << 20),
    has: () => true,
    elsewhere: (_f, pos) => pos === 2 ? 1 : undefined,
    call: (f, pos, values) => {
      const name = f.steps[pos].key.action;
      ran.push(name);
      if (fail) throw fail;
      return { ...values, [name]: true } as Values;
    },
    describeError: deniedMessage,
  });
}

function step(pos: number, values: Values): [Uint8Array, Uint8Array, Uint8Array] {
  return [
    topics.step(flow, pos),
    encodeHeader({ v: 1, id: "r1", pos, n: pos - 1 }),
    enc.encode(JSON.stringify(values)),
  ];
}

Deno.test("a segment stops where the next step's handler is another sandbox's, with that step's message", () => {
  const ran: string[] = [];
  const out = runner(ran).run(...step(1, { x: 1 }), 7) as Handoff;
  assert.deepEqual(ran, ["a"]);
  assert.equal(out.kind, "handoff");
  assert.equal(out.to, 1);
  assert.deepEqual(out.frames[0], topics.step(flow, 2));
  const h = decodeHeader(out.frames[1]);
  assert.ok(typeof h !== "string");
  assert.deepEqual([h.id, h.pos, h.n], ["r1", 2, 1]);
  assert.deepEqual(decodeValues(out.frames[2]), { x: 1, a: true });
  // The other sandbox runs from there: its own step (b) is not "elsewhere" for it.
  const there = new StepRunner({
    flows: new Map([[flow.name, flow]]),
    stepLimit: 100,
    encoder: new StepResults(1 << 20),
    has: () => true,
    elsewhere: (_f, pos) => pos === 2 ? undefined : 0,
    call: (f, pos, values) => ({ ...values, [f.steps[pos].key.action]: true }),
  });
  const back = there.run(...out.frames, 7) as Handoff;
  assert.equal(back.kind, "handoff");
  assert.equal(back.to, 0);
  assert.deepEqual(decodeValues(back.frames[2]), { x: 1, a: true, b: true });
  const done = runner([]).run(...back.frames, 7) as StepResult;
  assert.equal(done.kind, "done");
  assert.deepEqual(decodeValues(done.frames[2]), { x: 1, a: true, b: true, c: true });
});

Deno.test("a denied operation's error names the permission and the resource", () => {
  const denied = new Error('Requires env access to "HOME", run again with the --allow-env flag');
  const out = runner([], denied).run(...step(1, {}), 1) as StepResult;
  assert.equal(out.kind, "error");
  assert.match(new TextDecoder().decode(out.frames[1]), /env access to \\"HOME\\" denied/);
});
