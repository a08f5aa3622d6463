import assert from "node:assert/strict";
import {
  CONTROL,
  CONTROL_FRAMES,
  decodeList,
  decodeStuck,
  decodeWorkerStatus,
  isControl,
  stuckReport,
  workerStatus,
} from "../src/wire/control.ts";

const enc = new TextEncoder();

Deno.test("control messages: READY/HB round-trip; a missing or bad payload is credit 0, nothing held", () => {
  const [type, body] = workerStatus("HB", { credit: 5, holding: [1, 2], last: 2 });
  assert.ok(isControl(type, "HB"));
  assert.deepEqual(decodeWorkerStatus(body), { credit: 5, holding: [1, 2], last: 2 });
  assert.deepEqual(decodeWorkerStatus(workerStatus("READY", { credit: 3, pid: 9 })[1]), { credit: 3 });
  assert.deepEqual(decodeWorkerStatus(undefined), { credit: 0 });
  assert.deepEqual(decodeWorkerStatus(enc.encode("not json")), { credit: 0 });
  assert.deepEqual(decodeWorkerStatus(enc.encode('{"credit":"x","holding":[1]}')), { credit: 0 });
});

Deno.test("control messages: STUCK, lists and type names", () => {
  assert.deepEqual(decodeStuck(stuckReport({ worker: "w", d: 7, ms: 900 })[1]), {
    worker: "w",
    d: 7,
    ms: 900,
  });
  assert.equal(decodeStuck(enc.encode('{"worker":1,"d":2}')), undefined);
  assert.deepEqual(decodeList(enc.encode('[{"id":"a"}]')), [{ id: "a" }]);
  assert.deepEqual(decodeList(enc.encode('{"id":"a"}')), []);
  for (const k of Object.keys(CONTROL) as (keyof typeof CONTROL)[]) {
    assert.ok(isControl(CONTROL_FRAMES[k], k));
    assert.equal(new TextDecoder().decode(CONTROL_FRAMES[k]), k);
  }
  assert.equal(isControl(enc.encode("ACKS"), "ACK"), false);
});
