/**
 * The load generator of the bench's relay pipelines (`bare.ts`, `tools/floor.ts`): single-frame
 * messages whose first 8 bytes are their index (float64), pushed to a pipeline's input and read
 * back from its published output, one at a time, closed loop and open loop, as the flows'
 * generator does; and the relay processes' end.
 *
 * @module
 */

import type { Reactor, ReactorSocket } from "../src/zmq/reactor.ts";
import { delay, TIMED_OUT, withTimeout } from "../src/_async.ts";
import { CLOSED_LOOP_WINDOW, nap, pace } from "./generator.ts";

const HWM = { sendHighWaterMark: 1_000_000, receiveHighWaterMark: 1_000_000 };

/** What {@linkcode RelayLoad.closed} counted. */
export interface ClosedLoop {
  /** Messages back after `countFrom` and before the loop's end. */
  readonly counted: number;
  /** Messages back while the outstanding ones were drained after the loop's end. */
  readonly drained: number;
}

/** Drives a relay pipeline from `input` (PUSH) to `output` (SUB) with copies of one message. */
export class RelayLoad {
  readonly #r: Reactor;
  readonly #push: ReactorSocket;
  readonly #sub: ReactorSocket;
  readonly #msg: Uint8Array;
  readonly #index: DataView;
  #arrived = (_i: number, _at: number) => {};
  /** Indexes below -1 for the closed loops: not timed, and each its own. */
  #untimed = -2;

  private constructor(r: Reactor, push: ReactorSocket, sub: ReactorSocket, msg: Uint8Array) {
    this.#r = r;
    this.#push = push;
    this.#sub = sub;
    this.#msg = msg;
    this.#index = new DataView(msg.buffer, msg.byteOffset, 8);
    sub.onMessage((frames) => this.#onFrames(frames));
  }

  /** Connects to the pipeline's ends; `msg` (its first 8 bytes are overwritten) is what is sent. */
  static async connect(r: Reactor, input: string, output: string, msg: Uint8Array): Promise<RelayLoad> {
    const push = r.socket("PUSH", HWM);
    await push.connect(input);
    const sub = r.socket("SUB", HWM);
    await sub.subscribe("");
    await sub.connect(output);
    return new RelayLoad(r, push, sub, msg);
  }

  #onFrames(frames: Uint8Array[]): void {
    const f = frames[0];
    this.#arrived(new DataView(f.buffer, f.byteOffset, 8).getFloat64(0, true), performance.now());
  }

  /** Through the reactor (it may be polling on another thread). */
  #send(i: number): Promise<void> {
    this.#index.setFloat64(0, i, true);
    return this.#push.send([this.#msg]);
  }

  /**
   * Sends probes (index -1) until one comes back (a PUB drops what it publishes before the SUB
   * has joined), up to 10 s, then waits `settleMs`; throws naming `what` if none came.
   */
  async waitUp(what: string, settleMs: number): Promise<void> {
    let up = false;
    this.#arrived = () => (up = true);
    for (let i = 0; i < 500 && !up; i++) {
      await this.#send(-1);
      await delay(20);
    }
    if (!up) throw new Error(`${what} did not come up in 10 s`);
    await delay(settleMs);
  }

  /** `n` messages one at a time, back to back: their round trips in ms, sorted. */
  async oneAtATime(n: number): Promise<number[]> {
    const rtt: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const done = new Promise<void>((resolve) => (this.#arrived = (j) => j === i && resolve()));
      await this.#send(i);
      await done;
      rtt.push(performance.now() - t);
    }
    return rtt.sort((a, b) => a - b);
  }

  /**
   * A closed loop for `ms` on the reactor's turn, {@linkcode CLOSED_LOOP_WINDOW} outstanding, each
   * message with an index of its own (a relay that keeps requests by index keeps them all), counting
   * what comes back from `countFrom` ms on; then the outstanding ones drained (up to 10 s).
   */
  closed(ms: number, countFrom = 0): Promise<ClosedLoop> {
    const push = this.#push.raw, sub = this.#sub.raw, msg = this.#msg, index = this.#index;
    return this.#r.exec(() => {
      const start = performance.now();
      const countAt = start + countFrom, end = start + ms;
      let outstanding = 0, counted = 0, drained = 0;
      for (let now = start; now < end; now = performance.now()) {
        for (; outstanding < CLOSED_LOOP_WINDOW; outstanding++) {
          index.setFloat64(0, this.#untimed, true);
          if (!push.trySend([msg])) break;
          this.#untimed--;
        }
        let got = 0;
        while (sub.tryReceive()) got++;
        outstanding -= got;
        if (now >= countAt) counted += got;
        if (!got) nap(0.02);
      }
      for (const until = performance.now() + 10_000; outstanding > 0 && performance.now() < until;) {
        if (sub.tryReceive()) {
          outstanding--;
          drained++;
        } else nap(0.05);
      }
      return { counted, drained };
    });
  }

  /** An open loop at `rate`/s for `seconds` on the reactor's turn: the round trips in ms, sorted. */
  open(rate: number, seconds: number): Promise<number[]> {
    const push = this.#push.raw, sub = this.#sub.raw, msg = this.#msg, index = this.#index;
    return this.#r.exec(() => {
      const sentAt = new Float64Array(Math.round(rate * seconds));
      const rtt: number[] = [];
      this.#arrived = (i, at) => {
        if (i >= 0 && i < sentAt.length) rtt.push(at - sentAt[i]);
      };
      pace(rate, sentAt, () => rtt.length >= sentAt.length, {
        add: (i) => {
          index.setFloat64(0, i, true);
          while (!push.trySend([msg])) nap(0.05);
        },
        flush: () => {},
        poll: () => {
          let got = 0;
          for (let f = sub.tryReceive(); f; f = sub.tryReceive()) {
            this.#onFrames(f);
            got++;
          }
          return got;
        },
      });
      return rtt.sort((a, b) => a - b);
    });
  }
}

/**
 * Ends relay processes: closes their stdin and waits up to 5 s each, then kills what is left (a
 * relay blocked in a send, its peer gone, never sees stdin close).
 */
export async function stopRelays(relays: readonly Deno.ChildProcess[]): Promise<void> {
  for (const p of relays) {
    await p.stdin.close().catch(() => {});
    if (await withTimeout(p.status, 5000) === TIMED_OUT) {
      p.kill("SIGKILL");
      await p.status;
    }
  }
}
