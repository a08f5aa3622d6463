/**
 * The other process of `bench`'s raw one-hop measurements, on the project's own binding.
 *
 *   push ENDPOINT N S PUSH N copies of a request-sized message, then wait for stdin to close;
 *                     S "1": one frame of the request's size, "3": the request's three frames
 *   sub ENDPOINT N    SUB: print "ready" at the first probe, then count N data messages and
 *                     print {"received", "ms"} (first to last)
 *   echo ENDPOINT W   DEALER: send "hello", then echo every message back until stdin closes;
 *                     W "in-thread": wait for messages in-thread, as the roles do
 *
 * @module
 */

import { Reactor, ROLE_SYNC_WAIT_MS } from "./zmq/reactor.ts";

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

if (import.meta.main) {
  const [mode, endpoint, count] = Deno.args;
  const n = Number(count);
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
