/**
 * The other process of `bench`'s raw one-hop measurements, on the project's own binding.
 *
 *   push ENDPOINT N S PUSH N copies of a request-sized message, then wait for stdin to close;
 *                     S "1": one frame of the request's size, "3": the request's three frames
 *   sub ENDPOINT N    SUB: print "ready" at the first probe, then count N data messages and
 *                     print {"received", "ms"} (first to last)
 *   echo ENDPOINT W   DEALER: send "hello", then echo every message back until stdin closes;
 *                     W "in-thread": wait for messages in-thread, as the roles do
 *   relay IN OUT TYPE one stage of the bare pipeline: PULL single-frame messages from IN and
 *                     forward each as it comes to OUT (a TYPE socket: PUSH or PUB), until stdin
 *                     closes; an endpoint written "@ENDPOINT" is bound, else connected
 *   zmtp-echo PATH    ZMTP on Deno's sockets (src/zmtp), no libzmq: a DEALER connected to the
 *                     Unix socket PATH echoes every message back until the other side closes
 *   zmtp-push PATH N S the same, a PUSH: N copies of the request (S as for push), then waits for
 *                     the other side to close
 *   zmtp-relay IN OUT TYPE
 *                     relay's stage over ZMTP on Deno's sockets: IN and OUT are Unix socket
 *                     paths ("@PATH" listened on, any number of peers; else connected); messages
 *                     from any IN peer go to one OUT peer in turn (PUSH) or to every one (PUB)
 *
 * @module
 */

import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { Context } from "../src/zmq/socket.ts";
import { delay } from "../src/_async.ts";
import { DONTWAIT, i64, libzmq, POLLIN } from "../src/zmq/ffi.ts";
import { ZmtpConnection } from "../src/zmtp/connection.ts";

/** This module, to run as the other process: `deno run -A PEER_MODULE push …`. */
export const PEER_MODULE: string = import.meta.url;

/** The three frames of a request of the benchmark's size (about 150 bytes in all). */
export function benchFrames(flow = "Bench3"): Uint8Array[] {
  const enc = new TextEncoder();
  return [
    enc.encode(`${flow}~~~~`),
    enc.encode(JSON.stringify({ v: 1, id: "00000000-0000-0000-0000-000000000000" })),
    enc.encode(JSON.stringify({ payload: "x".repeat(60) })),
  ];
}

/** Bytes of a benchmark request, its three frames together. */
export const REQUEST_BYTES: number = benchFrames().reduce((n, f) => n + f.length, 0);

/** One `zmq_pollitem_t` (socket, fd, events, revents) asking `zmq_poll` for input on `socket`. */
export function pollIn(socket: { readonly pointer: Deno.PointerValue }): Uint8Array {
  const item = new Uint8Array(16);
  const view = new DataView(item.buffer);
  view.setBigUint64(0, BigInt(Deno.UnsafePointer.value(socket.pointer)), true);
  view.setInt16(12, POLLIN, true);
  return item;
}

/**
 * A stage of the bare pipeline: libzmq's own loop, with nothing of this project's above the
 * binding (no reactor, no frame copies, no routing). It waits in `zmq_poll` in-thread and
 * forwards what it finds with `zmq_recv`/`zmq_send` on one buffer, as a C relay would; when it
 * has waited 100 ms for nothing it lets the event loop run, to see stdin close.
 */
async function relay(input: string, output: string, type: "PUSH" | "PUB"): Promise<void> {
  const z = libzmq().symbols;
  const ctx = new Context();
  const hwm = { sendHighWaterMark: 1_000_000, receiveHighWaterMark: 1_000_000, linger: 0 };
  const pull = ctx.socket("PULL", hwm);
  const out = ctx.socket(type, hwm);
  for (const [s, ep] of [[out, output], [pull, input]] as const) {
    if (ep.startsWith("@")) s.bind(ep.slice(1));
    else s.connect(ep);
  }
  let open = true;
  (async () => {
    for await (const _ of Deno.stdin.readable) { /* until the bench closes stdin */ }
    open = false;
  })();
  const items = pollIn(pull);
  const buf = new Uint8Array(64 * 1024);
  const size = i64(buf.length);
  const ip = pull.pointer, op = out.pointer;
  while (open) {
    if (z.zmq_poll(items, 1, 100n) <= 0) {
      await delay(0);
      continue;
    }
    for (let n = z.zmq_recv(ip, buf, size, DONTWAIT); n >= 0; n = z.zmq_recv(ip, buf, size, DONTWAIT)) {
      z.zmq_send(op, buf, i64(Math.min(n, buf.length)), 0);
    }
  }
  await ctx.terminate();
}

/**
 * A stage of the bare pipeline over ZMTP on Deno's sockets (`src/zmtp`): what {@linkcode relay}
 * does, read and written on the event loop's thread instead of through libzmq. Its peers may be
 * libzmq sockets (the bare pipeline's generator is).
 */
