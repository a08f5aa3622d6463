/**
 * `GET /metrics`: the roles' metrics (as published on `~~~~ping-metrics`) and the gateway's own,
 * in the Prometheus text exposition format (version 0.0.4). Pure.
 *
 * Written by hand: npm:prom-client (the maintained Node library) keeps its own counters and
 * histograms and exports what its process observed; the figures here are already counted by
 * other processes (the Subject's histograms, each role's counters) and only need printing, which
 * prom-client has no way to take (a histogram cannot be set from bucket counts).
 *
 * @module
 */

import type { RoleMetrics } from "../roles/metrics.ts";
import type { RequestFigures } from "../roles/request_metrics.ts";
import type { ConnectionCounters } from "./connections.ts";

/** The content type of the text format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string | number>;

class Family {
  readonly lines: string[] = [];
  constructor(
    readonly name: string,
    readonly type: "counter" | "gauge" | "histogram",
    readonly help: string,
  ) {}
  add(labels: Labels, value: number, suffix = ""): void {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`).join(",");
    this.lines.push(`${this.name}${suffix}${l ? `{${l}}` : ""} ${formatValue(value)}`);
  }
  render(): string {
    if (!this.lines.length) return "";
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n${this.lines.join("\n")}\n`;
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/** The gateway's own figures for {@linkcode renderMetrics}. */
export interface GatewayFigures {
  /** Responses by status. */
  readonly responses: Record<string, number>;
  /** Open event streams and WebSockets. */
  readonly streams: number;
  /** Clients cut off for not reading. */
  readonly cutOff: number;
  /** The HTTP server's connections. */
  readonly connections?: ConnectionCounters;
}

/**
 * The exposition of every live role's metrics and the gateway's own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderMetrics } from "./prometheus.ts";
 * const text = renderMetrics([], { responses: { "200": 3 }, streams: 0, cutOff: 0 });
 * assert.match(text, /^zmanager_gateway_responses_total\{status="200"\} 3$/m);
 * ```
 */
