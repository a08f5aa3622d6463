/**
 * The structure's floor's sandbox thread (`floor_peer.ts worker … thread`): reads a batch of
 * requests from its ring, runs each one's steps (`runSteps`: values parsed, three handlers,
 * stringified, `floor_steps.ts`) and writes the batch's results back through the other ring. It waits as a handler
 * sandbox does (`Atomics.waitAsync`, its event loop free for async handlers), or with `sync` in
 * `Atomics.wait`, the cheapest wake-up a thread has and no event loop.
 *
 * @module
 */

import { type RingMessage, RingReader, RingWriter } from "../../src/roles/ring.ts";
import { FLOOR_PREFIX, type FloorThreadSetup, RESULT, runSteps } from "./floor_steps.ts";

const scope = self as unknown as { onmessage: ((e: MessageEvent<FloorThreadSetup>) => void) | null };
scope.onmessage = (e) => {
  const steps = new RingReader(e.data.steps), results = new RingWriter(e.data.results);
  // A batch is at most 1 MiB, and the floor's results are as long as their requests (compact JSON).
  const out = new Uint8Array(1 << 20);
  const lengths = new DataView(out.buffer);
  const onBatch = (m: RingMessage) => {
    const b = m.bytes, v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let at = 0;
    for (let p = 0; p < b.length;) {
      const n = v.getUint32(p, true);
      out.set(b.subarray(p + 4, p + 12), at + 4);
      out[at + 12] = RESULT;
      out[at + 13] = e.data.worker;
      const written = runSteps(
        b.subarray(p + 4 + FLOOR_PREFIX, p + 4 + n),
        out.subarray(at + 4 + FLOOR_PREFIX),
      );
      lengths.setUint32(at, FLOOR_PREFIX + written, true);
      at += 4 + FLOOR_PREFIX + written;
      p += 4 + n;
    }
    // Full: the worker's thread empties it after each batch it writes (4 MiB rings, 1 MiB batches).
    while (!results.write(out.subarray(0, at), m.tag)) { /* spin */ }
  };
  if (e.data.sync) {
    while (!steps.closed) if (steps.waitSync(50)) steps.drain(onBatch);
    return;
  }
  void steps.serve(onBatch);
  setInterval(() => {}, 1 << 30); // a pending waitAsync does not keep the thread alive
};
