// zeromq.js on Node, for comparison in `deno task bench` (run by bench.ts when Node is present):
//   node bench_node.mjs pull ENDPOINT N     PUSH->PULL across two Node processes: {"msgs_per_s"}
//   node bench_node.mjs push ENDPOINT N     (the child of `pull`)
//   node bench_node.mjs rtt ENDPOINT N      REQ->REP round trips across two processes: {"p50_ms", "p99_ms"}
//   node bench_node.mjs rep ENDPOINT        (the child of `rtt`)
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as zmq from "zeromq";

const [mode, ep, count] = process.argv.slice(2);
const n = Number(count);
const self = fileURLToPath(import.meta.url);
const frames = [
  Buffer.from("Bench3~~~~"),
  Buffer.from('{"v":1,"id":"00000000-0000-0000-0000-000000000000"}'),
  Buffer.from(JSON.stringify({ payload: "x".repeat(60) })),
];

if (mode === "pull") {
  const pull = new zmq.Pull();
  await pull.bind(ep);
  const child = spawn(process.execPath, [...process.execArgv, self, "push", ep, String(n)], {
    stdio: ["pipe", "ignore", "inherit"],
  });
  let got = 0, first = 0;
  for await (const _ of pull) {
    if (got++ === 0) first = performance.now();
    if (got === n) break;
  }
  const ms = performance.now() - first;
  child.stdin.end();
  console.log(JSON.stringify({ msgs_per_s: Math.round((n - 1) / (ms / 1000)) }));
  pull.close();
} else if (mode === "push") {
  const push = new zmq.Push({ sendHighWaterMark: 100000 });
  push.connect(ep);
  for (let i = 0; i < n; i++) await push.send(frames);
  process.stdin.resume();
  process.stdin.on("end", () => {
    push.close();
    process.exit(0);
  });
} else if (mode === "rtt") {
  const req = new zmq.Request();
  await req.bind(ep);
  const child = spawn(process.execPath, [...process.execArgv, self, "rep", ep], {
    stdio: ["pipe", "ignore", "inherit"],
  });
  const rtt = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await req.send(frames);
    await req.receive();
    rtt.push(performance.now() - t);
  }
  rtt.sort((a, b) => a - b);
  child.stdin.end();
  console.log(JSON.stringify({ p50_ms: rtt[Math.floor(n / 2)], p99_ms: rtt[Math.floor(n * 0.99)] }));
  req.close();
} else if (mode === "rep") {
  const rep = new zmq.Reply();
  rep.connect(ep);
  process.stdin.resume();
  process.stdin.on("end", () => {
    rep.close();
    process.exit(0);
  });
  for await (const msg of rep) await rep.send(msg);
}
