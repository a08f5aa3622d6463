/**
 * The gateway's options and counters.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import type { CurveClientKeys } from "../zmq/curve.ts";
import type { TokenEntry } from "./auth.ts";
import type { ConnectionCounters } from "./connections.ts";

/** Options of `Gateway.start`. */
export interface GatewayOptions {
  /** The Subject's request endpoint. */
  readonly subject: string;
  /** The Integration Manager's publish endpoint. */
  readonly publisher: string;
  /** The flows the deployment runs (for `/v1/flows` and the OpenAPI document). */
  readonly flows: ReadonlyMap<string, Flow>;
  /** CURVE keys for tcp endpoints (as {@linkcode Client.connect} takes them); none: plaintext. */
  readonly curve?: CurveClientKeys;
  /** Interface to listen on. @default {"127.0.0.1"} */
  readonly hostname?: string;
  /** Port to listen on; 0 picks a free one. @default {8080} */
  readonly port?: number;
  /** Milliseconds a `POST` waits for the final publication. @default {30000} */
  readonly waitTimeout?: number;
  /** Bytes queued for one event-stream or WebSocket client before it is cut off. @default {1048576} */
  readonly clientBuffer?: number;
  /**
   * Event streams and WebSockets open at once, all callers together: past it, 503 with
   * `Retry-After` (a token's own cap is its `streams`). @default {1000}
   */
  readonly maxStreams?: number;
  /**
   * HTTP connections open at once, all addresses (event streams and WebSockets included, a
   * WebSocket until it closes): past it, a new connection is closed at accept. Lowered to fit the
   * process's open-file limit. @default {10000}
   */
  readonly maxConnections?: number;
  /**
   * `false`: no connection cap and no header or idle timeout, served by `Deno.serve` (about 15 µs
   * less CPU per request), for a gateway behind a proxy that applies its own. @default {true}
   */
  readonly connectionLimits?: boolean;
  /** Of them, from one remote address; 0: no cap per address. @default {0} */
  readonly maxConnectionsPerAddress?: number;
  /** Milliseconds a new connection has to send its first request's headers. @default {10000} */
  readonly headerTimeout?: number;
  /** Milliseconds a kept-alive connection may wait for its next request. @default {60000} */
  readonly idleTimeout?: number;
  /** Milliseconds a `POST`'s body has to arrive after its headers (408 past it). @default {30000} */
  readonly bodyTimeout?: number;
  /** Milliseconds between heartbeats on event streams and WebSockets. @default {15000} */
  readonly heartbeat?: number;
  /** Bearer tokens; absent: no auth. */
  readonly tokens?: readonly TokenEntry[];
  /**
   * The Subject's `max_message_size`: a body whose values are larger is answered 413 at once
   * (see `ClientOptions.maxMessageSize`). Absent: left to the Subject.
   */
  readonly maxMessageSize?: number;
  /**
   * Bytes of answers (as JSON) remembered for `Idempotency-Key` retries: past it, the oldest
   * keys are forgotten (a retry of one is sent again, and the Subject drops it as a duplicate
   * while it remembers the id: the retry gets a 504). At most 10,000 keys in any case.
   * @default {67108864}
   */
  readonly idempotencyBytes?: number;
  /** Largest request body in bytes; absent or 0: no limit of the gateway's own. */
  readonly bodyLimit?: number;
  /** Origins allowed cross-origin requests (`*`: any); absent or empty: none. */
  readonly corsOrigins?: readonly string[];
  /**
   * The Subject's paused-flow store (`async_store`), for `GET /v1/paused` and the dashboard;
   * readable only where the gateway shares the Subject's host. Absent: the list is empty.
   */
  readonly pausedStore?: string;
}

/** The gateway's own counters. */
export interface GatewayStats {
  /** HTTP requests answered, by status. */
  readonly responses: Record<string, number>;
  /** Event-stream and WebSocket clients connected now. */
  streams: number;
  /** Event-stream and WebSocket clients cut off for not reading. */
  cutOff: number;
  /** The HTTP server's connections (see `ConnectionCounters`). */
  connections?: ConnectionCounters;
}
