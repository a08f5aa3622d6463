// The Subject's per-flow outcomes and latency histograms (pure, injected clock).
import assert from "node:assert/strict";
import fc from "fast-check";
import { BatchWriter } from "../src/wire/batch.ts";
import { LATENCY_BUCKETS, plainId, REFUSAL_KIND, RequestMetrics } from "../src/roles/request_metrics.ts";
import { markReplay } from "../src/roles/final_replay.ts";

const enc = (s: string) => new TextEncoder().encode(s);

function batch(...records: [topic: string, header: unknown][]): Uint8Array {
  const b = new BatchWriter();
  for (const [t, h] of records) b.add(0, 0, enc(t), enc(JSON.stringify(h)), enc("{}"));
  return b.take().slice();
}

Deno.test("request metrics: outcomes per flow; latency from acceptance into the right bucket", () => {
  let now = 1000;
  const m = new RequestMetrics(() => now);
  m.accepted("a");
  m.accepted("b");
  m.accepted("c");
  now += 3; // 3 ms: bucket le=0.005
  m.published(batch(["F~~~~done", { v: 1, id: "a" }], ["F~T~F~PUBLISH~x", { v: 1, id: "b", pos: 1 }]));
  now += 997; // b: 1 s, le=1
  m.published(batch(["F~~~~error", { v: 1, id: "b", error: { code: "handler_error", message: "x" } }]));
  now += 99_000; // c: 100 s, over every bound
  m.published(batch(["G~~~~error", { v: 1, id: "c", error: { code: "timeout", message: "x" } }]));
  const s = m.snapshot();
  assert.deepEqual(s.flows.F.outcomes, { done: 1, handler_error: 1 });
  assert.deepEqual(s.flows.G.outcomes, { timeout: 1 });
  const at = (le: number) => LATENCY_BUCKETS.indexOf(le);
  assert.equal(s.flows.F.buckets[at(0.005)], 1);
  assert.equal(s.flows.F.buckets[at(1)], 1);
  assert.equal(s.flows.F.count, 2);
  assert.equal(s.flows.G.buckets[LATENCY_BUCKETS.length], 1, "+Inf");
  assert.ok(Math.abs(s.flows.F.sum - 1.003) < 1e-9);
});

Deno.test("request metrics: a final of a request not accepted here is counted, not timed; step topics are not finals", () => {
  const m = new RequestMetrics(() => 0, 2);
  m.accepted("x1");
  m.accepted("x2");
  m.accepted("x3"); // over maxTracked: x1 is forgotten
  m.published(batch(
    ["F~~~~done", { v: 1, id: "x1" }],
    ["F~~~~done", { v: 1, id: "x2" }],
    ["F~~~~done", { v: 1, id: "elsewhere" }],
    ["F~A~B~C~done", { v: 1, id: "x3" }], // an action named done on a step topic
  ));
  const f = m.snapshot().flows.F;
  assert.deepEqual(f.outcomes, { done: 3 });
  assert.equal(f.count, 1);
  m.published(enc("not a batch"));
});

Deno.test("request metrics: a done's id is read from its header bytes; an id with an escape, or a header of another shape, is parsed, and all are timed", () => {
  assert.equal(plainId(enc('{"v":1,"id":"b3_42","n":3}')), "b3_42");
  assert.equal(plainId(enc(`{"v":1,"id":"${"x".repeat(300)}"}`)), "x".repeat(300));
  assert.equal(plainId(enc('{"v":1,"id":"é-ü","n":3}')), "é-ü");
  assert.equal(plainId(enc('{"v":1,"id":"a\\"b","n":3}')), undefined, "an escape: parse instead");
  assert.equal(plainId(enc('{"v":1,"n":3}')), undefined);
  assert.equal(plainId(enc('{"v":1,"id":"unterminated')), undefined);
  // The id JSON.parse reads (and every subscriber): a second id key wins; a nested one is no id.
  assert.equal(plainId(enc('{"v":1,"id":"victim","id":"mine"}')), undefined);
  assert.equal(plainId(enc('{"v":1,"t":{"id":"victim"},"id":"mine"}')), undefined);
  assert.equal(plainId(enc('{"v":1,"id":"victim","n":2,"id":"mine"}')), undefined);
  assert.equal(
    plainId(enc('{"v":1,"id":"tab\there","n":2}')),
    undefined,
    "a control character: JSON.parse refuses it",
  );
  assert.equal(plainId(enc('{"v":1,"id":"a","n":}')), undefined);
  assert.equal(plainId(enc('{"v":1,"id":"a","n":12}')), "a");
  assert.equal(plainId(enc('{"v":1,"id":"a","n":0}')), "a");
  assert.equal(plainId(enc('{"v":1,"id":"a","n":012}')), undefined, "not JSON: parsed, and refused there");
  let now = 0;
  const m = new RequestMetrics(() => now);
  m.accepted('a"b');
  m.accepted("plain");
  m.accepted("é-ü");
  m.accepted("other");
  m.accepted("mine");
  now = 2;
  // Same topic twice (the flow is reused), then a topic of the same length of another flow.
  const ended: string[] = [];
  m.published(
    batch(["F~~~~done", { v: 1, id: 'a"b' }], ["F~~~~done", { v: 1, id: "plain" }], ["F~~~~done", {
      v: 1,
      id: "é-ü",
    }]),
    (id) => ended.push(id),
  );
  m.published(batch(["G~~~~done", { v: 1, t: { id: "victim" }, id: "mine" }]), (id) => ended.push(id));
  m.published(batch(["G~~~~done", { v: 1, id: "other" }]), (id) => ended.push(id));
  assert.deepEqual(ended, ['a"b', "plain", "é-ü", "mine", "other"]);
  const s = m.snapshot();
  assert.equal(s.flows.F.count, 3, "all timed");
  assert.deepEqual(s.flows.F.outcomes, { done: 3 });
  assert.deepEqual(s.flows.G.outcomes, { done: 2 });
  assert.equal(s.flows.G.count, 2);
});

