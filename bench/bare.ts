/**
 * The bare pipeline: the deployment's shape with relays that only forward, to show what this
 * machine's wake-ups cost before any framework work.
 *
 * @module
 */

import { PEER_MODULE, REQUEST_BYTES } from "./bench_peer.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { delay, TIMED_OUT, withTimeout } from "../src/_async.ts";
import { CLOSED_LOOP_WINDOW, nap, pace } from "./generator.ts";
import { withCpu } from "./proc.ts";
import { sum } from "./report.ts";

const PEER = PEER_MODULE;

/** Figures of {@linkcode barePipeline}. */
export interface BareRun {
  /** One message at a time, back to back: round trips in ms, sorted. */
  sequential: number[];
  /**
   * Closed loop, {@linkcode CLOSED_LOOP_WINDOW} messages outstanding like the flows' peak: messages
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
    // The peak: as many outstanding as the flows' closed loop, numbered -1 (the open loops below
    // take none of them for theirs), then drained before those start.
    const peak = await r.exec(() => {
      index.setFloat64(0, -1, true);
      const warmUntil = performance.now() + 1000;
      const end = warmUntil + seconds * 1000;
      let outstanding = 0, counted = 0;
      for (let now = performance.now(); now < end; now = performance.now()) {
        while (outstanding < CLOSED_LOOP_WINDOW && push.raw.trySend([msg])) outstanding++;
        let got = 0;
        while (sub.raw.tryReceive()) got++;
        outstanding -= got;
        if (now >= warmUntil) counted += got;
        if (!got) nap(0.02);
      }
      for (const until = performance.now() + 10_000; outstanding > 0 && performance.now() < until;) {
        if (sub.raw.tryReceive()) outstanding--;
        else nap(0.05);
      }
      return counted / seconds;
    });
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
      runs.push({ rate, rtt, busyCores: sum(cores), processCores: cores });
    }
    return { sequential: sequential.sort((a, b) => a - b), peak, runs };
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
