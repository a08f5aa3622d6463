/**
 * libzmq (through the project's binding, as the roles use it) against ZMTP on Deno's own
 * sockets (`src/zmtp`): between two processes over a Unix socket, one round trip at a time
 * and one-way throughput of request-sized three-frame messages, each with the CPU both
 * processes used; then the bare pipeline (`bare.ts`, the deployment's shape with relays) with
 * its relays on either. The measurement behind docs/performance.md, round 18:
 *
 * ```sh
 * deno run -A bench/transport.ts [ROUNDS]
 * ```
 *
 * Each round measures both transports, in alternated order; JSON lines. Not part of `deno task
 * bench`: the roles do not use `src/zmtp`.
 *
 * @module
 */

import { barePipeline } from "./bare.ts";
import { benchFrames, PEER_MODULE } from "./bench_peer.ts";
import { cpuTicks } from "./proc.ts";
import { percentile, round2, round3 } from "./report.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { ZmtpConnection } from "../src/zmtp/connection.ts";

/** One transport's figures in one round. */
export interface TransportRow {
  readonly transport: "libzmq" | "zmtp";
  /** One round trip at a time, back to back: p50 and p99 in ms. */
  readonly trip_p50_ms: number;
  readonly trip_p99_ms: number;
  /** CPU of both processes per round trip, µs. */
  readonly trip_cpu_us: number;
  /** One way, as fast as it goes: messages per second. */
  readonly push_per_s: number;
  /** CPU of both processes per message one way, µs. */
  readonly push_cpu_us: number;
}

/** µs of CPU in one of /proc's clock ticks. */
const TICK_US = 10_000;
/** Clock ticks of CPU (user and system) the processes have used. */
const cpuOf = (pids: number[]) => pids.reduce((n, p) => n + cpuTicks(p), 0);

function peer(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PEER_MODULE, ...args],
    stdin: "piped",
    stdout: "null",
  }).spawn();
}

/** The first connection to `l`, or an error if `p`, which should make it, exits first. */
async function acceptFrom(l: Deno.Listener, p: Deno.ChildProcess): Promise<Deno.Conn> {
  const exited = p.status.then(() => null);
  const c = await Promise.race([l.accept(), exited]);
  l.close();
  if (!c) throw new Error("transport: the ZMTP peer exited before it connected");
  return c;
}

async function stop(p: Deno.ChildProcess): Promise<void> {
  await p.stdin.close().catch(() => {});
  await p.status;
}

/** ZMTP as `socketType` over `p`'s connection to `l`; `p` is stopped if that fails. */
async function openFrom(
  l: Deno.Listener,
  p: Deno.ChildProcess,
  socketType: "ROUTER" | "PULL",
): Promise<ZmtpConnection> {
  try {
    return await ZmtpConnection.open(await acceptFrom(l, p), { socketType });
  } catch (e) {
    await stop(p);
    throw e;
  }
}

interface Trips {
  rtt: number[];
  cpuUs: number;
}

/** Round trips to an echo peer; `trip` sends and resolves on the answer. */
async function timeTrips(pids: number[], n: number, trip: () => Promise<void>): Promise<Trips> {
  // No timer per trip: a pending timer changes how the libzmq reactor waits (a trip then took 10
  // ms). A peer that dies ends the trip with an error instead (see the callers).
  for (let i = 0; i < Math.min(n, 1000); i++) await trip(); // warm up
  const before = cpuOf(pids);
  const rtt: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await trip();
    rtt.push(performance.now() - t);
  }
  return { rtt: rtt.sort((a, b) => a - b), cpuUs: ((cpuOf(pids) - before) * TICK_US) / n };
}

async function libzmqTrips(dir: string, n: number): Promise<Trips> {
  // Both ends wait for messages in-thread, as the roles do.
  const r = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  const router = r.socket("ROUTER");
  const ep = `ipc://${dir}/lz-trip`;
  await router.bind(ep);
  const p = peer(["echo", ep, "in-thread"]);
  // The peer's exit closes the socket, which ends the iterator a trip waits on.
  void p.status.then(() => router.close());
  try {
    const it = router.messages();
    const hello = await it.next();
    if (hello.done) throw new Error("transport: the libzmq echo peer is gone");
    const id = hello.value[0];
    const frames = benchFrames();
    return await timeTrips([Deno.pid, p.pid], n, async () => {
      await router.send([id, ...frames]);
      if ((await it.next()).done) throw new Error("transport: the libzmq echo peer is gone");
    });
  } finally {
    await stop(p);
    await r.close();
  }
}

async function zmtpTrips(dir: string, n: number): Promise<Trips> {
  const path = `${dir}/z-trip`;
  const l = Deno.listen({ transport: "unix", path });
  const p = peer(["zmtp-echo", path]);
  const z = await openFrom(l, p, "ROUTER");
  let answered = () => {};
  let ended = false;
  let gone = () => {};
  const listening = z.listen(() => answered()).finally(() => {
    ended = true;
    gone();
  });
  try {
    const frames = benchFrames();
    return await timeTrips([Deno.pid, p.pid], n, () => {
      const done = new Promise<void>((resolve, reject) => {
        answered = resolve;
        gone = () => reject(new Error("transport: the ZMTP echo peer is gone"));
      });
      if (ended) gone();
      else z.send(frames);
      return done;
    });
  } finally {
    z.close();
    await listening.catch(() => {});
    await stop(p);
  }
}

