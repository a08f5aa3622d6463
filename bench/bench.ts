/**
 * `deno task bench`: the raw ZeroMQ ceiling of this machine (the project's own binding, one
 * hop between two processes) and end-to-end flows through real role processes, with the
 * ratio between the two. Prints a table; `--json FILE` writes the figures.
 *
 * The load generator talks the wire protocol on raw sockets (no client library), in this
 * process; the roles run as `start` runs them, each in its own process.
 *
 * @module
 */

import { benchFrames, REQUEST_BYTES } from "./bench_peer.ts";
import { libzmq } from "../src/zmq/ffi.ts";
import { BatchWriter, sendBatch } from "../src/wire/batch.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { utf8 } from "../src/wire/protocol.ts";
import { delay, readUntil, TIMED_OUT, withTimeout } from "../src/_async.ts";
import { type Deployment, rolePids, spawnDeployment } from "../testing/deployment.ts";
import { type CurveClientKeys, curveClientOptions } from "../src/zmq/curve.ts";
import { writeKeyPair } from "../src/roles/security.ts";
import { parseKeyFile } from "../src/roles/zap.ts";

/** Options of {@linkcode runBench}. */
export interface BenchOptions {
  /** Write the figures as JSON to this file. */
  readonly json?: string;
  /** Seconds of each closed-loop measurement. @default {3} */
  readonly seconds?: number;
  /** Print progress lines. */
  readonly progress?: (line: string) => void;
}

/** One end-to-end measurement. */
export interface FlowRun {
  /** Steps in the flow. */
  readonly steps: number;
  /** Worker processes. */
  readonly workers: number;
  /** Flows per second at peak (closed loop). */
  readonly flowsPerSecond: number;
  /** Flows per second over the warm-up: the same load during the first seconds after start. */
  readonly warmUpFlowsPerSecond: number;
  /** Per role, and the load generator: CPU use (share of one core) and peak RSS (MiB) during the peak run. */
  readonly roles: Record<string, { cpu: number; rssMiB: number }>;
}

/** The figures of a benchmark run. */
export interface BenchResult {
  /** The machine. */
  readonly machine: { cores: number; cpu: string; deno: string; libzmq: string; os: string };
  /** The 3-step flow with 2 workers over tcp with CURVE on loopback, peak flows per second. */
  readonly curve_flows_per_s: number | null;
  /** The cost of CURVE on tcp: ipc flows/s divided by tcp + CURVE flows/s (3 steps, 2 workers). */
  readonly curve_cost: number | null;
  /**
   * PUSH→PULL one hop between two processes over ipc, messages per second: single-frame
   * messages as large as a request's three frames together. The ceiling `ratio` divides by.
   */
  readonly raw_hop_msgs_per_s: number;
  /** The same with a request's three frames as a three-frame message (three `zmq_recv` each). */
  readonly raw_hop_3frame_msgs_per_s: number;
  /** PUB→SUB one hop between two processes over ipc, messages per second. */
  readonly raw_pubsub_msgs_per_s: number;
  /** Round trip between two processes over ipc (ROUTER→DEALER echo), 2,000 in a row. */
  readonly raw_rtt_p50_ms: number;
  /** 99th percentile of the same. */
  readonly raw_rtt_p99_ms: number;
  /** Raw round trip p50 when each message follows 2 ms of idleness (both processes asleep). */
  readonly raw_rtt_idle_p50_ms: number;
  /** Raw round trip p50 with both ends waiting in-thread, as the roles do (`ROLE_SYNC_WAIT_MS`). */
  readonly raw_rtt_in_thread_p50_ms: number;
  /** 99th percentile of the same. */
  readonly raw_rtt_in_thread_p99_ms: number;
  /** 3-step flow, 2 workers, one request at a time back to back: p50 and p99 round trip. */
  readonly sequential_p50_ms: number;
  /** See `sequential_p50_ms`. */
  readonly sequential_p99_ms: number;
  /** zeromq.js on Node, same shapes, for context; `null` when Node or its packages are missing. */
  readonly node_zeromq: { push_pull_msgs_per_s: number; rtt_p50_ms: number; rtt_p99_ms: number } | null;
  /** 3-step flow, 2 workers, closed-loop peak. */
  readonly flows_per_s: number;
  /** `flows_per_s / raw_hop_msgs_per_s`. */
  readonly ratio: number;
  /** Round trip at 50% of peak (3-step flow, 2 workers), open loop. */
  readonly p50_ms: number;
  /** 90th percentile. */
  readonly p90_ms: number;
  /** 99th percentile. */
  readonly p99_ms: number;
  /** Offered rate of the latency run. */
  readonly latency_rate: number;
  /**
   * CPU in use on the whole machine's processes of the run (roles and load generator, in cores)
   * during the run at 50% of peak: how much of the machine is left, the queueing that latency
   * at that rate is made of.
   */
  readonly busy_cores_at_50pct: number;
  /**
   * CPU the kernel's memory monitor (`kdamond` threads, Linux DAMON) used during the run at 50%
   * of peak, in cores; `null` when the machine runs none. On this project's 2-vCPU guests it takes
   * a CPU for 20-35 ms every ~540 ms, which is when the latency spikes (README).
   */
  readonly kdamond_cores_at_50pct: number | null;
  /** Offered rate of the run at 10% of peak. */
  readonly latency_rate_10pct: number;
  /** Round trip at 10% of peak, open loop: p50. */
  readonly p50_ms_at_10pct: number;
  /** 99th percentile of the same. */
  readonly p99_ms_at_10pct: number;
  /** The same deployment idle, from 1.5 s after the load: CPU of its role processes together, in cores. */
  readonly idle_cpu_cores: number;
  /** The same: context switches per second of all the role processes' threads together. */
  readonly idle_context_switches_per_s: number;
  /**
   * The bare pipeline: the deployment's shape (four hops, five processes) with relays that only
   * forward each message, libzmq's loop called from Deno; one message at a time: p50.
   */
  readonly bare_sequential_p50_ms: number;
  /** The bare pipeline open loop at `latency_rate`: p50. */
  readonly bare_p50_ms: number;
  /** 99th percentile of the same. */
  readonly bare_p99_ms: number;
  /** CPU its five processes used meanwhile, in cores. */
  readonly bare_busy_cores: number;
  /** The bare pipeline open loop at `latency_rate_10pct`: p50. */
  readonly bare_p50_ms_at_10pct: number;
  /** 99th percentile of the same. */
  readonly bare_p99_ms_at_10pct: number;
  /** Every end-to-end run. */
  readonly runs: readonly FlowRun[];
  /** Seconds each closed-loop peak was measured over. */
  readonly seconds: number;
  /** Seconds of the same load each deployment ran, unmeasured, before its peak was measured. */
  readonly warm_up_seconds: number;
}

