/**
 * The gateway's streams: `GET /v1/events` (Server-Sent Events) and `GET /v1/ws` (a WebSocket that
 * subscribes and sends). Each client has its own queue of at most `clientBuffer` bytes; one that
 * falls that far behind is cut off with a reason.
 *
 * @module
 */

import type { Client } from "../client/client.ts";
import type { Values } from "../handler.ts";
import type { logger } from "../log.ts";
import { type Publication, publicationJson } from "../wire/protocol.ts";
import type { Answer } from "./answers.ts";
import { scopedId, StreamSink } from "./answers.ts";
import { holdConnection } from "./http_server.ts";
import type { Auth, Caller } from "./auth.ts";

/** Subscriptions one WebSocket may hold at once. */
export const WS_MAX_SUBSCRIPTIONS = 100;

/** Seconds a WebSocket may leave Deno's ping unanswered before its connection is dropped. */
const WS_IDLE_TIMEOUT = 10;

/** What the streams need of the gateway. */
export interface StreamHost {
  /** The gateway's client (its subscriptions). */
  readonly client: Client;
  /** Bytes one client's queue may hold. */
  readonly clientBuffer: number;
  /** Milliseconds between heartbeats. */
  readonly heartbeat: number;
  /** The gateway's counters: open streams, clients cut off. */
  readonly stats: { streams: number; cutOff: number };
  /** One function per open stream that ends it (the gateway calls them when it closes). */
  readonly streams: Set<() => void>;
  /** Open streams by the token name that opened them ("" with auth off). */
  readonly byCaller: Map<string, number>;
  /** The gateway's logger. */
  readonly log: ReturnType<typeof logger>;
  /** Token checks, when tokens are configured. */
  readonly auth?: Auth;
  /** Runs a flow and waits for its final publication. */
  run(flow: string, values: Values, id: string, key: string | undefined, keep: boolean): Promise<Answer>;
  /** Sends a request and answers once it is accepted (it is kept until its final, as `run` keeps it). */
  accept(flow: string, values: Values, id: string, key: string | undefined, keep: boolean): Promise<Answer>;
}

/**
 * Counts a stream opened by `caller` (its token name) in `host`, where `shut` ends it when the
 * gateway closes; the function returned uncounts it, once.
 */
function opened(host: StreamHost, caller: string, shut: () => void): () => boolean {
  host.streams.add(shut);
  host.stats.streams++;
  host.byCaller.set(caller, (host.byCaller.get(caller) ?? 0) + 1);
  return () => {
    if (!host.streams.delete(shut)) return false;
    host.stats.streams--;
    const n = (host.byCaller.get(caller) ?? 1) - 1;
    if (n > 0) host.byCaller.set(caller, n);
    else host.byCaller.delete(caller);
    return true;
  };
}

/** `GET /v1/events`: publications on `prefix` as Server-Sent Events, for `caller` (its token name). */
export async function eventStream(host: StreamHost, prefix: string, caller = ""): Promise<Response> {
  const enc = new TextEncoder();
  const sink = new StreamSink(host.clientBuffer, () => host.stats.cutOff++, host.log);
  // Counted before the subscription is made, so that streams opened at once cannot all pass the
  // caps. The gateway closing ends the response (else its server would wait for it), which stops it.
  const closed = opened(host, caller, () => sink.close());
  let it: AsyncIterableIterator<Publication>;
  try {
    it = await host.client.subscribe(prefix);
  } catch (e) {
    closed();
    throw e;
  }
  const heartbeat = setInterval(
    () => sink.offer(enc.encode(": heartbeat\n\n")),
    host.heartbeat,
  );
  const stop = () => {
    clearInterval(heartbeat);
    void it.return?.();
    closed();
  };
  sink.onEnd = stop;
  sink.offer(enc.encode(`: subscribed to ${JSON.stringify(prefix)}\n\n`));
  void (async () => {
    for await (const p of it) {
      sink.offer(enc.encode(`event: publication\ndata: ${JSON.stringify(publicationJson(p))}\n\n`));
    }
  })();
  return new Response(
    sink.stream(
      (reason) => enc.encode(`event: cutoff\ndata: ${JSON.stringify({ reason })}\n\n`),
    ),
    {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    },
  );
}

/**
 * `GET /v1/ws`: one connection to subscribe and send. Client messages (JSON):
 * `{"type":"subscribe","prefix"}`, `{"type":"unsubscribe","prefix"}`,
 * `{"type":"send","flow","values"?,"id"?,"key"?,"wait"?}`. Server messages: `publication`,
 * `accepted` (`{id}`), `final` (with `wait`), `error` (`{message}`), `heartbeat`, `cutoff`.
 */
