/**
 * The bare pipeline: the deployment's shape with relays that only forward, to show what this
 * machine's wake-ups cost before any framework work.
 *
 * @module
 */

import { PEER_MODULE, REQUEST_BYTES } from "./bench_peer.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { RelayLoad, stopRelays } from "./relay_load.ts";
import { withCpu } from "./proc.ts";
import { sum } from "./report.ts";

const PEER = PEER_MODULE;

/** Figures of {@linkcode barePipeline}. */
export interface BareRun {
  /** One message at a time, back to back: round trips in ms, sorted. */
  sequential: number[];
  /**
   * Closed loop, `CLOSED_LOOP_WINDOW` (`generator.ts`) messages outstanding like the flows' peak: messages
   * through the whole pipeline per second, over `seconds` after a second of warm-up.
   */
  peak: number;
  /**
   * Per offered rate: round trips in ms (sorted), the CPU of its processes together (cores), and
   * each process's: the four relays in the pipeline's order, then the generator.
   */
  runs: { rate: number; rtt: number[]; busyCores: number; processCores: number[] }[];
}

/**
 * The shape of a deployment with no framework work in it: this process pushes to a relay in the
 * Subject's place, which pushes to two relays in the workers' places, which push to a relay in
 * the Integration Manager's, which publishes back to this process (four hops, five processes).
 * Each relay is libzmq's own loop called from Deno (`bench_peer.ts relay`: `zmq_poll` in-thread,
 * then `zmq_recv`/`zmq_send` on one buffer, no reactor, no routing); this process paces and
 * reads as the flows' generator does. Run open loop at the offered rates of the flows, it shows
 * what this machine's wake-ups cost before any framework work: the floor of the latency rows.
 * `transport: "zmtp"` runs the relays over ZMTP on Deno's own sockets instead (`src/zmtp`; the
 * generator stays libzmq): the same shape without libzmq's I/O threads in the relays.
 */
export async function barePipeline(
  rates: readonly number[],
  seconds: number,
  transport: "libzmq" | "zmtp" = "libzmq",
): Promise<BareRun> {
  const dir = await Deno.makeTempDir({ prefix: "zmp" });
  const ep = (name: string) => `ipc://${dir}/${name}`;
  // The relays' endpoints: libzmq's, or the same Unix socket paths for ZMTP on Deno's sockets
  // (`bench_peer.ts zmtp-relay`); the generator below is libzmq either way.
  const at = (name: string) => (transport === "zmtp" ? `${dir}/${name}` : ep(name));
  const stages = [
    [`@${at("in")}`, `@${at("work")}`, "PUSH"],
    [at("work"), at("im"), "PUSH"],
    [at("work"), at("im"), "PUSH"],
    [`@${at("im")}`, `@${at("out")}`, "PUB"],
  ].map((args) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", PEER, transport === "zmtp" ? "zmtp-relay" : "relay", ...args],
      stdin: "piped",
    }).spawn()
  );
  const r = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  try {
    const load = await RelayLoad.connect(r, ep("in"), ep("out"), new Uint8Array(REQUEST_BYTES).fill(120));
    await load.waitUp("the bare pipeline", 100);
    const sequential = await load.oneAtATime(500);
    // The peak: as many outstanding as the flows' closed loop, counted after a second of warm-up,
    // then drained before the open loops start.
    const peak = (await load.closed(1000 + seconds * 1000, 1000)).counted / seconds;
    const pids = [...stages.map((p) => p.pid), Deno.pid];
    const runs: BareRun["runs"] = [];
    for (const rate of rates) {
      const [rtt, cores] = await withCpu(pids, () => load.open(rate, seconds));
      runs.push({ rate, rtt, busyCores: sum(cores), processCores: cores });
    }
    return { sequential, peak, runs };
  } finally {
    await r.close();
    await stopRelays(stages);
    await Deno.remove(dir, { recursive: true });
  }
}
