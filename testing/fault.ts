/**
 * Fault injection on the wire: a proxy that sits on one hop of a deployment and drops,
 * duplicates or delays (and, with jitter, reorders) the messages it forwards. With
 * {@linkcode killRole} in `deployment.ts` it is the toolkit of the reliability tests.
 *
 * - `router`: for the hops where peers connect DEALER sockets to a bound ROUTER (services
 *   and workers to the Subject). The proxy binds a ROUTER at `front`; for each peer that
 *   connects it opens its own DEALER to `back`, so the far end still sees one peer each.
 * - `pull`: for PUSH→PULL hops (the Subject to the Integration Manager). The proxy binds a
 *   PULL at `front` and pushes to `back`.
 *
 * Point the peers at `front` instead of the real endpoint (e.g. start workers with
 * `--subject-worker-address` set to it).
 *
 * @example
 * ```ts ignore
 * import { FaultProxy } from "./fault.ts";
 * const proxy = await FaultProxy.start({
 *   kind: "router",
 *   front: "ipc:///tmp/zmd/faulty",
 *   back: "ipc:///tmp/zmd/workers",
 *   policy: { drop: 0.01, duplicate: 0.01, jitterMs: 3 },
 * });
 * // … run the load; then
 * console.log(proxy.stats());
 * await proxy.close();
 * ```
 *
 * @module
 */

import { Reactor, type ReactorSocket } from "../src/zmq/reactor.ts";

/** What happens to the messages one way through a proxy. */
export interface FaultPolicy {
  /** Probability (0 to 1) that a message is dropped. @default {0} */
  readonly drop?: number;
  /** Probability (0 to 1) that a message is delivered twice. @default {0} */
  readonly duplicate?: number;
  /** Milliseconds every message is held. @default {0} */
  readonly delayMs?: number;
  /** Up to this many more milliseconds, at random per message (this reorders). @default {0} */
  readonly jitterMs?: number;
}

/** Options of {@linkcode FaultProxy.start}. */
export interface FaultProxyOptions {
  /** `router` (DEALER peers of a ROUTER) or `pull` (PUSH→PULL). */
  readonly kind: "router" | "pull";
  /** The endpoint the proxy binds; peers connect here instead of to `back`. */
  readonly front: string;
  /** The real endpoint. */
  readonly back: string;
  /** Faults on the way from the peers to `back`, and (router only) back again. */
  readonly policy?: FaultPolicy;
  /** Faults towards `back` only (overrides `policy` that way). */
  readonly up?: FaultPolicy;
  /** Faults from `back` towards the peers only (overrides `policy` that way). */
  readonly down?: FaultPolicy;
  /** Seed of the random choices, for a run that can be repeated. @default {1} */
  readonly seed?: number;
}

/** What a proxy did, per direction. */
export interface FaultStats {
  /** Messages received. */
  received: number;
  /** Messages passed on (duplicates included). */
  forwarded: number;
  /** Messages dropped. */
  dropped: number;
  /** Messages delivered twice. */
  duplicated: number;
}

/** A deterministic generator of numbers in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Parses a policy written as `drop=0.02,duplicate=0.05,delay=1,jitter=3` (any subset; `delay`
 * and `jitter` in milliseconds). Returns a reason string when the text is not such a policy.
 *
 * @example
 * ```ts
 * import { parseFaultPolicy } from "./fault.ts";
 * parseFaultPolicy("drop=0.02,jitter=3"); // { drop: 0.02, jitterMs: 3 }
 * ```
 */
export function parseFaultPolicy(text: string): FaultPolicy | string {
  const policy: { drop?: number; duplicate?: number; delayMs?: number; jitterMs?: number } = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [name, value, extra] = part.split("=");
    const n = Number(value);
    if (extra !== undefined || value === undefined || value.trim() === "" || !Number.isFinite(n) || n < 0) {
      return `"${part}" is not name=number (e.g. drop=0.02,duplicate=0.05,delay=1,jitter=3)`;
    }
    if ((name === "drop" || name === "duplicate") && n > 1) {
      return `${name} is a probability between 0 and 1, not ${value}`;
    }
    if (name === "drop") policy.drop = n;
    else if (name === "duplicate") policy.duplicate = n;
    else if (name === "delay") policy.delayMs = n;
    else if (name === "jitter") policy.jitterMs = n;
    else return `unknown fault "${name}": use drop, duplicate, delay or jitter`;
  }
  return policy;
}

