// The shared-memory ring the sandboxes' steps and results travel through (src/roles/ring.ts): in
// one thread, its bookkeeping (order, tags, wrapping round, refusing what does not fit, closing);
// across two threads, a writer and a reader at full speed lose, reorder and corrupt nothing.
import assert from "node:assert/strict";
import { newRing, RingReader, RingWriter } from "../src/roles/ring.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

const RING_URL = new URL("../src/roles/ring.ts", import.meta.url).href;

/** Message `i` of a test stream: its length varies from 0 to `max`, its bytes depend on `i`. */
function message(i: number, max: number): Uint8Array {
  const n = (i * 7919) % (max + 1);
  const b = new Uint8Array(n);
  for (let k = 0; k < n; k++) b[k] = (i + k * 31) & 0xff;
  return b;
}

Deno.test("ring: messages come out in order with their tags, across many wraps of the buffer", () => {
  const sab = newRing(1000);
  const w = new RingWriter(sab), r = new RingReader(sab);
  assert.equal(w.capacity, 1024, "rounded up to a power of two");
  let written = 0, read = 0;
  while (read < 5000) {
    while (written < 5000 && w.write(message(written, 300), written * 3)) written++;
    const m = r.read();
    assert.ok(m, "something to read once writes are refused");
    assert.equal(m.tag, read * 3);
    assert.deepEqual(m.bytes, message(read, 300), `message ${read}`);
    read++;
  }
  assert.equal(r.read(), undefined);
});

Deno.test("ring: a message that does not fit is refused and nothing is written; it fits once read", () => {
  const sab = newRing(64);
  const w = new RingWriter(sab), r = new RingReader(sab);
  assert.equal(w.write(new Uint8Array(57)), false, "8 bytes of header + 57 > 64");
  assert.equal(r.read(), undefined, "nothing written");
  assert.equal(w.write(new Uint8Array(24).fill(1)), true);
  assert.equal(w.write(new Uint8Array(24).fill(2)), true);
  assert.equal(w.write(new Uint8Array(1)), false, "full");
  assert.deepEqual(r.read()?.bytes, new Uint8Array(24).fill(1));
  assert.equal(w.write(new Uint8Array(24).fill(3)), true, "room again, wrapping round");
  assert.deepEqual(r.read()?.bytes, new Uint8Array(24).fill(2));
  assert.deepEqual(r.read()?.bytes, new Uint8Array(24).fill(3));
  assert.equal(r.read(), undefined);
});

Deno.test("ring: wait resolves at once with a message waiting; close ends serve and refuses writes", async () => {
  const sab = newRing(256);
  const w = new RingWriter(sab), r = new RingReader(sab);
  w.write(new Uint8Array([9]), 1);
  await r.wait(); // at once: a message is there
  const got: number[] = [];
  const served = r.serve((m) => {
    got.push(m.tag);
    if (m.tag === 2) w.close();
  });
  await new Promise((res) => setTimeout(res, 20));
  // A pending wait does not keep Deno's event loop alive (ring.ts): a timer does, meanwhile.
  const alive = setInterval(() => {}, 1000);
  w.write(new Uint8Array([8]), 2); // wakes the sleeping reader
  const woke = await withTimeout(served, 5_000);
  clearInterval(alive);
  assert.notEqual(woke, TIMED_OUT, "the write woke the reader");
  assert.deepEqual(got, [1, 2]);
  assert.equal(w.write(new Uint8Array([7]), 3), false, "closed");
});

Deno.test("ring: a Web Worker writing 200,000 messages of 0-2,000 bytes as fast as it can; the reader gets every one, in order, intact", async () => {
  const total = 200_000;
  const sab = newRing(64 * 1024);
  const code = `
    import { RingWriter } from ${JSON.stringify(RING_URL)};
    ${message.toString()}
    self.onmessage = async (e) => {
      const w = new RingWriter(e.data.sab);
      for (let i = 0; i < e.data.total; i++) {
        const m = message(i, 2000);
        // Full: let the reader catch up (it wakes on each write).
        while (!w.write(m, i)) await new Promise((r) => setTimeout(r, 0));
      }
      self.postMessage("done");
    };`;
  const worker = new Worker(`data:application/javascript,${encodeURIComponent(code)}`, { type: "module" });
  try {
    const r = new RingReader(sab);
    let next = 0;
    const served = r.serve((m) => {
      assert.equal(m.tag, next, "in order");
      assert.deepEqual(m.bytes, message(next, 2000), `message ${next} intact`);
      if (++next === total) r.close();
    });
    worker.postMessage({ sab, total });
    // A wake-up lost between the two threads leaves the reader asleep: bounded, not a hang.
    assert.notEqual(await withTimeout(served, 60_000), TIMED_OUT, `stuck after ${next} messages`);
    assert.equal(next, total);
  } finally {
    worker.terminate();
  }
});

