import assert from "node:assert/strict";
import { benchId } from "../src/bench.ts";
import { encodeHeader } from "../src/protocol.ts";

Deno.test("bench: the generator reads the epoch and index of its request ids from header bytes", () => {
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b3_42", n: 3 })), [3, 42]);
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b12_0" })), [12, 0]);
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b7_123456789", pos: 2, n: 1 })), [7, 123456789]);
  for (const id of ["ping", "b3", "b_4", "b3_", "b3_4x", "bx_4", "a3_4"]) {
    assert.equal(benchId(encodeHeader({ v: 1, id })), undefined, id);
  }
  assert.equal(benchId(new Uint8Array(0)), undefined);
});
