/**
 * The processes of the structure's floor (`floor.ts`): relays in the places of the Subject, a
 * worker and the Integration Manager that do what the default deployment's structure needs and
 * nothing of the framework's own work.
 *
 *   subject IN WORK IM KEEP  PULL bound at IN: requests (kind 0) go to a PUSH bound at WORK,
 *                            results (kind 1) to a PUSH connected to IM, or with IM written
 *                            "pub:@ENDPOINT" to a PUB bound there (the IM in the Subject's
 *                            process); acknowledgements (kind 2) are read and dropped. KEEP "1":
 *                            a copy of each request is kept in a Map until its result comes,
 *                            the least a Subject that redelivers must do
 *   worker WORK IN MODE      PULL connected to WORK, PUSH connected to IN; MODE "relay" forwards,
 *                            "json" parses each request's values, calls three handlers that
 *                            return them and stringifies the result on this thread, "thread"
 *                            does that in a Web Worker (`floor_sandbox.ts`): the requests of a
 *                            turn go in as one batch through a ring in shared memory, the results
 *                            come back the same way, and this thread waits for them in-thread up
 *                            to 1–2 ms as a worker waits for its sandbox; "thread-sync" the same
 *                            with the Web Worker blocked in `Atomics.wait` between batches
 *   im IM OUT ACK IN         PULL bound at IM, each message published on a PUB bound at OUT;
 *                            ACK "1": one acknowledgement (kind 2) to IN per burst read
 *
 * A message is one frame: the generator's float64 index, a kind byte, the values' JSON. Each
 * process runs until its stdin closes.
 *
 * @module
 */

import { Context } from "../../src/zmq/socket.ts";
import type { SocketTypeName } from "../../src/zmq/ffi.ts";
import { delay } from "../../src/_async.ts";
import { DONTWAIT, i64, libzmq, POLLIN } from "../../src/zmq/ffi.ts";
import { newRing, RingReader, RingWriter } from "../../src/roles/ring.ts";
import { ACK, FLOOR_PREFIX, type FloorThreadSetup, REQUEST, RESULT, runSteps } from "./floor_steps.ts";

const z = libzmq().symbols;
const ctx = new Context();
const hwm = { sendHighWaterMark: 1_000_000, receiveHighWaterMark: 1_000_000, linger: 0 };
const buf = new Uint8Array(64 * 1024);
const size = i64(buf.length);
let open = true;

function socket(type: SocketTypeName, ep: string) {
  const s = ctx.socket(type, hwm);
  if (ep.startsWith("@")) s.bind(ep.slice(1));
  else s.connect(ep);
  return s;
}

/** One `zmq_pollitem_t` for POLLIN on `s`. */
function pollItem(s: { pointer: Deno.PointerValue }): Uint8Array {
  const item = new Uint8Array(16);
  const view = new DataView(item.buffer);
  view.setBigUint64(0, BigInt(Deno.UnsafePointer.value(s.pointer)), true);
  view.setInt16(12, POLLIN, true);
  return item;
}

/** Waits in-thread up to 100 ms for input; lets the event loop run (to see stdin close) when none came. */
async function ready(item: Uint8Array): Promise<boolean> {
  if (z.zmq_poll(item, 1, 100n) > 0) return true;
  await delay(0);
  return false;
}

async function subject(input: string, work: string, im: string, keep: boolean): Promise<void> {
  const out = socket("PUSH", work), pull = socket("PULL", input);
  const fin = im.startsWith("pub:") ? socket("PUB", im.slice(4)) : socket("PUSH", im);
  const item = pollItem(pull);
  const kept = new Map<number, Uint8Array>();
  const index = new DataView(buf.buffer);
  const ip = pull.pointer, op = out.pointer, fp = fin.pointer;
  while (open) {
    if (!await ready(item)) continue;
    for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
      if (buf[8] === REQUEST) {
        if (keep) kept.set(index.getFloat64(0, true), buf.slice(0, n));
        z.zmq_send(op, buf, i64(n), 0);
      } else if (buf[8] === RESULT) {
        if (keep) kept.delete(index.getFloat64(0, true));
        z.zmq_send(fp, buf, i64(n), 0);
      }
    }
  }
}

