/**
 * The benchmark's load generator: raw sockets speaking the wire protocol (no client library),
 * in the benchmark's process, closed loop (a window of requests outstanding), one at a time, or
 * open loop paced in-thread at a rate.
 *
 * @module
 */

import { BatchWriter, sendBatch } from "../src/wire/batch.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";
import { utf8 } from "../src/wire/protocol.ts";
import { delay } from "../src/_async.ts";
import { type CurveClientKeys, curveClientOptions } from "../src/zmq/curve.ts";

/** Requests the closed loop keeps outstanding. */
export const CLOSED_LOOP_WINDOW = 2000;

const TILDE = 0x7e, UNDERSCORE = 0x5f, QUOTE = 0x22, ZERO = 0x30, NINE = 0x39;
const ID_PREFIX = new TextEncoder().encode('"id":"b');

/**
 * The epoch and index of a bench request id (`b<epoch>_<index>`) in a header frame, read from
 * the bytes without decoding the frame; `undefined` when the header holds no such id.
 *
 * @example
 * ```ts
 * import { benchId } from "./generator.ts";
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
export function nap(ms: number): void {
  Atomics.wait(NAP, 0, 0, ms);
}

/** What {@linkcode pace} drives: a sender and a reader on raw sockets. */
export interface PacedIo {
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
export function pace(rate: number, sentAt: Float64Array, finished: () => boolean, io: PacedIo): void {
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
  #epoch: number;
  readonly #out = new BatchWriter();
  #flushScheduled = false;

  /** `epoch`: where the ids' epochs start (another generator on the same deployment starts elsewhere). */
  constructor(readonly flow: string, epoch = 0) {
    this.#epoch = epoch;
    this.#topic = utf8(`${flow}~~~~`);
  }

  /** Connects to a deployment's endpoints (with `curve`, as a CURVE client on tcp). */
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
