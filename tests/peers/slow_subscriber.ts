// A subscriber that reads more slowly than the Integration Manager publishes: a receive queue of
// one message, and a pause of DELAY_MS after each publication it takes. Large publications then
// keep its connection full, one publication queued at every look, as a stopped subscriber's is;
// yet it reads all the time. Prints the request id of every publication it takes, one per line.
//
//   deno run -A tests/peers/slow_subscriber.ts ENDPOINT PREFIX DELAY_MS
import { Context } from "../../src/zmq/socket.ts";

const [endpoint, prefix, delayText] = Deno.args;
const delay = Number(delayText);
const ctx = new Context();
const sub = ctx.socket("SUB", { receiveHighWaterMark: 1, linger: 0 });
sub.subscribe(prefix);
sub.connect(endpoint);
const dec = new TextDecoder();
const out = Deno.stdout.writable.getWriter();
const enc = new TextEncoder();
for (;;) {
  const frames = sub.tryReceive();
  if (!frames) {
    await new Promise((r) => setTimeout(r, 1));
    continue;
  }
  const id = /"id":"([^"]+)"/.exec(dec.decode(frames[1]))?.[1] ?? "?";
  await out.write(enc.encode(`${id}\n`));
  await new Promise((r) => setTimeout(r, delay));
}
