/**
 * The processes of the structure's floor (`floor.ts`): relays in the places of the Subject, a
 * worker and the Integration Manager that do what the default deployment's structure needs and
 * nothing of the framework's own work.
 *
 *   subject IN WORK IM KEEP  PULL bound at IN: requests (kind 0) go to worker 0 or 1 through a PUSH
 *                            bound at WORK0 or WORK1 (the endpoint WORK with 0 or 1 after it),
 *                            packed as the Subject packs a light load (`worker_pack_window`), but
 *                            by count alone: to worker 0 while it holds fewer than 64 requests,
 *                            else to the one that holds fewer (ties to worker 0); results (kind 1) to a PUSH connected to IM, or with IM
 *                            written "pub:@ENDPOINT" to a PUB bound there (the IM in the Subject's
 *                            process); acknowledgements (kind 2) are counted. KEEP "1": a copy of
 *                            each request is kept (in a slab, found through a `Map`) until its
 *                            result comes, the least a Subject that redelivers must do. A
 *                            status request (kind 3, for the tests) is answered on the results'
 *                            way with values `{"passed": N}`, the requests passed on so far. When
 *                            stdin closes it prints `{"acks": N, "kept": N, "most": N}`
 *                            (acknowledgements counted, copies still kept, the most kept at once)
 *   worker N WORK IN MODE    worker N (0 or 1): PULL connected to WORK with N after it, PUSH
 *                            connected to IN; MODE "relay" forwards, "json" parses each request's
 *                            values, calls three handlers that return them and stringifies the
 *                            result on this thread, "thread" does that in a Web Worker
 *                            (`floor_sandbox.ts`): the requests of a turn go in as one batch
 *                            through a ring in shared memory, the results come back the same way,
 *                            and this thread waits for them in-thread (they come in microseconds
 *                            with these handlers; the 1–2 ms bound is never reached); "thread-sync"
 *                            the same with the Web Worker blocked in `Atomics.wait` between batches
 *   im IM OUT ACK IN         PULL bound at IM, each message published on a PUB bound at OUT;
 *                            ACK "1": one acknowledgement (kind 2) to IN per burst read, as the IM
 *                            acknowledges once per pass
 *
 * A message is one frame: the generator's float64 index, a kind byte, the worker's number, the
 * values' JSON (`floor_steps.ts`). Each process runs until its stdin closes.
 *
 * @module
 */

import { Context } from "../../src/zmq/socket.ts";
import type { SocketTypeName } from "../../src/zmq/ffi.ts";
import { delay } from "../../src/_async.ts";
import { DONTWAIT, i64, libzmq } from "../../src/zmq/ffi.ts";
import { newRing, RingReader, RingWriter } from "../../src/roles/ring.ts";
import { pollIn } from "../bench_peer.ts";
import {
  ACK,
  FLOOR_PREFIX,
  type FloorThreadSetup,
  REQUEST,
  RESULT,
  runSteps,
  STATUS,
} from "./floor_steps.ts";

/** Requests worker 0 may hold before others get them: the Subject's `PACK_MAX_STEPS`. */
const PACK_MAX = 64;

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

/** Waits in-thread up to 100 ms for input; lets the event loop run (to see stdin close) when none came. */
async function ready(item: Uint8Array): Promise<boolean> {
  if (z.zmq_poll(item, 1, 100n) > 0) return true;
  await delay(0);
  return false;
}

async function subject(input: string, work: string, im: string, keep: boolean): Promise<void> {
  const workers = [socket("PUSH", `${work}0`).pointer, socket("PUSH", `${work}1`).pointer];
  const pull = socket("PULL", input);
  const fin = im.startsWith("pub:") ? socket("PUB", im.slice(4)) : socket("PUSH", im);
  const item = pollIn(pull);
  // Each request's copy in a slab, found by its index: no object per request but the Map's entry.
  // 8 MiB holds far more than the 2,000 outstanding at the peak, so no live copy is written over.
  const kept = new Map<number, number>();
  const slab = new Uint8Array(8 << 20);
  let slabAt = 0;
  const held = [0, 0];
  let acks = 0, most = 0, passed = 0;
  const index = new DataView(buf.buffer);
  const status = new Uint8Array(FLOOR_PREFIX + 32);
  const ip = pull.pointer, fp = fin.pointer;
  while (open) {
    if (!await ready(item)) continue;
    for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
      n = Math.min(n, buf.length); // a longer message was cut to the buffer
      const length = i64(n);
      if (buf[8] === REQUEST) {
        if (keep) {
          if (slabAt + n > slab.length) slabAt = 0;
          slab.set(buf.subarray(0, n), slabAt);
          kept.set(index.getFloat64(0, true), slabAt);
          slabAt += n;
          if (kept.size > most) most = kept.size;
        }
        const w = held[0] < PACK_MAX || held[0] <= held[1] ? 0 : 1;
        held[w]++;
        passed++;
        z.zmq_send(workers[w], buf, length, 0);
      } else if (buf[8] === RESULT) {
        if (keep) kept.delete(index.getFloat64(0, true));
        held[buf[9]]--;
        z.zmq_send(fp, buf, length, 0);
      } else if (buf[8] === ACK) acks++;
      else if (buf[8] === STATUS) {
        status.set(buf.subarray(0, FLOOR_PREFIX));
        const { written } = new TextEncoder().encodeInto(
          `{"passed":${passed}}`,
          status.subarray(FLOOR_PREFIX),
        );
        z.zmq_send(fp, status, i64(FLOOR_PREFIX + written), 0);
      }
    }
  }
  console.log(JSON.stringify({ acks, kept: kept.size, most }));
}

