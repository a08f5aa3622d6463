// The pure segment runner (src/topic/segment.ts), without a socket: `call` stands for the
// worker's handler invocation, so each case says which steps ran, with what, and how it ended.
import assert from "node:assert/strict";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import {
  advance,
  NO_HANDLER,
  runSegment,
  type SegmentOutcome,
  type StepCall,
  StepTimeoutError,
  type Values,
} from "../src/topic/segment.ts";

const flow = parseFlowFile(
  "[F]\n?F?Push\nS?F?a\nS?F?b\nS?F@PUBLISH?ask\nS?F?c\nS?F@ASYNC?wait\nS?F?d\n??done\nS?F?never\n",
  "f.ini",
).flows[0];

/** A `call` that records the positions it ran and adds `p<position>: true` to the values. */
function recorder(): { call: StepCall; ran: number[] } {
  const ran: number[] = [];
  return {
    ran,
    call: (pos, values) => {
      ran.push(pos);
      return { ...values, [`p${pos}`]: true };
    },
  };
}

const plan = (pos: number, n = 0, stepLimit = 100) => ({ pos, n, stepLimit });

function sync(out: SegmentOutcome | Promise<SegmentOutcome>): SegmentOutcome {
  assert.ok(!(out instanceof Promise), "synchronous handlers run synchronously");
  return out;
}

Deno.test("runSegment: runs plain steps in order and stops before a @PUBLISH step, which it does not run", () => {
  const { call, ran } = recorder();
  const out = sync(runSegment(flow, plan(1), { x: 1 }, call));
  assert.deepEqual(ran, [1, 2]);
  assert.equal(out.kind, "publish");
  assert.deepEqual({ pos: out.pos, n: out.n, steps: out.steps }, { pos: 3, n: 2, steps: 2 });
  assert.deepEqual(out.values, { x: 1, p1: true, p2: true });
});

Deno.test("runSegment: stops before an @ASYNC step (pause) and at ??done (done), with the last step's run", () => {
  const { call, ran } = recorder();
  const pause = sync(runSegment(flow, plan(4, 3), {}, call));
  assert.equal(pause.kind, "pause");
  assert.deepEqual({ pos: pause.pos, n: pause.n }, { pos: 5, n: 4 });
  const done = sync(runSegment(flow, plan(6, 5), { y: 2 }, call));
  assert.equal(done.kind, "done");
  assert.deepEqual({ pos: done.pos, n: done.n }, { pos: 7, n: 6 });
  assert.ok(done.kind === "done" && done.ran.pos === 6 && done.ran.n === 5);
  assert.deepEqual(done.kind === "done" && done.ran.input, { y: 2 });
  assert.deepEqual(ran, [4, 6], "nothing after ??done runs");
});

Deno.test("runSegment: passThrough skips the step at pos (a resumed @ASYNC step no handler maps)", () => {
  const { call, ran } = recorder();
  const out = sync(runSegment(flow, { ...plan(5, 4), passThrough: true }, { r: 1 }, call));
  assert.deepEqual(ran, [6]);
  assert.equal(out.kind, "done");
  assert.deepEqual(out.values, { r: 1, p6: true });
});

Deno.test("runSegment: the step limit stops a request where the next step would run", () => {
  const { call, ran } = recorder();
  const out = sync(runSegment(flow, plan(1, 0, 1), {}, call));
  assert.deepEqual(ran, [1]);
  assert.ok(out.kind === "error");
  assert.equal(out.code, "step_limit");
  assert.deepEqual({ pos: out.pos, n: out.n, steps: out.steps }, { pos: 2, n: 1, steps: 1 });
  assert.equal(out.message, "request ran 1 steps, the limit is 1");
  // ... but not where the flow ends: a request that reaches ??done at the limit is done.
  assert.equal(sync(runSegment(flow, plan(6, 0, 1), {}, recorder().call)).kind, "done");
});

Deno.test("runSegment: no handler, a throw and a non-object result become error outcomes at the failing step", () => {
  const none = sync(runSegment(flow, plan(1), { v: 1 }, () => NO_HANDLER));
  assert.ok(none.kind === "error");
  assert.deepEqual([none.code, none.pos, none.message], [
    "no_handler",
    1,
    "no handler for S?F?a (step 1 of F)",
  ]);
  assert.deepEqual(none.values, { v: 1 }, "the step's input goes with the error");

  const thrown = sync(runSegment(flow, plan(1), { v: 1 }, (pos, v) => {
    if (pos === 2) throw new Error("boom");
    return v;
  }));
  assert.ok(thrown.kind === "error");
  assert.deepEqual([thrown.code, thrown.pos, thrown.n, thrown.message], ["handler_error", 2, 1, "boom"]);
  assert.equal(thrown.steps, 1);

  const array = sync(runSegment(flow, plan(1), {}, () => [1] as unknown as Values));
  assert.ok(array.kind === "error");
  assert.deepEqual([array.code, array.message], [
    "handler_error",
    "handler for S?F?a returned an array, not an object",
  ]);
  assert.deepEqual(array.values, {});
});

Deno.test("runSegment: the first promise switches to async; a StepTimeoutError becomes a timeout", async () => {
  const ran: number[] = [];
  const call: StepCall = (pos, v) => {
    ran.push(pos);
    return pos === 1 ? Promise.resolve({ ...v, a: 1 }) : { ...v, b: 2 };
  };
  const out = runSegment(flow, plan(1), {}, call);
  assert.ok(out instanceof Promise);
  const end = await out;
  assert.deepEqual(ran, [1, 2]);
  assert.equal(end.kind, "publish");
  assert.deepEqual(end.values, { a: 1, b: 2 });
  assert.equal(end.steps, 2);

  const late = await runSegment(
    flow,
    plan(1),
    { v: 1 },
    () => Promise.reject(new StepTimeoutError("too slow")),
  );
  assert.ok(late.kind === "error");
  assert.deepEqual([late.code, late.message, late.pos], ["timeout", "too slow", 1]);
  assert.deepEqual(late.values, { v: 1 });
});

Deno.test("advance: what a step's result leads to", () => {
  const at = { pos: 1, n: 0, input: {} };
  assert.equal(advance(flow, at, { a: 1 }, 100), undefined, "a plain step next: go on");
  assert.equal(advance(flow, { pos: 2, n: 1, input: {} }, {}, 100)?.kind, "publish");
  assert.equal(advance(flow, { pos: 6, n: 1, input: {} }, {}, 100)?.kind, "done");
  const nul = advance(flow, at, null, 100);
  assert.ok(nul?.kind === "error" && nul.message === "handler for S?F?a returned null, not an object");
});