interface Push {
  perS: number;
  cpuUs: number;
}

/**
 * Counts `n` one-way messages (`onMessage`; `all` settles on the last): the rate from the first to
 * the last, and the CPU per message of this process since `before` (ticks) and of the pusher `pid`.
 */
function arrivals(n: number, pid: number, before: number) {
  let count = 0, first = 0, last = 0, peerTicks = 0;
  let done = () => {};
  const all = new Promise<void>((resolve) => done = resolve);
  return {
    all,
    get count() {
      return count;
    },
    onMessage: () => {
      if (count++ === 0) first = performance.now();
      if (count === n) {
        last = performance.now();
        peerTicks = cpuTicks(pid);
        done();
      }
    },
    result: (): Push => ({
      perS: (n - 1) / ((last - first) / 1000),
      cpuUs: ((cpuTicks(Deno.pid) - before + peerTicks) * TICK_US) / n,
    }),
  };
}

async function libzmqPush(dir: string, n: number): Promise<Push> {
  const r = new Reactor();
  const pull = r.socket("PULL", { receiveHighWaterMark: 100_000 });
  const ep = `ipc://${dir}/lz-push`;
  await pull.bind(ep);
  const before = cpuTicks(Deno.pid);
  const p = peer(["push", ep, String(n), "3"]);
  try {
    const c = arrivals(n, p.pid, before);
    pull.onMessage(c.onMessage);
    await Promise.race([
      c.all,
      // The pusher waits for its stdin to close once it has sent all: its exit before the last
      // message came means it died.
      p.status.then(() => {
        throw new Error(`transport: the libzmq pusher died after ${c.count} of ${n}`);
      }),
    ]);
    return c.result();
  } finally {
    await stop(p);
    await r.close();
  }
}

async function zmtpPush(dir: string, n: number): Promise<Push> {
  const path = `${dir}/z-push`;
  const l = Deno.listen({ transport: "unix", path });
  const before = cpuTicks(Deno.pid);
  const p = peer(["zmtp-push", path, String(n), "3"]);
  const z = await openFrom(l, p, "PULL");
  try {
    const c = arrivals(n, p.pid, before);
    await Promise.race([
      c.all,
      z.listen(c.onMessage).then(() => {
        throw new Error(`the ZMTP pusher left after ${c.count} of ${n}`);
      }),
    ]);
    return c.result();
  } finally {
    z.close();
    await stop(p);
  }
}

/**
 * One round: both transports, `trips` round trips and `messages` one-way messages each, `zmtpFirst`
 * or not; its sockets in a temporary directory (under `parent` if given: the peers' command lines
 * name it).
 */
export async function transportRound(
  trips: number,
  messages: number,
  zmtpFirst: boolean,
  parent?: string,
): Promise<TransportRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "ztr", dir: parent });
  try {
    const rows: TransportRow[] = [];
    for (const t of zmtpFirst ? ["zmtp", "libzmq"] as const : ["libzmq", "zmtp"] as const) {
      const trip = await (t === "zmtp" ? zmtpTrips : libzmqTrips)(dir, trips);
      const push = await (t === "zmtp" ? zmtpPush : libzmqPush)(dir, messages);
      rows.push({
        transport: t,
        trip_p50_ms: round3(percentile(trip.rtt, 50)),
        trip_p99_ms: round3(percentile(trip.rtt, 99)),
        trip_cpu_us: Math.round(trip.cpuUs * 10) / 10,
        push_per_s: Math.round(push.perS),
        push_cpu_us: Math.round(push.cpuUs * 100) / 100,
      });
    }
    return rows;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** {@linkcode bareRow}'s figures. */
export interface BareRow {
  readonly transport: "libzmq" | "zmtp";
  readonly bare_peak_per_s: number;
  readonly bare_one_at_a_time_p50_ms: number;
  /** Per offered rate; `process_cores`: the four relays in the pipeline's order, then the generator. */
  readonly open: readonly {
    rate: number;
    p50_ms: number;
    p99_ms: number;
    cpu_us_per_message: number;
    process_cores: number[];
  }[];
}

/** The bare pipeline with its relays on `transport`: peak, one at a time, and open loops at `rates`. */
export async function bareRow(
  transport: "libzmq" | "zmtp",
  rates: readonly number[],
  seconds: number,
): Promise<BareRow> {
  const b = await barePipeline(rates, seconds, transport);
  return {
    transport,
    bare_peak_per_s: Math.round(b.peak),
    bare_one_at_a_time_p50_ms: round3(percentile(b.sequential, 50)),
    open: b.runs.map((r) => ({
      rate: r.rate,
      p50_ms: round3(percentile(r.rtt, 50)),
      p99_ms: round3(percentile(r.rtt, 99)),
      cpu_us_per_message: Math.round((r.busyCores / r.rate) * 1e6),
      process_cores: r.processCores.map(round2),
    })),
  };
}

if (import.meta.main) {
  const rounds = Number(Deno.args[0] ?? 3);
  for (let i = 0; i < rounds; i++) {
    for (const row of await transportRound(20_000, 1_000_000, i % 2 === 1)) {
      console.log(JSON.stringify({ round: i + 1, ...row }));
    }
    for (const t of i % 2 ? ["zmtp", "libzmq"] as const : ["libzmq", "zmtp"] as const) {
      console.log(JSON.stringify({ round: i + 1, ...await bareRow(t, [10_000, 50_000], 3) }));
    }
  }
}