const newStats = (): FaultStats => ({ received: 0, forwarded: 0, dropped: 0, duplicated: 0 });

/** A running fault-injecting proxy. */
export class FaultProxy {
  readonly #reactor = new Reactor();
  readonly #random: () => number;
  readonly #up: FaultStats = newStats();
  readonly #down: FaultStats = newStats();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #closed?: Promise<void>;

  private constructor(seed: number) {
    this.#random = seededRandom(seed);
  }

  /** Binds `front` and starts forwarding to `back`. */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const p = new FaultProxy(options.seed ?? 1);
    const up = options.up ?? options.policy ?? {};
    const down = options.down ?? options.policy ?? {};
    const r = p.#reactor;
    if (options.kind === "pull") {
      const pull = r.socket("PULL", { receiveHighWaterMark: 100_000 });
      await pull.bind(options.front);
      const push = r.socket("PUSH", { sendHighWaterMark: 100_000, linger: 1000 });
      await push.connect(options.back);
      pull.onMessage((f) => p.#pass(up, p.#up, f, (m) => p.#send(push, m)));
      return p;
    }
    const router = r.socket("ROUTER", { receiveHighWaterMark: 100_000, sendHighWaterMark: 100_000 });
    await router.bind(options.front);
    const dealers = new Map<string, ReactorSocket>();
    let peers = 0;
    router.onMessage((frames) => {
      const [id, ...body] = frames;
      const key = Array.from(id).join(",");
      let dealer = dealers.get(key);
      if (!dealer) {
        // Keep a readable routing id (a worker's); libzmq's own ids start with a zero byte,
        // which may not be set by hand.
        const name = id[0] === 0 ? `fault-proxy-peer-${++peers}` : new TextDecoder().decode(id);
        const d = r.socket("DEALER", {
          routingId: name,
          sendHighWaterMark: 100_000,
          receiveHighWaterMark: 100_000,
          linger: 1000,
        });
        dealers.set(key, dealer = d);
        d.onMessage((m) => p.#pass(down, p.#down, m, (x) => p.#send(router, [id, ...x])));
        // Messages sent before the connection exists wait in the socket's queue, in order.
        void d.connect(options.back);
      }
      p.#pass(up, p.#up, body, (x) => p.#send(dealer, x));
    });
    return p;
  }

  /** Applies a policy to one message. */
  #pass(
    policy: FaultPolicy,
    stats: FaultStats,
    frames: Uint8Array[],
    forward: (f: Uint8Array[]) => void,
  ): void {
    stats.received++;
    if (policy.drop && this.#random() < policy.drop) {
      stats.dropped++;
      return;
    }
    const copies = policy.duplicate && this.#random() < policy.duplicate ? 2 : 1;
    if (copies === 2) stats.duplicated++;
    // Received frames are views the binding never writes again: they can be held as they are.
    const delay = (policy.delayMs ?? 0) + (policy.jitterMs ? this.#random() * policy.jitterMs : 0);
    const go = () => {
      for (let i = 0; i < copies; i++) {
        stats.forwarded++;
        forward(frames);
      }
    };
    if (delay <= 0) return go();
    const t = setTimeout(() => {
      this.#timers.delete(t);
      go();
    }, delay);
    this.#timers.add(t);
  }

  #send(sock: ReactorSocket, frames: Uint8Array[]): void {
    if (sock.closed) return;
    if (!sock.sendNow(frames)) void sock.send(frames).catch(() => {});
  }

  /** Counters: `up` towards `back`, `down` towards the peers. */
  stats(): { up: FaultStats; down: FaultStats } {
    return { up: { ...this.#up }, down: { ...this.#down } };
  }

  /** Stops forwarding and closes every socket. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      await this.#reactor.close();
    })();
    return this.#closed;
  }

  /** Same as {@linkcode FaultProxy.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
