/**
 * The ceiling the benchmark compares with: raw ZeroMQ between two processes on this machine, on
 * the project's own binding (`bench_peer.ts` is the other process), and zeromq.js on Node when
 * it is installed; and the machine the figures were taken on.
 *
 * @module
 */

import { benchFrames, PEER_MODULE } from "./bench_peer.ts";
import { libzmq } from "../src/zmq/ffi.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { delay, readUntil } from "../src/_async.ts";
import { utf8 } from "../src/wire/protocol.ts";
import { type BenchResult, round3 } from "./report.ts";

const PEER = PEER_MODULE;

/** The machine: cores, CPU model, Deno and libzmq versions, OS. */
export function machine(): BenchResult["machine"] {
  let cpu = "unknown";
  try {
    cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return {
    cores: navigator.hardwareConcurrency,
    cpu,
    deno: Deno.version.deno,
    libzmq: libzmq().version,
    os: `${Deno.build.os}-${Deno.build.arch}`,
  };
}

/**
 * PUSH→PULL between this process and a peer over ipc: `n` messages (`shape` "1": one frame of a
 * request's size, "3": a request's three frames); messages per second.
 */
export async function rawPushPull(dir: string, n: number, shape: "1" | "3"): Promise<number> {
  const r = new Reactor();
  try {
    const pull = r.socket("PULL", { receiveHighWaterMark: 100_000 });
    const ep = `ipc://${dir}/raw-push`;
    await pull.bind(ep);
    const peer = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", PEER, "push", ep, String(n), shape],
      stdin: "piped",
      stdout: "null",
    }).spawn();
    let count = 0;
    let first = 0;
    let last = 0;
    await new Promise<void>((resolve) =>
      pull.onMessage(() => {
        if (count++ === 0) first = performance.now();
        if (count === n) {
          last = performance.now();
          resolve();
        }
      })
    );
    await peer.stdin.close();
    await peer.status;
    return (n - 1) / ((last - first) / 1000);
  } finally {
    await r.close();
  }
}

/** PUB→SUB between this process and a peer over ipc: `n` messages; messages per second. */
export async function rawPubSub(dir: string, n: number): Promise<number> {
  const r = new Reactor();
  try {
    const pub = r.socket("PUB", { sendHighWaterMark: n + 1000 });
    const ep = `ipc://${dir}/raw-pub`;
    await pub.bind(ep);
    const peer = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", PEER, "sub", ep, String(n)],
      stdout: "piped",
    }).spawn();
    const lines = peer.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let ready: string | undefined | null = null; // null: not yet; undefined: the peer exited
    readUntil(lines, "ready").then((r) => (ready = r));
    while (ready === null) {
      await pub.send([utf8("probe")]);
      await delay(10);
    }
    if (ready === undefined) throw new Error("the SUB peer exited before it was ready");
    const frames = benchFrames();
    for (let i = 0; i < n; i++) if (!pub.sendNow(frames)) await pub.send(frames);
    const out = await readUntil(lines, "}", ready);
    if (out === undefined) throw new Error("the SUB peer exited before it reported");
    lines.releaseLock();
    await peer.status;
    const { received, ms } = JSON.parse(out.slice(out.indexOf("{")));
    return (received - 1) / (ms / 1000);
  } finally {
    await r.close();
  }
}

/**
 * Round trips to an echo process, one at a time, `gapMs` apart (0: back to back). `inThread`:
 * both ends wait for messages in-thread, as the roles do, instead of in an off-thread poll.
 */
export async function rawRoundTrip(dir: string, n: number, gapMs = 0, inThread = false): Promise<number[]> {
  const r = new Reactor(inThread ? { syncWaitMs: ROLE_SYNC_WAIT_MS } : {});
  try {
    const router = r.socket("ROUTER");
    const ep = `ipc://${dir}/raw-rtt`;
    await router.bind(ep);
    const peer = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", PEER, "echo", ep, inThread ? "in-thread" : "off-thread"],
      stdin: "piped",
      stdout: "null",
    }).spawn();
    const it = router.messages();
    const id = (await it.next()).value![0];
    const frames = benchFrames();
    const rtt: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await router.send([id, ...frames]);
      await it.next();
      rtt.push(performance.now() - t);
      if (gapMs) await delay(gapMs);
    }
    await peer.stdin.close();
    await peer.status;
    return rtt.sort((a, b) => a - b);
  } finally {
    await r.close();
  }
}

/** zeromq.js on Node, run from Deno's copy of the npm packages; `null` if it cannot run. */
export async function nodeZeromq(dir: string): Promise<BenchResult["raw"]["node_zeromq"]> {
  try {
    const pkg = decodeURIComponent(new URL(".", import.meta.resolve("zeromq/package.json")).pathname);
    // Deno's global cache keeps packages as <name>/<version>/; give Node a node_modules view.
    const cache = pkg.replace(/\/zeromq\/[^/]+\/$/, "");
    const nm = `${dir}/node/node_modules`;
    await Deno.mkdir(nm, { recursive: true });
    const link = async (name: string, version: string) =>
      await Deno.symlink(`${cache}/${name}/${version}`, `${nm}/${name}`);
    await link("zeromq", "6.8.0");
    await link("cmake-ts", "1.0.2");
    const napi = [...Deno.readDirSync(`${cache}/node-addon-api`)].find((e) => e.isDirectory)?.name;
    if (napi) await link("node-addon-api", napi);
    const script = `${dir}/node/bench_node.mjs`;
    await Deno.copyFile(decodeURIComponent(new URL("./bench_node.mjs", import.meta.url).pathname), script);
    const run = async (...args: string[]) => {
      const out = await new Deno.Command("node", {
        // Node must see the packages where the symlinks put them, to find their dependencies.
        args: ["--preserve-symlinks", "--preserve-symlinks-main", script, ...args],
        stdout: "piped",
        stderr: "null",
      }).output();
      if (!out.success) throw new Error(`node ${args[0]} failed`);
      return JSON.parse(new TextDecoder().decode(out.stdout));
    };
    const pp = await run("pull", `ipc://${dir}/node-push`, "300000");
    const rt = await run("rtt", `ipc://${dir}/node-rtt`, "2000");
    return {
      push_pull_msgs_per_s: pp.msgs_per_s,
      rtt_p50_ms: round3(rt.p50_ms),
      rtt_p99_ms: round3(rt.p99_ms),
    };
  } catch {
    return null;
  }
}
