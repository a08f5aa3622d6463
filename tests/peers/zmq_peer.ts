// A separate process for the ZeroMQ binding tests. Modes:
//   push ENDPOINT N SIZE     PUSH N messages (index in the first 4 bytes), then wait for stdin to close
//   push3 ENDPOINT N         PUSH N three-frame messages, then wait for stdin to close
//   pull3 ENDPOINT N         bind a PULL, print "ready", receive N messages, print what arrived
//   echo ENDPOINT            DEALER: sends "hello", then echoes every message back, until stdin closes
//   reconnect ENDPOINT N     N times: new DEALER, send "hello <i>", wait for the reply, close
import { Reactor } from "../../src/zmq/reactor.ts";

const [mode, endpoint, a, b] = Deno.args;
// PEER_SYNC_WAIT_MS: the in-thread wait of the roles (ROLE_SYNC_WAIT_MS) instead of off-thread waits.
const reactor = new Reactor({ syncWaitMs: Number(Deno.env.get("PEER_SYNC_WAIT_MS") ?? 0) });
const stdinClosed = (async () => {
  for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
})();

if (mode === "push") {
  const n = Number(a);
  const size = Number(b);
  const push = reactor.socket("PUSH");
  await push.connect(endpoint);
  for (let i = 0; i < n; i++) {
    const m = new Uint8Array(size);
    new DataView(m.buffer).setUint32(0, i);
    if (!push.sendNow([m])) await push.send([m]);
  }
  await stdinClosed;
} else if (mode === "push3") {
  const push = reactor.socket("PUSH", { sendHighWaterMark: 100_000 });
  await push.connect(endpoint);
  for (let i = 0; i < Number(a); i++) {
    const frames = [new Uint8Array(14), new Uint8Array(60), new TextEncoder().encode(String(i))];
    if (!push.sendNow(frames)) await push.send(frames);
  }
  await stdinClosed;
} else if (mode === "pull3") {
  const n = Number(a);
  const pull = reactor.socket("PULL", { receiveHighWaterMark: 100_000 });
  await pull.bind(endpoint);
  console.log("ready");
  const seen = new Uint8Array(n);
  let count = 0;
  let malformed = 0;
  await new Promise<void>((res) =>
    pull.onMessage((frames) => {
      if (frames.length !== 3) malformed++;
      else seen[Number(new TextDecoder().decode(frames[2]))] = 1;
      if (++count === n) res();
    })
  );
  console.log(JSON.stringify({ count, malformed, unique: seen.reduce((x, y) => x + y, 0) }));
} else if (mode === "echo") {
  const dealer = reactor.socket("DEALER");
  await dealer.connect(endpoint);
  dealer.onMessage((frames) => {
    if (!dealer.sendNow(frames)) void dealer.send(frames);
  });
  await dealer.send([new TextEncoder().encode("hello")]); // lets the ROUTER learn our routing id
  await stdinClosed;
} else if (mode === "reconnect") {
  const n = Number(a);
  for (let i = 0; i < n; i++) {
    const d = reactor.socket("DEALER", { linger: 0 });
    await d.connect(endpoint);
    await d.send([new TextEncoder().encode(`hello ${i}`)]);
    const [reply] = await d.receive();
    if (new TextDecoder().decode(reply) !== `hello ${i}`) throw new Error(`bad reply ${i}`);
    await d.close();
  }
  console.log(`reconnected ${n}`);
} else {
  throw new Error(`unknown mode ${mode}`);
}
await reactor.close();
