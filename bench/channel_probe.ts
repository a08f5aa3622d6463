// The sandbox channel probe: a thread and a Web Worker exchange one message each way per round trip,
// one at a time, paced at RATE/s for SECONDS, by postMessage ("pm", the sandbox's channel today) or
// through a SharedArrayBuffer with Atomics.waitAsync ("sab", which keeps the Web Worker's event loop
// running, as async handlers need). Prints the process's CPU per round trip and the round trip's
// p50/p99. Alternate the two on a quiet machine:
//   deno run -A bench/channel_probe.ts pm|sab [RATE=10000] [SECONDS=4]
const [mode, rateText, secondsText] = Deno.args;
const rate = Number(rateText ?? 10000), seconds = Number(secondsText ?? 4);
const w = new Worker(new URL("./channel_probe_worker.ts", import.meta.url), { type: "module" });
const sab = new SharedArrayBuffer(64 + 4096);
const ctl = new Int32Array(sab);
const payload = new Uint8Array(300);
let ready!: () => void;
const isReady = new Promise<void>((r) => ready = r);
let onReply: () => void = () => {};
w.onmessage = (e) => {
  if (e.data === "ready") return ready();
  onReply();
};
w.postMessage({ mode, sab });
await isReady;
const cpu = () => {
  const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10_000; // clock ticks (100/s) to µs
};
let n = 0;
const lat: number[] = [];
async function roundTrip(): Promise<void> {
  const t = performance.now();
  if (mode === "pm") {
    const p = new Promise<void>((r) => onReply = r);
    w.postMessage(payload);
    await p;
  } else {
    new Uint8Array(sab, 64).set(payload);
    n++;
    Atomics.store(ctl, 0, n);
    Atomics.notify(ctl, 0);
    const r = Atomics.waitAsync(ctl, 1, n - 1);
    if (r.async) await r.value;
  }
  lat.push(performance.now() - t);
}
// warm-up
for (let i = 0; i < 2000; i++) await roundTrip();
lat.length = 0;
const c0 = cpu(), t0 = performance.now();
let sent = 0;
while (performance.now() - t0 < seconds * 1000) {
  const due = Math.floor((performance.now() - t0) / 1000 * rate);
  if (sent < due) {
    await roundTrip();
    sent++;
  } else await new Promise((r) => setTimeout(r, 0));
}
const c1 = cpu(), el = (performance.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const q = (p: number) => lat[Math.floor(p * (lat.length - 1))] * 1000;
console.log(
  `${mode}: ${Math.round(sent / el)}/s, ${((c1 - c0) / sent).toFixed(1)} µs CPU per round trip, p50 ${
    q(0.5).toFixed(0)
  } µs, p99 ${q(0.99).toFixed(0)} µs`,
);
if (mode === "sab") {
  Atomics.store(ctl, 0, -1);
  Atomics.notify(ctl, 0);
}
w.terminate();