async function integrationManager(im: string, out: string, ack: boolean, input: string): Promise<void> {
  const pub = socket("PUB", out), pull = socket("PULL", im);
  const acks = ack ? socket("PUSH", input) : undefined;
  const item = pollIn(pull);
  const ackMessage = new Uint8Array(FLOOR_PREFIX);
  ackMessage[8] = ACK;
  const ip = pull.pointer, pp = pub.pointer;
  while (open) {
    if (!await ready(item)) continue;
    let read = 0;
    for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
      z.zmq_send(pp, buf, i64(Math.min(n, buf.length)), 0);
      read++;
    }
    if (acks && read) z.zmq_send(acks.pointer, ackMessage, i64(FLOOR_PREFIX), 0);
  }
}

async function worker(number: number, work: string, input: string, mode: string): Promise<void> {
  const push = socket("PUSH", input), pull = socket("PULL", `${work}${number}`);
  const item = pollIn(pull);
  const ip = pull.pointer, pp = push.pointer;
  if (mode === "relay" || mode === "json") {
    const out = new Uint8Array(64 * 1024);
    while (open) {
      if (!await ready(item)) continue;
      for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
        n = Math.min(n, buf.length);
        if (mode === "relay") {
          buf[8] = RESULT;
          buf[9] = number;
          z.zmq_send(pp, buf, i64(n), 0);
          continue;
        }
        out.set(buf.subarray(0, 8));
        out[8] = RESULT;
        out[9] = number;
        const written = runSteps(buf.subarray(FLOOR_PREFIX, n), out.subarray(FLOOR_PREFIX));
        z.zmq_send(pp, out, i64(FLOOR_PREFIX + written), 0);
      }
    }
    return;
  }
  const rings = { steps: newRing(4 << 20), results: newRing(4 << 20) };
  const toThread = new RingWriter(rings.steps), fromThread = new RingReader(rings.results);
  const thread = new Worker(new URL("./floor_sandbox.ts", import.meta.url), { type: "module" });
  thread.postMessage({ ...rings, worker: number, sync: mode === "thread-sync" } satisfies FloorThreadSetup);
  // A batch: each message as its length (u32) and its bytes; at most about 1 MiB.
  const batch = new Uint8Array(1 << 20);
  const lengths = new DataView(batch.buffer);
  let pending = 0;
  const forward = () => {
    for (let m = fromThread.read(); m; m = fromThread.read()) {
      const b = m.bytes, v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      for (let p = 0; p < b.length;) {
        const n = v.getUint32(p, true);
        z.zmq_send(pp, b.subarray(p + 4, p + 4 + n), i64(n), 0);
        p += 4 + n;
      }
      pending -= m.tag;
    }
  };
  while (open) {
    if (pending === 0 && !await ready(item)) continue;
    let at = 0, count = 0;
    while (batch.length - at > buf.length + 4) {
      const n = z.zmq_recv(ip, batch.subarray(at + 4), i64(batch.length - at - 4), DONTWAIT);
      if (n < 0) break;
      lengths.setUint32(at, Math.min(n, batch.length - at - 4), true);
      at += 4 + Math.min(n, batch.length - at - 4);
      count++;
    }
    if (count) {
      while (!toThread.write(batch.subarray(0, at), count)) {
        forward(); // the Web Worker may be waiting for room for its results
        await delay(0);
      }
      pending += count;
    }
    if (pending > 0 && fromThread.waitSync(count ? 1 : 2)) forward();
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
  else if (role === "worker") await worker(Number(a[0]), a[1], a[2], a[3]);
  else if (role === "im") await integrationManager(a[0], a[1], a[2] === "1", a[3]);
  else throw new Error(`floor_peer: no role "${role}"`);
  await ctx.terminate();
}