async function zmtpRelay(input: string, output: string, type: "PUSH" | "PUB"): Promise<void> {
  const outs: ZmtpConnection[] = [];
  let next = 0;
  // A peer that has just gone is still listed until its listen ends: skipped, so that what it
  // can no longer take never closes the upstream connection that brought it.
  const forward = (frames: Uint8Array[]) => {
    if (type === "PUB") {
      for (const o of outs) if (!o.closed) o.send(frames);
      return;
    }
    for (let tries = 0; tries < outs.length; tries++) {
      const o = outs[next++ % outs.length];
      if (!o.closed) return o.send(frames);
    }
    // Nobody to send to yet: dropped, as the bare pipeline's probes expect.
  };
  const listeners: Deno.Listener[] = [];
  const side = (ep: string, socketType: "PULL" | "PUSH" | "PUB", onOpen: (z: ZmtpConnection) => void) => {
    const open = (c: Deno.Conn) => ZmtpConnection.open(c, { socketType }).then(onOpen, () => {});
    if (ep.startsWith("@")) {
      const l = Deno.listen({ transport: "unix", path: ep.slice(1) });
      listeners.push(l);
      (async () => {
        for await (const c of l) void open(c);
      })().catch(() => {});
    } else {
      (async () => {
        for (;;) {
          try {
            return void open(await Deno.connect({ transport: "unix", path: ep }));
          } catch {
            await delay(20); // not listening yet
          }
        }
      })();
    }
  };
  side(output, type, (z) => {
    outs.push(z);
    // Read to answer heartbeats; what a subscriber sends (its subscription) is not needed here.
    z.listen(() => {}).catch(() => {}).finally(() => {
      const i = outs.indexOf(z);
      if (i >= 0) outs.splice(i, 1);
    });
  });
  side(input, "PULL", (z) => void z.listen(forward).catch(() => {}));
  for await (const _ of Deno.stdin.readable) { /* until the bench closes stdin */ }
  for (const l of listeners) l.close();
}

if (import.meta.main) {
  const [mode, endpoint, count] = Deno.args;
  const n = Number(count);
  if (mode === "relay") {
    await relay(endpoint, Deno.args[2], Deno.args[3] === "PUB" ? "PUB" : "PUSH");
    Deno.exit(0);
  }
  if (mode === "zmtp-relay") {
    await zmtpRelay(endpoint, Deno.args[2], Deno.args[3] === "PUB" ? "PUB" : "PUSH");
    Deno.exit(0);
  }
  if (mode === "zmtp-echo" || mode === "zmtp-push") {
    const echo = mode === "zmtp-echo";
    const z = await ZmtpConnection.open(await Deno.connect({ transport: "unix", path: endpoint }), {
      socketType: echo ? "DEALER" : "PUSH",
    });
    if (!echo) {
      const frames = Deno.args[3] === "1" ? [new Uint8Array(REQUEST_BYTES).fill(120)] : benchFrames();
      for (let i = 0; i < n; i++) {
        z.send(frames);
        if (z.queuedBytes > 1 << 20) await z.flush(); // a high-water mark, as PUSH has
      }
    }
    await z.listen((frames) => echo && z.send(frames));
    Deno.exit(0);
  }
  const reactor = new Reactor(
    mode === "echo" && Deno.args[2] === "in-thread" ? { syncWaitMs: ROLE_SYNC_WAIT_MS } : {},
  );
  if (mode === "push") {
    const push = reactor.socket("PUSH", { sendHighWaterMark: 100_000 });
    await push.connect(endpoint);
    const frames = Deno.args[3] === "1" ? [new Uint8Array(REQUEST_BYTES).fill(120)] : benchFrames();
    for (let i = 0; i < n; i++) if (!push.sendNow(frames)) await push.send(frames);
    for await (const _ of Deno.stdin.readable) { /* until the bench closes stdin */ }
  } else if (mode === "echo") {
    const dealer = reactor.socket("DEALER");
    await dealer.connect(endpoint);
    dealer.onMessage((frames) => {
      if (!dealer.sendNow(frames)) void dealer.send(frames);
    });
    await dealer.send([new TextEncoder().encode("hello")]);
    for await (const _ of Deno.stdin.readable) { /* until the bench closes stdin */ }
  } else if (mode === "sub") {
    const sub = reactor.socket("SUB", { receiveHighWaterMark: n + 1000 });
    await sub.subscribe("");
    await sub.connect(endpoint);
    let received = 0;
    let first = 0;
    let ready = false;
    await new Promise<void>((resolve) =>
      sub.onMessage((frames) => {
        if (frames.length === 1) {
          if (!ready) {
            ready = true;
            console.log("ready");
          }
          return;
        }
        if (received++ === 0) first = performance.now();
        if (received === n) resolve();
      })
    );
    console.log(JSON.stringify({ received, ms: performance.now() - first }));
  }
  await reactor.close();
}