Deno.test("request metrics: onFinal gets the id of each final publication (the connection cap's release), not of steps", () => {
  const m = new RequestMetrics(() => 0);
  const ended: string[] = [];
  m.published(
    batch(
      ["F~~~~done", { v: 1, id: "a" }],
      ["F~T~F~PUBLISH~x", { v: 1, id: "b", pos: 1 }],
      ["F~~~~error", { v: 1, id: "c", error: { code: "timeout", message: "x" } }],
      ["~~~~ping-metrics", { v: 1, id: "d", k: "ping" }],
    ),
    (id) => ended.push(id),
  );
  assert.deepEqual(ended, ["a", "c"]);
});

Deno.test("request metrics: finals the publisher names (known) are counted and timed by those names without being read; the other records of the batch are read", () => {
  let now = 0;
  const m = new RequestMetrics(() => now);
  for (const id of ["a", "b", "c"]) m.accepted(id);
  now = 2;
  const ended: [string, number][] = [];
  // Records 0 and 2 are named by the publisher; their bytes say otherwise, and are not read.
  m.published(
    batch(
      ["X~~~~done", { v: 1, id: "other" }],
      ["G~~~~error", { v: 1, id: "b", error: { code: "timeout", message: "x" } }],
      ["F~T~F~PUBLISH~x", { v: 1, id: "c", pos: 1 }],
      ["G~~~~done", { v: 1, id: "d" }],
    ),
    (id, _view, i) => ended.push([id, i]),
    { count: 2, at: [0, 2, 3], ids: ["a", "c", "d"], flows: ["F", "F", "F"] }, // past count: not this batch's
  );
  assert.deepEqual(ended, [["a", 0], ["b", 1], ["c", 2], ["d", 3]]);
  const s = m.snapshot();
  assert.deepEqual(Object.keys(s.flows).sort(), ["F", "G"]);
  assert.deepEqual(s.flows.F.outcomes, { done: 2 });
  assert.equal(s.flows.F.count, 2, "a and c timed from their acceptance");
  assert.ok(Math.abs(s.flows.F.sum - 0.004) < 1e-9);
  assert.deepEqual(s.flows.G.outcomes, { timeout: 1, done: 1 });
  assert.equal(s.flows.G.count, 1, "b timed; d was not accepted here");
});

Deno.test("request metrics: a kept final published again for a copy (replay) is not counted again, nor handed on", () => {
  const m = new RequestMetrics(() => 0);
  const header = (h: unknown) => new TextDecoder().decode(markReplay(enc(JSON.stringify(h))));
  const seen: string[] = [];
  m.published(batch(["F~~~~done", { v: 1, id: "a" }]), (id) => seen.push(id));
  m.published(
    batch(
      ["F~~~~done", JSON.parse(header({ v: 1, id: "a" }))],
      ["F~~~~error", JSON.parse(header({ v: 1, id: "b", error: { code: "timeout", message: "x" } }))],
    ),
    (id) => seen.push(id),
  );
  assert.deepEqual(m.snapshot().flows.F.outcomes, { done: 1 });
  assert.deepEqual(seen, ["a"]);
});

Deno.test("request metrics: a refusal (an answer to a message that started no request) is not counted, timed nor handed on: the request running under its id is still timed by its own final", () => {
  let now = 0;
  const m = new RequestMetrics(() => now);
  const seen: string[] = [];
  m.accepted("r");
  const b = new BatchWriter();
  const error = { v: 1, id: "r", error: { code: "no_step", message: "x" } };
  b.add(0, REFUSAL_KIND, enc("F~~~~error"), enc(JSON.stringify(error)), enc("{}"));
  m.published(b.take().slice(), (id) => seen.push(id));
  assert.equal(seen.length, 0);
  assert.equal(m.snapshot().flows.F, undefined);
  now = 2;
  m.published(batch(["F~~~~done", { v: 1, id: "r" }]), (id) => seen.push(id));
  assert.deepEqual(seen, ["r"]);
  assert.deepEqual(m.snapshot().flows.F.outcomes, { done: 1 });
  assert.equal(m.snapshot().flows.F.count, 1, "timed by its own final");
});

Deno.test("request metrics: an id read from a final's bytes is always the one JSON.parse reads", () => {
  const id = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 40 }),
    // A leading U+FEFF, which a UTF-8 decoder given the id's bytes alone drops as a byte-order mark.
    fc.string({ maxLength: 20 }).map((s) => "\uFEFF" + s),
  );
  const tail = fc.constantFrom(
    "}",
    ',"n":3}',
    ',"n":}',
    ',"n":3,"id":"x"}',
    ',"id":"x"}',
    ',"x":{"id":"y"}}',
    "} ",
    ',"n":-1}',
  );
  const head = fc.constantFrom('{"v":1,"id":"', '{"v":1, "id":"', '{"id":"');
  let read = 0;
  fc.assert(
    fc.property(head, id, tail, (h, raw, t) => {
      const header = enc(h + raw + '"' + t);
      const got = plainId(header);
      if (got === undefined) return;
      read++;
      assert.equal(got, JSON.parse(new TextDecoder().decode(header)).id);
    }),
    { numRuns: 20_000, seed: 23 },
  );
  assert.ok(read > 1_000, `read ${read}`);
  assert.equal(plainId(enc('{"v":1,"id":"\uFEFFvictim"}')), undefined, "left to JSON.parse");
});
