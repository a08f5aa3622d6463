/**
 * Every role's counters, published once a second on a reserved topic through the Integration
 * Manager (PROTOCOL.md, _Metrics_), so that any host that subscribes sees them (the HTTP
 * gateway's `/readyz` and `/metrics`, and `stats` through {@linkcode collectMetrics}).
 *
 * A role sends its snapshot to the Subject as a ping on {@linkcode METRICS_TOPIC}: the Subject
 * hands pings to the Integration Manager unchanged, like the subscription pings of clients, so
 * no role needs a socket of its own towards the IM. A worker sends it on the worker endpoint as a
 * `METRICS` message instead (with CURVE, a worker's key may join that endpoint only), which the
 * Subject publishes as the same ping. Sends never block: a snapshot the socket
 * cannot take now (no Subject) is dropped; the next second brings a fresh one.
 *
 * @module
 */

import process from "node:process";
import { Context } from "../zmq/socket.ts";
import { MonitorEvent } from "../zmq/ffi.ts";
import { monitorSocket } from "../zmq/monitor.ts";
import { Reactor } from "../zmq/reactor.ts";
import { connectRedialing, type CurveClientKeys, curveClientOptions, isTcp } from "../zmq/curve.ts";
import { encodeHeader, text, utf8 } from "../wire/protocol.ts";
import { delay } from "../_async.ts";
import { CONTROL_FRAMES } from "../wire/control.ts";

/** The topic of metrics publications (a ping topic: flow, sender, context, decorator empty). */
export const METRICS_TOPIC = "~~~~ping-metrics";

/** What a role publishes each second. */
export interface RoleMetrics {
  /** `subject`, `worker`, `integration-manager`, `gateway`. */
  readonly role: string;
  /** Its process id. */
  readonly pid: number;
  /** Its host name. */
  readonly host: string;
  /** Milliseconds since the epoch, when the snapshot was taken. */
  readonly at: number;
  /** CPU seconds the process used (user + system). */
  readonly cpuSeconds: number;
  /** Its resident set size in bytes. */
  readonly rssBytes: number;
  /** The role's own counters (its `stats()`). */
  readonly counters: Record<string, unknown>;
}

/** Options of {@linkcode publishMetrics}. */
export interface PublishMetricsOptions {
  /** The Subject's request endpoint (`subject_pull_address`), or its worker endpoint with `via: "workers"`. */
  readonly subject: string;
  /**
   * `services`: pings on the request endpoint; `workers`: `METRICS` messages on the worker
   * endpoint (a worker's key may join only that one). @default {"services"}
   */
  readonly via?: "services" | "workers";
  /** This process's CURVE keys, for a tcp endpoint of a deployment with keys. */
  readonly curve?: CurveClientKeys;
  /** The role's name. */
  readonly role: string;
  /** The role's counters now. */
  readonly snapshot: () => unknown;
  /** Milliseconds between snapshots. @default {1000} */
  readonly interval?: number;
}

/** The metrics of this process now, with `counters`. */
export function roleMetrics(role: string, counters: unknown): RoleMetrics {
  const cpu = process.cpuUsage();
  return {
    role,
    pid: Deno.pid,
    host: Deno.hostname(),
    at: Date.now(),
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    rssBytes: Deno.memoryUsage().rss,
    counters: (counters ?? {}) as Record<string, unknown>,
  };
}

/**
 * Publishes the role's metrics every `interval` ms until the returned function is called.
 *
 * @example
 * ```ts ignore
 * import { publishMetrics } from "./metrics.ts";
 * const stop = publishMetrics({ subject: "ipc:///tmp/zmanager-0/subject", role: "worker", snapshot: () => ({}) });
 * stop();
 * ```
 */
export function publishMetrics(options: PublishMetricsOptions): () => void {
  const ctx = new Context();
  const sock = ctx.socket("DEALER", {
    ...curveClientOptions(options.curve, options.subject),
    sendHighWaterMark: 2,
    receiveHighWaterMark: 1,
    linger: 0,
  });
  const id = `metrics-${options.role}-${Deno.pid}`;
  const header = encodeHeader({ v: 1, id, k: "ping" }).slice();
  const topic = utf8(METRICS_TOPIC).slice();
  // With keys on tcp, libzmq 4.3 gives up a connection whose handshake was refused (a key not on
  // the allowlist yet): a monitor tells, and the next snapshot dials again (as clients do).
  const monitor = options.curve && isTcp(options.subject) ? ctx.socket("PAIR", { linger: 0 }) : undefined;
  try {
    if (monitor) {
      const at = `inproc://zmanager-metrics-monitor-${Deno.pid}`;
      sock.monitor(at, HANDSHAKE_FAILED);
      monitor.connect(at);
    }
    sock.connect(options.subject);
  } catch {
    /* a bad endpoint: the role itself reports it */
  }
  const send = () => {
    try {
      let refused = false;
      while (monitor?.tryReceive()) refused = true;
      if (refused) {
        try {
          sock.disconnect(options.subject);
        } catch { /* already gone with the refused session */ }
        sock.connect(options.subject);
      }
      while (sock.tryReceive()) { /* the Subject's acknowledgements: not needed */ }
      const values = utf8(JSON.stringify(roleMetrics(options.role, options.snapshot()))).slice();
      sock.trySend(options.via === "workers" ? [CONTROL_FRAMES.METRICS, values] : [topic, header, values]);
    } catch { /* closed, or no Subject */ }
  };
  const timer = setInterval(send, options.interval ?? 1000);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    void ctx.terminate(100);
  };
}