export function webSocket(host: StreamHost, req: Request, caller?: Caller): Response {
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: WS_IDLE_TIMEOUT });
  // Its connection keeps its place under the gateway's connection cap until it closes.
  holdConnection(req, new Promise((r) => socket.addEventListener("close", r, { once: true })));
  const limit = host.clientBuffer;
  const subs = new Map<string, AsyncIterableIterator<Publication>>();
  /** Subscriptions being made (counted against the cap before they are). */
  let subscribing = 0;
  let cut = false;
  const emit = (msg: unknown) => {
    if (cut || socket.readyState !== WebSocket.OPEN) return;
    const data = JSON.stringify(msg);
    if (socket.bufferedAmount + data.length > limit) {
      cut = true;
      host.stats.cutOff++;
      const reason = `slow client: more than ${limit} bytes waiting to be sent`;
      host.log.warn("WebSocket client cut off: {reason}", { reason });
      stop();
      // Nothing more is sent but the reason. A client that reads it (its buffer drains) gets a
      // close with it; one that never reads never answers Deno's pings either, and Deno drops
      // its connection after WS_IDLE_TIMEOUT (closing it ourselves would wait for its answer).
      try {
        socket.send(JSON.stringify({ type: "cutoff", reason }));
      } catch { /* closing */ }
      const drained = setInterval(() => {
        if (socket.readyState !== WebSocket.OPEN) return clearInterval(drained);
        if (socket.bufferedAmount > 0) return;
        clearInterval(drained);
        socket.close(1008, reason.slice(0, 120));
      }, 200);
      socket.addEventListener("close", () => clearInterval(drained));
      return;
    }
    socket.send(data);
  };
  const heartbeat = setInterval(
    () => emit({ type: "heartbeat", at: Date.now() }),
    host.heartbeat,
  );
  const stop = () => {
    clearInterval(heartbeat);
    for (const it of subs.values()) void it.return?.();
    subs.clear();
    closed();
  };
  const closed = opened(host, caller?.entry.name ?? "", () => {
    stop();
    try {
      socket.close(1001, "the gateway is closing");
    } catch { /* closed meanwhile */ }
  });
  socket.onclose = stop;
  socket.onerror = () => {};
  socket.onmessage = async (ev) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(String(ev.data));
      if (m === null || typeof m !== "object") throw new TypeError("not an object");
    } catch {
      return emit({ type: "error", message: "messages are JSON objects with a type" });
    }
    if (m.type === "subscribe" || m.type === "unsubscribe") {
      const prefix = typeof m.prefix === "string" ? m.prefix : "";
      if (m.type === "unsubscribe") {
        void subs.get(prefix)?.return?.();
        subs.delete(prefix);
        return;
      }
      if (caller && !host.auth!.allowPrefix(caller, prefix)) {
        return emit({ type: "error", message: `this token may not subscribe to "${prefix}"` });
      }
      if (subs.has(prefix)) return emit({ type: "subscribed", prefix }); // held already
      // Each subscription costs the gateway (and the IM) a filter: bounded per connection, and
      // counted against the token's rate as a request is.
      if (subs.size + subscribing >= WS_MAX_SUBSCRIPTIONS) {
        const message = `this connection has ${WS_MAX_SUBSCRIPTIONS} subscriptions: unsubscribe one first`;
        return emit({ type: "error", status: 429, message });
      }
      const wait = caller ? host.auth!.take(caller) : 0;
      if (wait > 0) {
        return emit({
          type: "error",
          status: 429,
          message: "over this token's rate",
          retryAfter: Math.ceil(wait),
        });
      }
      subscribing++;
      let it: AsyncIterableIterator<Publication>;
      try {
        it = await host.client.subscribe(prefix);
      } finally {
        subscribing--;
      }
      if (cut || subs.has(prefix)) return void it.return?.();
      subs.set(prefix, it);
      emit({ type: "subscribed", prefix });
      for await (const p of it) emit({ type: "publication", ...publicationJson(p) });
      return;
    }
    if (m.type === "send") {
      const flow = typeof m.flow === "string" ? m.flow : "";
      const values = m.values ?? {};
      const id = typeof m.id === "string" && m.id.length > 0 && m.id.length <= 200
        ? await scopedId(caller?.entry.name ?? "", flow, m.id)
        : crypto.randomUUID();
      if (values === null || typeof values !== "object" || Array.isArray(values)) {
        return emit({ type: "error", id, message: "values must be a JSON object" });
      }
      if (caller) {
        if (!host.auth!.allow(caller, flow)) {
          return emit({ type: "error", id, status: 403, message: `this token may not use flow "${flow}"` });
        }
        const wait = host.auth!.take(caller);
        if (wait > 0) {
          return emit({
            type: "error",
            id,
            status: 429,
            message: "over this token's rate",
            retryAfter: Math.ceil(wait),
          });
        }
      }
      const key = typeof m.key === "string" ? m.key : undefined;
      // A request named by the client has its final kept: the same id sent again gets it.
      const keep = typeof m.id === "string" && m.id.length > 0 && m.id.length <= 200;
      const a = m.wait
        ? await host.run(flow, values as Values, id, key, keep)
        : await host.accept(flow, values as Values, id, key, keep);
      return emit(
        m.wait
          ? { type: "final", status: a.status, ...(a.body as object) }
          : a.status === 202
          ? { type: "accepted", id }
          : { type: "error", id, status: a.status, ...(a.body as object) },
      );
    }
    emit({ type: "error", message: `unknown message type ${JSON.stringify(m.type)}` });
  };
  return response;
}