Deno.test("ring: a reader that also waits on its own thread (waitSync, drain) beside serve gets every message of a Web Worker's once, in order; serve still wakes for writes after a waitSync that found none", async () => {
  const rounds = 40, chunk = 500;
  const sab = newRing(16 * 1024);
  // The writer writes a chunk each time it is asked to.
  const code = `
    import { RingWriter } from ${JSON.stringify(RING_URL)};
    ${message.toString()}
    let w, i = 0;
    self.onmessage = async (e) => {
      w ??= new RingWriter(e.data.sab);
      for (const end = i + e.data.n; i < end; i++) {
        while (!w.write(message(i, 300), i)) await new Promise((r) => setTimeout(r, 0));
      }
    };`;
  const worker = new Worker(`data:application/javascript,${encodeURIComponent(code)}`, { type: "module" });
  try {
    const r = new RingReader(sab);
    let next = 0, bySync = 0, byServe = 0, syncing = false;
    let target = 0, reached = Promise.withResolvers<void>();
    const take = (m: { tag: number; bytes: Uint8Array }) => {
      assert.equal(m.tag, next, "in order");
      assert.deepEqual(m.bytes, message(next, 300), `message ${next} intact`);
      syncing ? bySync++ : byServe++;
      if (++next === target) reached.resolve();
    };
    const served = r.serve(take);
    /** Asks the writer for a chunk and waits until serve has handed every message of it to `take`. */
    const chunkToServe = async () => {
      target = next + chunk;
      reached = Promise.withResolvers<void>();
      worker.postMessage({ sab, n: chunk });
      await withTimeout(reached.promise, 5000);
      assert.equal(next, target, `stuck after ${next} messages`);
    };
    for (let k = 0; k < rounds; k++) {
      // A chunk left to serve; then, while serve sleeps, a wait on this thread that finds
      // nothing; then another chunk for serve: its pending wait must still be woken by the writes.
      await chunkToServe();
      assert.equal(r.waitSync(1), false);
      await chunkToServe();
      // A chunk taken by waiting on this thread (its waits are the thread's own: no event loop).
      worker.postMessage({ sab, n: chunk });
      syncing = true;
      const deadline = performance.now() + 5000;
      for (const end = next + chunk; next < end && performance.now() < deadline;) {
        if (r.waitSync(2)) r.drain(take);
      }
      syncing = false;
      assert.equal(next, (k + 1) * 3 * chunk, `stuck after ${next} messages`);
    }
    r.close();
    assert.notEqual(await withTimeout(served, 5000), TIMED_OUT);
    assert.equal(bySync, rounds * chunk);
    assert.equal(byServe, 2 * rounds * chunk);
  } finally {
    worker.terminate();
  }
});

Deno.test("ring: waitSync returns at once with a message waiting or the ring closed, else after its time with none", () => {
  const sab = newRing(1024);
  const w = new RingWriter(sab), r = new RingReader(sab);
  const t0 = performance.now();
  assert.equal(r.waitSync(20), false);
  assert.ok(performance.now() - t0 >= 15, "it waited");
  w.write(new Uint8Array([1]), 1);
  assert.equal(r.waitSync(10_000), true);
  assert.equal(r.drain(() => {}), 1);
  r.close();
  assert.equal(r.waitSync(10_000), true);
});

Deno.test("ring: an exception thrown while serving one message is reported as uncaught, and the next is served", async () => {
  const sab = newRing(256);
  const w = new RingWriter(sab), r = new RingReader(sab);
  const reported: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    reported.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    w.write(new Uint8Array([1]), 1);
    w.write(new Uint8Array([2]), 2);
    const got: number[] = [];
    const served = r.serve((m) => {
      got.push(m.tag);
      if (m.tag === 1) throw new Error("bad message");
      r.close();
    });
    await served;
    assert.deepEqual(got, [1, 2]);
    assert.equal((reported[0] as Error).message, "bad message");
  } finally {
    globalThis.removeEventListener("error", onError);
  }
});

Deno.test("ring: a reader refuses a length the writer's side could not have written (another thread's code may write anything there), and serve hands it to onCorrupt", async () => {
  // The ring's layout: control words (head at 0, tail at 1), then the data; a message starts
  // with its length and tag (two u32).
  for (const [head, length] of [[16, 4_000_000_000], [16, 64], [1 << 30, 8]]) {
    const sab = newRing(1024);
    const ctl = new Int32Array(sab, 0, 8);
    const data = new DataView(sab, 32);
    ctl[0] = head;
    data.setUint32(0, length, true);
    const r = new RingReader(sab);
    assert.throws(() => r.read(), RangeError, `head ${head}, length ${length}`);
    let corrupt: RangeError | undefined;
    await r.serve(() => assert.fail("no message"), (e) => corrupt = e);
    assert.match(String(corrupt), /a corrupt ring/);
  }
  // A well-formed message still reads.
  const sab = newRing(1024);
  new RingWriter(sab).write(new Uint8Array([1, 2, 3]), 9);
  assert.deepEqual(new RingReader(sab).read(), { tag: 9, bytes: new Uint8Array([1, 2, 3]) });
});