const HANDSHAKE_FAILED = MonitorEvent.HANDSHAKE_FAILED_AUTH | MonitorEvent.HANDSHAKE_FAILED_PROTOCOL |
  MonitorEvent.HANDSHAKE_FAILED_NO_DETAIL;

/** Options of {@linkcode collectMetrics}. */
export interface CollectMetricsOptions {
  /** The Integration Manager's publish endpoint (`integration_manager_pub_address`). */
  readonly publisher: string;
  /** This host's CURVE keys, for a tcp endpoint of a deployment with keys. */
  readonly curve?: CurveClientKeys;
  /**
   * Milliseconds to listen from the handshake with the IM (each role publishes once a second);
   * without a handshake within this long, it gives up. @default {1500}
   */
  readonly window?: number;
}

/** What {@linkcode collectMetrics} heard. */
export interface CollectedMetrics {
  /** The latest snapshot of each role process heard, by role, host and pid. */
  readonly roles: RoleMetrics[];
  /** Whether a connection to the IM completed its handshake. */
  readonly reached: boolean;
  /** Whether the IM refused this host's key (ZAP) or the handshake failed (wrong server key, plaintext). */
  readonly refused: boolean;
}

/** The default of {@linkcode CollectMetricsOptions.window}. */
export const DEFAULT_METRICS_WINDOW = 1500;

/** The least time {@linkcode collectMetrics} waits for the handshake, whatever its window. */
export const METRICS_CONNECT_MS = 1000;

/**
 * Subscribes to {@linkcode METRICS_TOPIC} at the Integration Manager for `window` ms and keeps
 * the latest snapshot of each role process (`stats` uses it, from any host).
 *
 * @example
 * ```ts ignore
 * import { collectMetrics } from "./metrics.ts";
 * const { roles } = await collectMetrics({ publisher: "ipc:///tmp/zmanager-0/im-pub", window: 1500 });
 * for (const r of roles) console.log(r.role, r.host, r.pid, r.counters);
 * ```
 */
export async function collectMetrics(options: CollectMetricsOptions): Promise<CollectedMetrics> {
  const reactor = new Reactor();
  const roles = new Map<string, RoleMetrics>();
  const window = options.window ?? DEFAULT_METRICS_WINDOW;
  let reachedAt: number | undefined, refused = false;
  try {
    const sub = reactor.socket("SUB", {
      ...curveClientOptions(options.curve, options.publisher),
      receiveHighWaterMark: 1000,
      linger: 0,
    });
    await monitorSocket(reactor, sub, HANDSHAKE_FAILED | MonitorEvent.HANDSHAKE_SUCCEEDED, (event) => {
      if (event === MonitorEvent.HANDSHAKE_SUCCEEDED) reachedAt ??= performance.now();
      else refused = true;
    });
    sub.onMessage((frames) => {
      if (frames.length !== 3 || text(frames[0]) !== METRICS_TOPIC) return;
      try {
        const m = JSON.parse(text(frames[2])) as RoleMetrics;
        if (typeof m?.role !== "string" || typeof m.pid !== "number") return;
        roles.set(`${m.role} ${m.host} ${m.pid}`, m);
      } catch { /* not a snapshot */ }
    });
    await sub.subscribe(METRICS_TOPIC);
    // With keys, dial again after a refused handshake (a key being added to the allowlist).
    if (options.curve) await connectRedialing(reactor, sub, options.publisher);
    else await sub.connect(options.publisher);
    // `window` ms from the handshake (a slow one does not eat the window); no handshake within
    // `window` ms, and at least METRICS_CONNECT_MS: no IM there.
    await delay(Math.max(window, METRICS_CONNECT_MS));
    if (reachedAt !== undefined) await delay(Math.max(0, reachedAt + window - performance.now()));
  } finally {
    await reactor.close();
  }
  const reached = reachedAt !== undefined;
  return { roles: [...roles.values()], reached, refused: refused && !reached };
}