export function renderMetrics(roles: readonly RoleMetrics[], gateway?: GatewayFigures): string {
  const requests = new Family(
    "zmanager_requests_total",
    "counter",
    "Final publications by flow and outcome (done or an error code), counted in the Subject.",
  );
  const duration = new Family(
    "zmanager_request_duration_seconds",
    "histogram",
    "Seconds from a request's acceptance by the Subject to its final publication.",
  );
  const workers = new Family("zmanager_workers", "gauge", "Workers connected to the Subject.");
  const credit = new Family(
    "zmanager_worker_credit_available",
    "gauge",
    "Steps the Subject may still send to its workers.",
  );
  const inFlight = new Family("zmanager_steps_in_flight", "gauge", "Steps at workers (credit in use).");
  const pending = new Family(
    "zmanager_requests_pending",
    "gauge",
    "Requests the Subject holds waiting for worker credit.",
  );
  const paused = new Family("zmanager_paused_flows", "gauge", "Flows paused at an @ASYNC step.");
  const dropped = new Family("zmanager_dropped_total", "counter", "Messages dropped, by role and reason.");
  const published = new Family(
    "zmanager_published_total",
    "counter",
    "Publications, by role (the Subject's sent to the IM; the IM's published).",
  );
  const steps = new Family("zmanager_worker_steps_total", "counter", "Steps run, by worker process.");
  const active = new Family("zmanager_worker_steps_active", "gauge", "Steps running now, by worker process.");
  const cpu = new Family(
    "zmanager_process_cpu_seconds_total",
    "counter",
    "CPU seconds (user and system) used, by role process.",
  );
  const rss = new Family(
    "zmanager_process_resident_memory_bytes",
    "gauge",
    "Resident set size, by role process.",
  );
  const version = new Family(
    "zmanager_config_version",
    "gauge",
    "The configuration version a role process runs (the Subject: new requests start on it; a worker: the newest it holds).",
  );
  const up = new Family(
    "zmanager_role_up",
    "gauge",
    "1 for each role process whose metrics arrived in the last 3.5 s.",
  );

  const sorted = [...roles].sort((a, b) => a.role.localeCompare(b.role) || a.pid - b.pid);
  for (const r of sorted) {
    const who = { role: r.role, pid: r.pid, host: r.host };
    up.add(who, 1);
    cpu.add(who, num(r.cpuSeconds));
    rss.add(who, num(r.rssBytes));
    const c = r.counters;
    if (typeof c.version === "number") version.add({ role: r.role, pid: r.pid }, c.version);
    if (r.role === "subject") {
      workers.add({ pid: r.pid }, num(c.workers));
      credit.add({ pid: r.pid }, num(c.credit));
      inFlight.add({ pid: r.pid }, num(c.inFlight));
      pending.add({ pid: r.pid }, num(c.pending));
      paused.add({ pid: r.pid }, num(c.paused));
      published.add({ role: r.role, pid: r.pid }, num(c.published));
      const d = (c.dropped ?? {}) as Record<string, unknown>;
      for (const [reason, n] of Object.entries(d).sort()) {
        dropped.add({ role: r.role, pid: r.pid, reason }, num(n));
      }
      const figures = c.requests as RequestFigures | undefined;
      for (const [flow, f] of Object.entries(figures?.flows ?? {}).sort()) {
        for (const [outcome, n] of Object.entries(f.outcomes).sort()) requests.add({ flow, outcome }, n);
        let cumulative = 0;
        figures!.bounds.forEach((le, i) => {
          cumulative += f.buckets[i] ?? 0;
          duration.add({ flow, le: String(le) }, cumulative, "_bucket");
        });
        cumulative += f.buckets[figures!.bounds.length] ?? 0;
        duration.add({ flow, le: "+Inf" }, cumulative, "_bucket");
        duration.add({ flow }, f.sum, "_sum");
        duration.add({ flow }, f.count, "_count");
      }
    } else if (r.role === "integration-manager") {
      published.add({ role: r.role, pid: r.pid }, num(c.published));
      dropped.add({ role: r.role, pid: r.pid, reason: "malformed" }, num(c.dropped) - num(c.oversize));
      dropped.add({ role: r.role, pid: r.pid, reason: "oversize" }, num(c.oversize));
      dropped.add({ role: r.role, pid: r.pid, reason: "subscriber_full" }, num(c.subscriberFull));
    } else if (r.role === "worker") {
      steps.add({ pid: r.pid }, num(c.steps));
      active.add({ pid: r.pid }, num(c.active));
    }
  }
  const families = [
    requests,
    duration,
    workers,
    credit,
    inFlight,
    pending,
    paused,
    dropped,
    published,
    steps,
    active,
    cpu,
    rss,
    version,
    up,
  ];
  if (gateway) {
    const responses = new Family(
      "zmanager_gateway_responses_total",
      "counter",
      "HTTP responses of the gateway, by status.",
    );
    for (const [status, n] of Object.entries(gateway.responses).sort()) responses.add({ status }, n);
    const streams = new Family("zmanager_gateway_streams", "gauge", "Open event streams and WebSockets.");
    streams.add({}, gateway.streams);
    const cut = new Family(
      "zmanager_gateway_clients_cut_off_total",
      "counter",
      "Event-stream and WebSocket clients cut off for not reading.",
    );
    cut.add({}, gateway.cutOff);
    families.push(responses, streams, cut);
    const c = gateway.connections;
    if (c) {
      const open = new Family("zmanager_gateway_connections", "gauge", "Open HTTP connections.");
      open.add({}, c.open);
      const closed = new Family(
        "zmanager_gateway_connections_closed_total",
        "counter",
        "HTTP connections the gateway closed, by why: refused at accept (full, per_ip), no request's headers in time on a new or a kept-alive connection (header_timeout), requests whose body came too slowly (body_timeout), failed accepts (accept_error), reset by their client before they were accepted (reset).",
      );
      closed.add({ reason: "full" }, c.refusedFull);
      closed.add({ reason: "per_ip" }, c.refusedAddress);
      closed.add({ reason: "header_timeout" }, c.timedOut);
      closed.add({ reason: "body_timeout" }, c.bodyTimedOut);
      closed.add({ reason: "accept_error" }, c.acceptErrors);
      closed.add({ reason: "reset" }, c.resetBeforeAccept);
      // Under Deno.serve (`http_connection_limits = off`) the open connections are not known.
      families.push(...(c.limited === false ? [] : [open]), closed);
    }
  }
  return families.map((f) => f.render()).join("");
}