const PEER = new URL("./bench_peer.ts", import.meta.url).href;
const FILES = ["./component/flows.ini", "./component/mapping.ini"].map((f) =>
  decodeURIComponent(new URL(f, import.meta.url).pathname)
);

function machine(): BenchResult["machine"] {
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

async function rawPushPull(dir: string, n: number, shape: "1" | "3"): Promise<number> {
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

async function rawPubSub(dir: string, n: number): Promise<number> {
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
async function rawRoundTrip(dir: string, n: number, gapMs = 0, inThread = false): Promise<number[]> {
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
async function nodeZeromq(dir: string): Promise<BenchResult["node_zeromq"]> {
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

/**
 * A deployment of the bench flows, once every worker has joined; with `curve`, over tcp on
 * loopback with CURVE keys (its `curve` field: the generator's keys).
 */
export async function deploy(
  workers: number,
  curve = false,
): Promise<Deployment & { curve?: CurveClientKeys }> {
  if (curve) return await deployCurve(workers);
  const d = await spawnDeployment({ files: FILES, workers });
  for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) await delay(50);
  return d;
}

async function deployCurve(workers: number): Promise<Deployment & { curve: CurveClientKeys }> {
  const keys = await Deno.makeTempDir({ prefix: "zmk" });
  await writeKeyPair(`${keys}/hub`);
  const bench = await writeKeyPair(`${keys}/bench`);
  await Deno.mkdir(`${keys}/allow`);
  await Deno.copyFile(`${keys}/bench.pub`, `${keys}/allow/bench.pub`);
  const d = await spawnDeployment({
    files: FILES,
    workers,
    transport: "tcp",
    args: [
      "--curve-secret-key",
      `${keys}/hub.key`,
      ...["services", "workers", "subscribers"].flatMap((k) => [`--curve-allow-${k}`, `${keys}/allow`]),
    ],
  });
  for (let i = 0; i < 100 && (await rolePids(d.dir, "worker")).length < workers; i++) await delay(50);
  const secret = parseKeyFile(await Deno.readTextFile(`${keys}/bench.key`), "bench.key");
  const serverKey = parseKeyFile(await Deno.readTextFile(`${keys}/hub.pub`), "hub.pub");
  const stop = d.stop;
  return Object.assign(d, {
    curve: { publicKey: bench, secretKey: secret, serverKey },
    stop: async () => {
      const code = await stop();
      await Deno.remove(keys, { recursive: true });
      return code;
    },
  });
}

async function roleProcesses(dir: string): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const role of ["subject", "integration-manager", "worker"]) {
    for (const pid of await rolePids(dir, role)) out.push([role, pid]);
  }
  return out;
}

function cpuTicks(pid: number): number {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime
  } catch {
    return 0;
  }
}

/** Context switches (voluntary and not) of all of a process's threads so far. */
function contextSwitches(pid: number): number {
  let n = 0;
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const status = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`);
        for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)/gm)) n += Number(m[1]);
      } catch { /* a thread that ended */ }
    }
  } catch { /* not Linux, or gone */ }
  return n;
}

/** Runs `fn`; returns its result and the CPU (cores) each process used meanwhile. */
async function withCpu<T>(pids: readonly number[], fn: () => Promise<T>): Promise<[T, number[]]> {
  const before = pids.map(cpuTicks);
  const t0 = performance.now();
  const result = await fn();
  const wall = (performance.now() - t0) / 1000;
  return [result, pids.map((pid, i) => (cpuTicks(pid) - before[i]) / 100 / wall)];
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const round2 = (n: number) => Math.round(n * 100) / 100;

/** The kernel's DAMON threads (`kdamond.N`), whose bursts show in the latency tail; none off Linux. */
function kernelMemoryMonitors(): number[] {
  const pids: number[] = [];
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        if (Deno.readTextFileSync(`/proc/${e.name}/comm`).startsWith("kdamond")) pids.push(Number(e.name));
      } catch { /* gone */ }
    }
  } catch { /* no /proc */ }
  return pids;
}

function peakRssMiB(pid: number): number {
  try {
    const kb = Number(Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmHWM:\s*(\d+)/)?.[1] ?? 0);
    return Math.round(kb / 102.4) / 10;
  } catch {
    return 0;
  }
}

/** Requests the closed loop keeps outstanding. */
const CLOSED_LOOP_WINDOW = 2000;

const TILDE = 0x7e, UNDERSCORE = 0x5f, QUOTE = 0x22, ZERO = 0x30, NINE = 0x39;
const ID_PREFIX = new TextEncoder().encode('"id":"b');

/**
 * The epoch and index of a bench request id (`b<epoch>_<index>`) in a header frame, read from
 * the bytes without decoding the frame; `undefined` when the header holds no such id.
 *
 * @example
 * ```ts
 * import { benchId } from "./bench.ts";
 * benchId(new TextEncoder().encode('{"v":1,"id":"b3_42","n":3}')); // [3, 42]
 * ```
 */
export function benchId(h: Uint8Array): [number, number] | undefined {
  const last = h.length - ID_PREFIX.length;
  let i = -1;
  outer: for (let k = 0; k <= last; k++) {
    for (let j = 0; j < ID_PREFIX.length; j++) if (h[k + j] !== ID_PREFIX[j]) continue outer;
    i = k + ID_PREFIX.length;
    break;
  }
  if (i < 0) return undefined;
  let epoch = 0;
  let digits = 0;
  for (; i < h.length && h[i] >= ZERO && h[i] <= NINE; i++, digits++) epoch = epoch * 10 + h[i] - ZERO;
  if (!digits || h[i] !== UNDERSCORE) return undefined;
  let index = 0;
  digits = 0;
  for (i++; i < h.length && h[i] >= ZERO && h[i] <= NINE; i++, digits++) index = index * 10 + h[i] - ZERO;
  if (!digits || h[i] !== QUOTE) return undefined;
  return [epoch, index];
}

const NAP = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps the thread for `ms` milliseconds (no event-loop turn). */
function nap(ms: number): void {
  Atomics.wait(NAP, 0, 0, ms);
}

/** What {@linkcode pace} drives: a sender and a reader on raw sockets. */
interface PacedIo {
  /** Queues (or sends) request `i`. */
  add(i: number): void;
  /** Sends what `add` queued, if anything. */
  flush(): void;
  /** Reads what has arrived; returns how many messages it read. */
  poll(): number;
}

/**
 * An open-loop run, paced in-thread at `rate` requests/s: request i is due at t0 + i / rate and
 * `sentAt[i]` is set to that time; runs until `finished()` or 10 s after the last is due.
 *
 * The caller owns the reactor's turn (`Reactor.exec`: no off-thread poll meanwhile). Each pass
 * sends what is due, reads what arrived, and sleeps ~0.1 ms when nothing did (`Atomics.wait`).
 * A 1 ms JavaScript timer fires every ~2 ms while a reactor runs, so a timer-paced generator
 * sends bursts of ~50 requests and measures its own queueing.
 */
function pace(rate: number, sentAt: Float64Array, finished: () => boolean, io: PacedIo): void {
  const total = sentAt.length;
  const t0 = performance.now();
  const deadline = t0 + (total / rate) * 1000 + 10_000;
  let sent = 0;
  for (let now = t0; !finished() && now < deadline; now = performance.now()) {
    const due = Math.min(total, Math.floor(((now - t0) / 1000) * rate) + 1); // request 0 at once
    while (sent < due) {
      sentAt[sent] = t0 + (sent / rate) * 1000;
      io.add(sent++);
    }
    io.flush();
    if (!io.poll()) nap(0.05);
  }
}

/** A raw-socket load generator speaking the wire protocol. */
export class Generator {
  /**
   * Waits in-thread like the roles: its work happens in message callbacks, and an off-thread
   * poll would cost a thread hop per wake-up (CPU the roles on this machine then lack).
   */
  readonly #r = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  #dealer!: ReactorSocket;
  #sub!: ReactorSocket;
  #onDone: (index: number, at: number) => void = () => {};
  readonly #topic: Uint8Array;
  readonly #values = utf8(JSON.stringify({ payload: "x".repeat(60) }));
  /**
   * Ids are `b<epoch>_<index>`, a new epoch per measurement: the Subject drops a request id it
   * has seen (`duplicate_window`), so ids are never reused.
   */
  #epoch = 0;
  readonly #out = new BatchWriter();
  #flushScheduled = false;

  constructor(readonly flow: string) {
    this.#topic = utf8(`${flow}~~~~`);
  }

  async open(d: { subject: string; publisher: string; curve?: CurveClientKeys }): Promise<void> {
    this.#dealer = this.#r.socket("DEALER", {
      ...curveClientOptions(d.curve, d.subject),
      sendHighWaterMark: 1_000_000,
      receiveHighWaterMark: 1_000_000,
    });
    this.#dealer.onMessage(() => {}); // acknowledgements
    this.#r.afterReceive(() => this.#flush());
    this.#r.onIdle(() => this.#flush());
    await this.#dealer.connect(d.subject);
    this.#sub = this.#r.socket("SUB", {
      ...curveClientOptions(d.curve, d.publisher),
      receiveHighWaterMark: 1_000_000,
    });
    await this.#sub.subscribe(`${this.flow}~~~~done`);
    await this.#sub.subscribe("~~~~ping-bench");
    await this.#sub.connect(d.publisher);
    this.#sub.onMessage((frames) => this.#published(frames, performance.now()));
    while (!this.#pinged) {
      await this.#dealer.send([utf8("~~~~ping-bench"), utf8('{"v":1,"id":"ping","k":"ping"}'), utf8("{}")]);
      await delay(20);
    }
  }

  #pinged = false;

  /** A publication seen on the SUB socket at `at` (ms). */
  #published(frames: Uint8Array[], at: number): void {
    if (frames[0][0] === TILDE) {
      this.#pinged = true; // "~~~~ping-bench": the only subscribed topic that starts with "~"
      return;
    }
    const id = benchId(frames[1]);
    if (id && id[0] === this.#epoch) this.#onDone(id[1], at);
  }

  /** Queues a request; what one turn queued leaves as one batch (PROTOCOL.md), as the bundled client sends it. */
  send(index: number): void {
    this.#out.add(0, 0, this.#topic, utf8(`{"v":1,"id":"b${this.#epoch}_${index}"}`), this.#values);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#out.count) void sendBatch(this.#dealer, [], this.#out);
  }

  /** Closed loop: keep `window` requests outstanding for `seconds`; returns flows/s. */
  async closedLoop(seconds: number, window = CLOSED_LOOP_WINDOW): Promise<number> {
    let sent = 0;
    let done = 0;
    let measuring = false;
    let counted = 0;
    let stop = false;
    this.#epoch++;
    this.#onDone = () => {
      done++;
      if (measuring) counted++;
      if (!stop) this.send(sent++);
    };
    for (let i = 0; i < window; i++) this.send(sent++);
    await delay(500); // warm up
    measuring = true;
    const t0 = performance.now();
    await delay(seconds * 1000);
    const elapsed = (performance.now() - t0) / 1000;
    measuring = false;
    stop = true;
    while (done < sent) await delay(20);
    return counted / elapsed;
  }

  /** One request at a time, back to back, `n` times; returns round-trip times in ms. */
  async sequential(n: number): Promise<number[]> {
    this.#epoch++;
    const rtt: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const done = new Promise<void>((resolve) => (this.#onDone = () => resolve()));
      this.send(i);
      await done;
      rtt.push(performance.now() - t);
    }
    return rtt.sort((a, b) => a - b);
  }

  /**
   * Open loop at `rate` flows/s for `seconds` (see {@linkcode pace}); returns round-trip times
   * in ms, each from the request's scheduled time (no coordinated omission).
   */
  openLoop(rate: number, seconds: number): Promise<number[]> {
    return this.#r.exec(() => {
      const sentAt = new Float64Array(Math.round(rate * seconds));
      const rtt: number[] = [];
      this.#epoch++;
      this.#onDone = (i, at) => {
        if (i >= 0 && i < sentAt.length) rtt.push(at - sentAt[i]);
      };
      const dealer = this.#dealer.raw;
      const sub = this.#sub.raw;
      pace(rate, sentAt, () => rtt.length >= sentAt.length, {
        add: (i) => {
          this.#out.add(0, 0, this.#topic, utf8(`{"v":1,"id":"b${this.#epoch}_${i}"}`), this.#values);
        },
        flush: () => {
          if (!this.#out.count) return;
          const body = this.#out.take();
          while (!dealer.trySend([body])) nap(0.05);
        },
        poll: () => {
          let got = 0;
          for (let f = sub.tryReceive(); f; f = sub.tryReceive()) {
            this.#published(f, performance.now());
            got++;
          }
          while (dealer.tryReceive()) got++; // acknowledgements
          return got;
        },
      });
      return rtt.sort((a, b) => a - b);
    });
  }

  close(): Promise<void> {
    return this.#r.close();
  }
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function flowRun(
  steps: number,
  workers: number,
  seconds: number,
  latency: boolean,
  curve = false,
): Promise<
  FlowRun & {
    latency?: {
      rate: number;
      p50: number;
      p90: number;
      p99: number;
      n: number;
      sequential: number[];
      busyCores: number;
      monitorCores: number | null;
      low: number[];
      lowRate: number;
      idleCpu: number;
      idleSwitches: number;
    };
  }
> {
  const d = await deploy(workers, curve);
  const g = new Generator(`Bench${steps}`);
  try {
    await g.open(d);
    const pids = await roleProcesses(d.dir);
    // The load generator (this process) shares the machine with the roles: shown beside them.
    pids.push(["load generator", Deno.pid]);
    // Steady state, as a long-running router sees it: throughput climbs over the first 5-10 s
    // after start (functions still being optimized, V8's young generation growing), so the same
    // load runs first; its figure is kept as the cold one.
    const warmUpFlowsPerSecond = await g.closedLoop(WARM_UP_SECONDS);
    const all = pids.map(([, pid]) => pid);
    const [flowsPerSecond, cores] = await withCpu(all, () => g.closedLoop(seconds));
    const roles: Record<string, { cpu: number; rssMiB: number }> = {};
    pids.forEach(([role, pid], i) => {
      const name = role === "worker"
        ? `worker ${pids.slice(0, i).filter(([r]) => r === "worker").length + 1}`
        : role;
      roles[name] = {
        cpu: round2(cores[i]),
        rssMiB: peakRssMiB(pid),
      };
    });
    let lat;
    let sequential: number[] | undefined;
    if (latency) {
      sequential = await g.sequential(500);
      const rate = Math.round(flowsPerSecond / 2);
      const monitors = kernelMemoryMonitors();
      const [rtt, busy] = await withCpu([...all, ...monitors], () => g.openLoop(rate, seconds));
      const lowRate = Math.round(flowsPerSecond / 10);
      const low = await g.openLoop(lowRate, seconds);
      // The deployment idle: what an edge box pays while nothing happens. Watched from 1.5 s after
      // the load, once the roles' reactors have handed their waits off-thread (after 1 s idle).
      const roleOnly = pids.filter(([role]) => role !== "load generator").map(([, pid]) => pid);
      await delay(1500);
      const switches = () => sum(roleOnly.map(contextSwitches));
      const switchesBefore = switches();
      const [, idle] = await withCpu(roleOnly, () => delay(IDLE_SECONDS * 1000));
      const idleSwitches = (switches() - switchesBefore) / IDLE_SECONDS;
      lat = {
        rate,
        p50: percentile(rtt, 50),
        p90: percentile(rtt, 90),
        p99: percentile(rtt, 99),
        n: rtt.length,
        sequential,
        busyCores: round2(sum(busy.slice(0, all.length))),
        monitorCores: monitors.length ? round2(sum(busy.slice(all.length))) : null,
        low,
        lowRate,
        idleCpu: round2(sum(idle)),
        idleSwitches: Math.round(idleSwitches),
      };
    }
    return { steps, workers, flowsPerSecond, warmUpFlowsPerSecond, roles, latency: lat };
  } finally {
    await g.close();
    await d.stop();
  }
}

/** Figures of {@linkcode barePipeline}. */
interface BareRun {
  /** One message at a time, back to back: round trips in ms, sorted. */
  sequential: number[];
  /** Per offered rate: round trips in ms (sorted) and the CPU of its processes together (cores). */
  runs: { rate: number; rtt: number[]; busyCores: number }[];
}

/**
 * The shape of a deployment with no framework work in it: this process pushes to a relay in the
 * Subject's place, which pushes to two relays in the workers' places, which push to a relay in
 * the Integration Manager's, which publishes back to this process (four hops, five processes).
 * Each relay is libzmq's own loop called from Deno (`bench_peer.ts relay`: `zmq_poll` in-thread,
 * then `zmq_recv`/`zmq_send` on one buffer, no reactor, no routing); this process paces and
 * reads as the flows' generator does. Run open loop at the offered rates of the flows, it shows
 * what this machine's wake-ups cost before any framework work: the floor of the latency rows.
 */
async function barePipeline(rates: readonly number[], seconds: number): Promise<BareRun> {
  const dir = await Deno.makeTempDir({ prefix: "zmp" });
  const ep = (name: string) => `ipc://${dir}/${name}`;
  const stages = [
    [`@${ep("in")}`, `@${ep("work")}`, "PUSH"],
    [ep("work"), ep("im"), "PUSH"],
    [ep("work"), ep("im"), "PUSH"],
    [`@${ep("im")}`, `@${ep("out")}`, "PUB"],
  ].map((args) =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", PEER, "relay", ...args], stdin: "piped" }).spawn()
  );
  const r = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  try {
    const hwm = { sendHighWaterMark: 1_000_000, receiveHighWaterMark: 1_000_000 };
    const push = r.socket("PUSH", hwm);
    await push.connect(ep("in"));
    const sub = r.socket("SUB", hwm);
    await sub.subscribe("");
    await sub.connect(ep("out"));
    const msg = new Uint8Array(REQUEST_BYTES).fill(120);
    const index = new DataView(msg.buffer);
    // On the reactor's turn (inside `exec`): straight to libzmq.
    const sendNow = (i: number) => {
      index.setFloat64(0, i, true);
      while (!push.raw.trySend([msg])) nap(0.05);
    };
    // Outside it (the reactor may be polling on another thread): through the reactor.
    const send = (i: number) => {
      index.setFloat64(0, i, true);
      return push.send([msg]);
    };
    let arrived = (_i: number, _at: number) => {};
    const onFrames = (frames: Uint8Array[]) => {
      const f = frames[0];
      arrived(new DataView(f.buffer, f.byteOffset, 8).getFloat64(0, true), performance.now());
    };
    sub.onMessage(onFrames);
    // Until the whole path is up: a PUB drops what it publishes before the SUB has joined.
    let up = false;
    arrived = () => (up = true);
    for (let i = 0; i < 500 && !up; i++) {
      await send(-1);
      await delay(20);
    }
    if (!up) throw new Error("the bare pipeline did not come up in 10 s");
    await delay(100);
    const sequential: number[] = [];
    for (let i = 0; i < 500; i++) {
      const t = performance.now();
      const done = new Promise<void>((resolve) => (arrived = (j) => j === i && resolve()));
      await send(i);
      await done;
      sequential.push(performance.now() - t);
    }
    const pids = [...stages.map((p) => p.pid), Deno.pid];
    const runs: BareRun["runs"] = [];
    for (const rate of rates) {
      const [rtt, cores] = await withCpu(pids, () =>
        r.exec(() => {
          const sentAt = new Float64Array(Math.round(rate * seconds));
          const rtt: number[] = [];
          arrived = (i, at) => {
            if (i >= 0 && i < sentAt.length) rtt.push(at - sentAt[i]);
          };
          pace(rate, sentAt, () => rtt.length >= sentAt.length, {
            add: sendNow,
            flush: () => {},
            poll: () => {
              let got = 0;
              for (let f = sub.raw.tryReceive(); f; f = sub.raw.tryReceive()) {
                onFrames(f);
                got++;
              }
              return got;
            },
          });
          return rtt.sort((a, b) => a - b);
        }));
      runs.push({ rate, rtt, busyCores: round2(sum(cores)) });
    }
    return { sequential: sequential.sort((a, b) => a - b), runs };
  } finally {
    await r.close();
    for (const p of stages) {
      await p.stdin.close().catch(() => {});
      // A relay blocked in a send (its peer gone) never sees stdin close.
      if (await withTimeout(p.status, 5000) === TIMED_OUT) {
        p.kill("SIGKILL");
        await p.status;
      }
    }
    await Deno.remove(dir, { recursive: true });
  }
}

/** Seconds the main deployment is watched idle after its load. */
const IDLE_SECONDS = 3;

/** Seconds of closed-loop load each deployment runs before its peak is measured. */
const WARM_UP_SECONDS = 8;

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

/** Runs the benchmark and prints the table; returns the figures. */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const say = options.progress ?? ((l: string) => console.error(l));
  const seconds = options.seconds ?? 3;
  const m = machine();
  const dir = await Deno.makeTempDir({ prefix: "zmb" });
  say("bench 1/10: raw PUSH->PULL one hop between two processes (ipc)");
  const rawHop = await rawPushPull(dir, 1_000_000, "1");
  const rawHop3 = await rawPushPull(dir, 500_000, "3");
  say("bench 2/10: raw PUB->SUB one hop between two processes (ipc)");
  const rawPub = await rawPubSub(dir, 300_000);
  say("bench 3/10: raw round trips between two processes (ipc), and zeromq.js on Node if present");
  const rtt = await rawRoundTrip(dir, 2000);
  const idleRtt = await rawRoundTrip(dir, 200, 2);
  const inThreadRtt = await rawRoundTrip(dir, 2000, 0, true);
  const node = await nodeZeromq(dir);
  await Deno.remove(dir, { recursive: true });
  const runs: Awaited<ReturnType<typeof flowRun>>[] = [];
  let stage = 4;
  for (const [steps, workers] of [[1, 1], [1, 2], [3, 1], [3, 2]]) {
    const latency = steps === 3 && workers === 2;
    say(
      `bench ${stage++}/10: ${steps}-step flow, ${workers} worker${workers > 1 ? "s" : ""}, closed loop${
        latency ? " then open loop at 50% of peak" : ""
      }`,
    );
    runs.push(await flowRun(steps, workers, seconds, latency));
  }
  const main = runs.find((r) => r.steps === 3 && r.workers === 2)!;
  say("bench 8/10: 3-step flow, 2 workers, tcp with CURVE on loopback, closed loop");
  const curve = libzmq().curve ? await flowRun(3, 2, seconds, false, true) : undefined;
  say("bench 9/10: the bare pipeline (the deployment's shape, no framework) at the same offered rates");
  const bare = await barePipeline([main.latency!.rate, main.latency!.lowRate], seconds);
  const result: BenchResult = {
    machine: m,
    raw_hop_msgs_per_s: Math.round(rawHop),
    raw_hop_3frame_msgs_per_s: Math.round(rawHop3),
    raw_pubsub_msgs_per_s: Math.round(rawPub),
    raw_rtt_p50_ms: round3(percentile(rtt, 50)),
    raw_rtt_p99_ms: round3(percentile(rtt, 99)),
    raw_rtt_idle_p50_ms: round3(percentile(idleRtt, 50)),
    raw_rtt_in_thread_p50_ms: round3(percentile(inThreadRtt, 50)),
    raw_rtt_in_thread_p99_ms: round3(percentile(inThreadRtt, 99)),
    sequential_p50_ms: round3(percentile(main.latency!.sequential ?? [], 50)),
    sequential_p99_ms: round3(percentile(main.latency!.sequential ?? [], 99)),
    node_zeromq: node,
    flows_per_s: Math.round(main.flowsPerSecond),
    curve_flows_per_s: curve ? Math.round(curve.flowsPerSecond) : null,
    curve_cost: curve ? Math.round((main.flowsPerSecond / curve.flowsPerSecond) * 100) / 100 : null,
    ratio: Math.round((main.flowsPerSecond / rawHop) * 10000) / 10000,
    p50_ms: round3(main.latency!.p50),
    p90_ms: round3(main.latency!.p90),
    p99_ms: round3(main.latency!.p99),
    latency_rate: main.latency!.rate,
    busy_cores_at_50pct: main.latency!.busyCores,
    kdamond_cores_at_50pct: main.latency!.monitorCores,
    latency_rate_10pct: main.latency!.lowRate,
    p50_ms_at_10pct: round3(percentile(main.latency!.low, 50)),
    p99_ms_at_10pct: round3(percentile(main.latency!.low, 99)),
    idle_cpu_cores: main.latency!.idleCpu,
    idle_context_switches_per_s: main.latency!.idleSwitches,
    bare_sequential_p50_ms: round3(percentile(bare.sequential, 50)),
    bare_p50_ms: round3(percentile(bare.runs[0].rtt, 50)),
    bare_p99_ms: round3(percentile(bare.runs[0].rtt, 99)),
    bare_busy_cores: bare.runs[0].busyCores,
    bare_p50_ms_at_10pct: round3(percentile(bare.runs[1].rtt, 50)),
    bare_p99_ms_at_10pct: round3(percentile(bare.runs[1].rtt, 99)),
    seconds,
    warm_up_seconds: WARM_UP_SECONDS,
    runs: runs.map(({ latency: _l, ...r }) => ({
      ...r,
      flowsPerSecond: Math.round(r.flowsPerSecond),
      warmUpFlowsPerSecond: Math.round(r.warmUpFlowsPerSecond),
    })),
  };
  say("bench 10/10: done");
  printTable(result);
  if (options.json) await Deno.writeTextFile(options.json, JSON.stringify(result, null, 2) + "\n");
  return result;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function printTable(r: BenchResult): void {
  const m = r.machine;
  const lines = [
    `machine: ${m.cores} cores, ${m.cpu}, ${m.os}; Deno ${m.deno}; libzmq ${m.libzmq}`,
    "",
    "| measurement | figure |",
    "| --- | ---: |",
    `| raw PUSH->PULL, one hop, two processes, ipc, one ${REQUEST_BYTES}-byte frame | ${
      fmt(r.raw_hop_msgs_per_s)
    } msgs/s |`,
    `| raw PUSH->PULL, the same bytes as three frames | ${fmt(r.raw_hop_3frame_msgs_per_s)} msgs/s |`,
    `| raw PUB->SUB, one hop, two processes, ipc | ${fmt(r.raw_pubsub_msgs_per_s)} msgs/s |`,
    `| raw round trip, two processes, ipc: p50 / p99 | ${r.raw_rtt_p50_ms.toFixed(3)} / ${
      r.raw_rtt_p99_ms.toFixed(3)
    } ms |`,
    `| raw round trip, each after 2 ms idle: p50 | ${r.raw_rtt_idle_p50_ms.toFixed(3)} ms |`,
    `| raw round trip, both ends waiting in-thread as the roles do: p50 / p99 | ${
      r.raw_rtt_in_thread_p50_ms.toFixed(3)
    } / ${r.raw_rtt_in_thread_p99_ms.toFixed(3)} ms |`,
    ...(r.node_zeromq
      ? [
        `| zeromq.js on Node: PUSH->PULL, one hop, two processes | ${
          fmt(r.node_zeromq.push_pull_msgs_per_s)
        } msgs/s |`,
        `| zeromq.js on Node: REQ/REP round trip p50 / p99 | ${r.node_zeromq.rtt_p50_ms.toFixed(3)} / ${
          r.node_zeromq.rtt_p99_ms.toFixed(3)
        } ms |`,
      ]
      : ["| zeromq.js on Node | not measured (Node or its packages missing) |"]),
    ...r.runs.map((x) =>
      `| ${x.steps}-step flow, ${x.workers} worker${x.workers > 1 ? "s" : ""}, peak (closed loop) | ${
        fmt(x.flowsPerSecond)
      } flows/s (first ${r.warm_up_seconds} s: ${fmt(x.warmUpFlowsPerSecond)}) |`
    ),
    `| ratio: 3-step/2-worker flows/s to raw one-hop msgs/s | ${r.ratio.toFixed(4)} |`,
    r.curve_flows_per_s === null || r.curve_cost === null
      ? "| 3-step flow, 2 workers, tcp + CURVE on loopback | not measured (no libzmq with CURVE: see doctor) |"
      : `| 3-step flow, 2 workers, tcp + CURVE on loopback, peak (closed loop) | ${
        fmt(r.curve_flows_per_s)
      } flows/s: ipc is ${r.curve_cost.toFixed(2)}x that |`,
    `| round trip at 50% of peak (${fmt(r.latency_rate)} flows/s offered): p50 / p90 / p99 | ${
      r.p50_ms.toFixed(2)
    } / ${r.p90_ms.toFixed(2)} / ${r.p99_ms.toFixed(2)} ms |`,
    `| CPU busy meanwhile (roles and load generator, of ${m.cores} cores) | ${
      r.busy_cores_at_50pct.toFixed(2)
    } cores |`,
    ...(r.kdamond_cores_at_50pct === null ? [] : [
      `| the kernel's memory monitor (kdamond) meanwhile | ${r.kdamond_cores_at_50pct.toFixed(2)} cores |`,
    ]),
    `| round trip at 10% of peak (${fmt(r.latency_rate_10pct)} flows/s offered): p50 / p99 | ${
      r.p50_ms_at_10pct.toFixed(2)
    } / ${r.p99_ms_at_10pct.toFixed(2)} ms |`,
    `| 3-step flow, one request at a time back to back: p50 / p99 | ${r.sequential_p50_ms.toFixed(2)} / ${
      r.sequential_p99_ms.toFixed(2)
    } ms |`,
    `| bare pipeline, same shape, relays only: one at a time p50 | ${
      r.bare_sequential_p50_ms.toFixed(2)
    } ms |`,
    `| bare pipeline at ${fmt(r.latency_rate)} /s: p50 / p99; CPU busy | ${r.bare_p50_ms.toFixed(2)} / ${
      r.bare_p99_ms.toFixed(2)
    } ms; ${r.bare_busy_cores.toFixed(2)} cores |`,
    `| bare pipeline at ${fmt(r.latency_rate_10pct)} /s: p50 / p99 | ${r.bare_p50_ms_at_10pct.toFixed(2)} / ${
      r.bare_p99_ms_at_10pct.toFixed(2)
    } ms |`,
    `| the deployment idle: CPU of its roles / context switches | ${r.idle_cpu_cores.toFixed(2)} cores / ${
      fmt(r.idle_context_switches_per_s)
    } per s |`,
    "",
    `Peaks: ${
      fmt(CLOSED_LOOP_WINDOW)
    } requests outstanding for ${r.seconds} s, after the same load for ${r.warm_up_seconds} s (the "first" figure).`,
    "CPU (cores) and peak RSS per process, 3-step flow, 2 workers, at peak:",
    ...Object.entries(r.runs.find((x) => x.steps === 3 && x.workers === 2)!.roles).map(([role, v]) =>
      `  ${role.padEnd(20)} cpu ${v.cpu.toFixed(2)}  rss ${v.rssMiB.toFixed(1)} MiB`
    ),
  ];
  console.log(lines.join("\n"));
}
