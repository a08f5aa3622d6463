/**
 * One node of the Moleculer peer (`moleculer.ts`): `worker NODE_ID PORT PEERS` hosts the chain's
 * three actions; `caller PORT PEERS PIDS SECONDS WARM_UP RATES` calls `chain.a` (which calls
 * `chain.b` then `chain.c`) and prints its figures as one JSON line. PEERS is Moleculer's static
 * list (`host:port/nodeID,…`): the built-in TCP transporter with UDP discovery off, so nothing
 * leaves loopback and no broker runs.
 *
 * @module
 */

import { type Context, ServiceBroker } from "moleculer";
import { peakRssMiB, withCpu } from "./proc.ts";

const PAYLOAD = { payload: "x".repeat(60) };

/** A broker on the TCP transporter, static peers, no discovery, no logging. */
function broker(nodeID: string, port: number, peers: string[]): ServiceBroker {
  return new ServiceBroker({
    nodeID,
    logger: false,
    transporter: { type: "TCP", options: { udpDiscovery: false, port, urls: peers } },
  });
}

async function worker(nodeID: string, port: number, peers: string[]): Promise<void> {
  const b = broker(nodeID, port, peers);
  b.createService({
    name: "chain",
    actions: {
      async a(ctx: Context<Record<string, unknown>>) {
        const r = await ctx.call("chain.b", ctx.params);
        return await ctx.call("chain.c", r);
      },
      // Like the bench's own handler (`component/handlers.ts`): values back unchanged.
      b: (ctx: Context<Record<string, unknown>>) => ctx.params,
      c: (ctx: Context<Record<string, unknown>>) => ctx.params,
    },
  });
  await b.start();
  console.log("ready");
  // Runs until the bench kills it.
  await new Promise(() => {});
}

/** Completed calls per second, `window` calls outstanding, over `seconds`. */
async function closedLoop(b: ServiceBroker, seconds: number, window: number): Promise<number> {
  let done = 0;
  let running = true;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  const lane = async () => {
    while (running) {
      await b.call("chain.a", PAYLOAD);
      done++;
      if (performance.now() >= end) running = false;
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  return done / ((performance.now() - t0) / 1000);
}

/** `n` calls one after the other: each round trip in ms, sorted. */
async function sequential(b: ServiceBroker, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await b.call("chain.a", PAYLOAD);
    out.push(performance.now() - t);
  }
  return out.sort((x, y) => x - y);
}

/** Calls at `rate`/s for `seconds` (sent each timer tick as they fall due); round trips in ms, sorted. */
async function openLoop(b: ServiceBroker, rate: number, seconds: number): Promise<number[]> {
  const total = Math.round(rate * seconds);
  const rtt: number[] = [];
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
    for (; sent < due; sent++) {
      const at = t0 + (sent / rate) * 1000;
      pending.push(b.call("chain.a", PAYLOAD).then(() => void rtt.push(performance.now() - at)));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  return rtt.sort((x, y) => x - y);
}

const pct = (sorted: number[], p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : 0;

async function caller(port: number, peers: string[], pids: number[], args: string[]): Promise<void> {
  const [seconds, warmUp, window] = args.slice(0, 3).map(Number);
  const rates = args.slice(3).map(Number);
  const b = broker("caller", port, peers);
  await b.start();
  await b.waitForServices("chain", 30_000);
  // Wait until both worker nodes host the chain, so that calls are balanced over the two.
  for (let i = 0; i < 300 && b.registry.getServiceList({ onlyAvailable: true }).length < 3; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const all = [Deno.pid, ...pids];
  await closedLoop(b, warmUp, window);
  const [peak, cores] = await withCpu(all, () => closedLoop(b, seconds, window));
  const seq = await sequential(b, 500);
  const open = [];
  for (const rate of rates) {
    const [rtt, c] = await withCpu(all, () => openLoop(b, rate, seconds));
    const busy = c.reduce((x, y) => x + y, 0);
    open.push({
      rate,
      p50_ms: pct(rtt, 50),
      p99_ms: pct(rtt, 99),
      busy_cores: busy,
      cpu_us_per_flow: (busy / rate) * 1e6,
    });
  }
  console.log(JSON.stringify({
    flows_per_s: peak,
    cores_at_peak: cores,
    rss_mib: all.map(peakRssMiB),
    one_at_a_time_p50_ms: pct(seq, 50),
    one_at_a_time_p99_ms: pct(seq, 99),
    open,
  }));
  await b.stop();
}

if (import.meta.main) {
  const [role, ...rest] = Deno.args;
  if (role === "worker") {
    await worker(rest[0], Number(rest[1]), rest[2].split(","));
  } else if (role === "caller") {
    await caller(Number(rest[0]), rest[1].split(","), rest[2].split(",").map(Number), rest.slice(3));
    Deno.exit(0);
  } else {
    console.error(
      "usage: moleculer_node.ts worker NODE_ID PORT PEERS | caller PORT PEERS PIDS SECONDS WARM_UP WINDOW RATES…",
    );
    Deno.exit(64);
  }
}
