/**
 * Every role's counters, published once a second on a reserved topic through the Integration
 * Manager (PROTOCOL.md, _Metrics_), so that any host that subscribes sees them (the HTTP
 * gateway's `/readyz` and `/metrics`).
 *
 * A role sends its snapshot to the Subject as a ping on {@linkcode METRICS_TOPIC}: the Subject
 * hands pings to the Integration Manager unchanged, like the subscription pings of clients, so
 * no role needs a socket of its own towards the IM. Sends never block: a snapshot the socket
 * cannot take now (no Subject) is dropped; the next second brings a fresh one.
 *
 * @module
 */

import process from "node:process";
import { Context } from "../zmq/socket.ts";
import { encodeHeader, utf8 } from "../wire/protocol.ts";

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
  /** The Subject's request endpoint (`subject_pull_address`). */
  readonly subject: string;
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
  const sock = ctx.socket("DEALER", { sendHighWaterMark: 2, receiveHighWaterMark: 1, linger: 0 });
  const id = `metrics-${options.role}-${Deno.pid}`;
  const header = encodeHeader({ v: 1, id, k: "ping" }).slice();
  const topic = utf8(METRICS_TOPIC).slice();
  try {
    sock.connect(options.subject);
  } catch {
    /* a bad endpoint: the role itself reports it */
  }
  const send = () => {
    try {
      while (sock.tryReceive()) { /* the Subject's acknowledgements: not needed */ }
      sock.trySend([
        topic,
        header,
        utf8(JSON.stringify(roleMetrics(options.role, options.snapshot()))).slice(),
      ]);
    } catch { /* closed, or no Subject */ }
  };
  const timer = setInterval(send, options.interval ?? 1000);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    void ctx.terminate(100);
  };
}