async function integrationManager(im: string, out: string, ack: boolean, input: string): Promise<void> {
  const pub = socket("PUB", out), pull = socket("PULL", im);
  const acks = ack ? socket("PUSH", input) : undefined;
  const item = pollItem(pull);
  const ackMessage = new Uint8Array(FLOOR_PREFIX);
  ackMessage[8] = ACK;
  const ip = pull.pointer, pp = pub.pointer;
  while (open) {
    if (!await ready(item)) continue;
    let read = 0;
    for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
      z.zmq_send(pp, buf, i64(n), 0);
      read++;
    }
    if (acks && read) z.zmq_send(acks.pointer, ackMessage, i64(FLOOR_PREFIX), 0);
  }
}

async function worker(work: string, input: string, mode: string): Promise<void> {
  const push = socket("PUSH", input), pull = socket("PULL", work);
  const item = pollItem(pull);
  const ip = pull.pointer, pp = push.pointer;
  if (mode === "relay" || mode === "json") {
    const out = new Uint8Array(64 * 1024);
    while (open) {
      if (!await ready(item)) continue;
      for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
        if (mode === "relay") {
          buf[8] = RESULT;
          z.zmq_send(pp, buf, i64(n), 0);
          continue;
        }
        out.set(buf.subarray(0, 8));
        out[8] = RESULT;
        const written = runSteps(buf.subarray(FLOOR_PREFIX, n), out.subarray(FLOOR_PREFIX));
        z.zmq_send(pp, out, i64(FLOOR_PREFIX + written), 0);
      }
    }
    return;
  }
  const rings = { steps: newRing(4 << 20), results: newRing(4 << 20) };
  const toThread = new RingWriter(rings.steps), fromThread = new RingReader(rings.results);
  const thread = new Worker(new URL("./floor_sandbox.ts", import.meta.url), { type: "module" });
  thread.postMessage({ ...rings, sync: mode === "thread-sync" } satisfies FloorThreadSetup);
  // A batch: each message as its length (u32) and its bytes.
  const batch = new Uint8Array(1 << 20);
  const lengths = new DataView(batch.buffer);
  let pending = 0;
  while (open) {
    if (pending === 0 && !await ready(item)) continue;
    let at = 0, count = 0;
    while (batch.length - at > 70_000) {
      const n = z.zmq_recv(ip, batch.subarray(at + 4), i64(batch.length - at - 4), DONTWAIT);
      if (n < 0) break;
      lengths.setUint32(at, n, true);
      at += 4 + n;
      count++;
    }
    if (count) {
      while (!toThread.write(batch.subarray(0, at), count)) await delay(0);
      pending += count;
    }
    if (pending === 0 || !fromThread.waitSync(count ? 1 : 2)) continue;
    for (let m = fromThread.read(); m; m = fromThread.read()) {
      const b = m.bytes, v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      for (let p = 0; p < b.length;) {
        const n = v.getUint32(p, true);
        z.zmq_send(pp, b.subarray(p + 4, p + 4 + n), i64(n), 0);
        p += 4 + n;
      }
      pending -= m.tag;
    }
  }
  toThread.close(); // ends the Web Worker's wait, `Atomics.wait` too, which `terminate` does not
  thread.terminate();
}

if (import.meta.main) {
  (async () => {
    for await (const _ of Deno.stdin.readable) { /* until the driver closes stdin */ }
    open = false;
  })();
  const [role, ...a] = Deno.args;
  if (role === "subject") await subject(a[0], a[1], a[2], a[3] === "1");
  else if (role === "worker") await worker(a[0], a[1], a[2]);
  else if (role === "im") await integrationManager(a[0], a[1], a[2] === "1", a[3]);
  else throw new Error(`floor_peer: no role "${role}"`);
  await ctx.terminate();
}
