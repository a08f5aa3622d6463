import assert from "node:assert/strict";
import { BatchView, BatchWriter, isBatch, KIND_CODES, readBatch, sendBatch } from "../src/wire/batch.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const BIG = "v".repeat(5000);

/** A writer (starting small, so it must grow) holding a done record and one with a large frame. */
function twoRecords(secondTag: number, secondKind: number): BatchWriter {
  const w = new BatchWriter(64);
  w.add(
    1.7e15 + 3,
    KIND_CODES.done,
    enc.encode("F~~~~done"),
    enc.encode('{"v":1,"id":"a"}'),
    enc.encode("{}"),
  );
  w.add(secondTag, secondKind, new Uint8Array(0), enc.encode("h"), enc.encode(BIG));
  return w;
}

Deno.test("batch: records round-trip with their tags, kinds and frames; the writer grows and restarts", () => {
  const w = twoRecords(0, 0);
  const big = BIG;
  assert.equal(w.count, 2);
  const records = readBatch(w.take().slice())!;
  assert.deepEqual(records.map((r) => [r.tag, r.kind, ...r.frames.map((f) => dec.decode(f))]), [
    [1.7e15 + 3, KIND_CODES.done, "F~~~~done", '{"v":1,"id":"a"}', "{}"],
    [0, 0, "", "h", big],
  ]);
  assert.equal(w.count, 0);
  w.add(9, 0, enc.encode("a"), enc.encode("b"), enc.encode("c"));
  assert.deepEqual(readBatch(w.take())!.map((r) => r.tag), [9], "a new batch after take()");
});

Deno.test("batch: malformed frames are refused whole", () => {
  const w = new BatchWriter();
  w.add(1, 0, enc.encode("topic"), enc.encode("header"), enc.encode("values"));
  const good = w.take().slice();
  assert.ok(isBatch(good));
  assert.equal(readBatch(good.subarray(0, good.length - 1)), undefined, "a record running past the end");
  assert.equal(readBatch(good.subarray(0, 4)), undefined, "no record");
  assert.equal(readBatch(enc.encode("ZMB2....")), undefined, "another magic");
  assert.equal(
    readBatch(new Uint8Array([0x5a, 0x4d, 0x42, 0x31, 1, 2, 3])),
    undefined,
    "a truncated record head",
  );
  const lying = good.slice();
  new DataView(lying.buffer).setUint32(4 + 9, 1_000_000, true);
  assert.equal(readBatch(lying), undefined, "a length larger than the frame");
});

Deno.test("sendBatch: sent at once, or a copy waits that later batches do not overwrite", async () => {
  const sent: Uint8Array[][] = [];
  let room = true;
  // Like libzmq, sendNow copies the bytes at once; send keeps what it was given for later.
  const socket = {
    sendNow: (frames: readonly Uint8Array[]) => room && (sent.push(frames.map((f) => f.slice())), true),
    send: (frames: readonly Uint8Array[]) => (sent.push([...frames]), Promise.resolve()),
  };
  const w = new BatchWriter();
  const prefix = enc.encode("P");
  w.add(1, 0, enc.encode("a"), enc.encode("b"), enc.encode("c"));
  assert.equal(sendBatch(socket, [prefix], w), undefined, "taken at once");
  room = false;
  w.add(2, 0, enc.encode("d"), enc.encode("e"), enc.encode("f"));
  await sendBatch(socket, [prefix], w);
  w.add(3, 0, enc.encode("x"), enc.encode("y"), enc.encode("z")); // reuses the writer's buffer
  assert.equal(w.count, 1, "the writer started a new batch");
  assert.deepEqual(sent.map((m) => [dec.decode(m[0]), readBatch(m[1])!.map((r) => r.tag)]), [["P", [1]], [
    "P",
    [2],
  ]]);
});

Deno.test("BatchView: tags, kinds and frames in place; records forwarded byte for byte with new tags and kinds", () => {
  const big = BIG;
  const view = BatchView.of(twoRecords(12, KIND_CODES.pause).take().slice())!;
  assert.equal(view.count, 2);
  assert.deepEqual([view.tag(0), view.kind(0), view.tag(1), view.kind(1)], [
    1.7e15 + 3,
    KIND_CODES.done,
    12,
    KIND_CODES.pause,
  ]);
  assert.deepEqual(view.frames(1).map((f) => dec.decode(f)), ["", "h", big]);
  assert.equal(BatchView.of(enc.encode("ZMB1")), undefined, "no record");
  // Forwarded with new tags and kinds (0 on the IM hop); a small writer grows to take them.
  const out = new BatchWriter(64);
  out.add(5, 0, enc.encode("x"), enc.encode("y"), enc.encode("z"));
  out.addRecord(view, 1, 0, 0);
  out.addRecord(view, 0, 0, 0);
  assert.equal(out.count, 3);
  assert.deepEqual(
    readBatch(out.take())!.map((r) => [r.tag, r.kind, ...r.frames.map((f) => dec.decode(f))]),
    [
      [5, 0, "x", "y", "z"],
      [0, 0, "", "h", big],
      [0, 0, "F~~~~done", '{"v":1,"id":"a"}', "{}"],
    ],
  );
});
