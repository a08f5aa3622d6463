/**
 * The gateway's HTTP/1.1 server: its own accept loop over `Deno.listen`, each connection served
 * with `Deno.serveHttp`, so that it can do what `Deno.serve` cannot (denoland/deno#3515): cap the
 * connections open at once (in all and per remote address), close a connection that does not
 * send a request's headers in time, and keep accepting when the process runs out of file
 * descriptors. Under `Deno.serve`, 20,000 connections that each sent half a header (one client,
 * no token) ended the gateway: `Deno.serve`'s accept loop fails with "Too many open files" and
 * the process dies (measured: SIGSEGV of the gateway, exit 1 of a bare `Deno.serve`;
 * docs/gateway.md, _Connections_).
 *
 * Deno has no other public way to serve a connection it did not accept itself. `Deno.serveHttp`
 * is deprecated: Deno 2 dropped it from its type declarations but still ships it (2.9.6, which
 * this project pins), so the two types it needs are declared here. What it costs, measured: about
 * half the requests per second of `Deno.serve` on an empty handler. A client that leaves during a
 * streamed response would be noticed only at the next write (an event stream's next heartbeat),
 * so the connection is read meanwhile and the stream ended when it closes (unless the client had
 * sent bytes behind its request: see `serveGuarded`). (`serveHttpOnConnection`, the internal
 * function `Deno.serve` is built on, breaks WebSockets when used per connection.) Where
 * `Deno.serveHttp` is missing, the server falls back to `Deno.serve` and warns that the connection
 * limits are off ({@linkcode connectionLimitsAvailable}; a test fails on such a Deno). After many
 * connections or requests it hands the memory they freed back to the system (`TrimPolicy`).
 *
 * @module
 */

import { delay } from "../_async.ts";
import { type ConnectionCounters, ConnectionGuard, TrimPolicy } from "./connections.ts";
import { mallocTrim } from "../roles/_libc.ts";
import { collectGarbage, TRIM_AFTER_GC_MS } from "../roles/_gc.ts";

/** What {@linkcode serveGuarded} needs. */
export interface GuardedServerOptions {
  readonly hostname: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Connections open at once, all addresses. */
  readonly maxConnections: number;
  /** Connections open at once from one remote address; 0: no cap per address. */
  readonly maxConnectionsPerAddress: number;
  /** Milliseconds a new connection has to send its first request's headers. */
  readonly headerTimeout: number;
  /** Milliseconds a kept-alive connection has, after an answer, to send its next request's headers. */
  readonly idleTimeout: number;
  /**
   * `false`: serve with `Deno.serve`, without the limits (for a gateway behind a proxy that
   * applies its own: `http_connection_limits = off`). @default {true}
   */
  readonly limits?: boolean;
  /** Told once a second at most while accepts fail, and once if this Deno cannot apply the limits. */
  readonly warn?: (message: string) => void;
}

/** What the handler gets beside the request, as from `Deno.serve`. */
export interface ServeInfo {
  readonly remoteAddr: Deno.NetAddr;
}

/** A running {@linkcode serveGuarded} server. */
export interface GuardedServer {
  readonly addr: Deno.NetAddr;
  /** Its connection counters (live; under `Deno.serve` only `bodyTimedOut` is counted, by the gateway). */
  readonly counters: ConnectionCounters;
  /** Whether it applies the limits (`false`: it is a `Deno.serve`). */
  readonly limited: boolean;
  /** Stops accepting, closes idle connections, waits for the requests being answered. */
  shutdown(): Promise<void>;
  /** Resolves once shut down. */
  readonly finished: Promise<void>;
}

type Handler = (request: Request, info: ServeInfo) => Response | Promise<Response>;

/** One request of a `Deno.serveHttp` connection (Deno 1's `Deno.RequestEvent`). */
interface RequestEvent {
  readonly request: Request;
  respondWith(response: Response | PromiseLike<Response>): Promise<void>;
}

/** A `Deno.serveHttp` connection (Deno 1's `Deno.HttpConn`). */
interface HttpConn {
  nextRequest(): Promise<RequestEvent | null>;
  close(): void;
}

const serveHttp = (Deno as unknown as { serveHttp?: (conn: Deno.Conn) => HttpConn }).serveHttp;

/** Whether this Deno can apply the connection limits (it has `Deno.serveHttp`). */
export function connectionLimitsAvailable(): boolean {
  return typeof serveHttp === "function";
}

/**
 * How long a connection waiting for its next request is kept once the server shuts down: the
 * answer just sent on it (an event stream ended by the shutdown) leaves while the connection is
 * read, so closing it at once could cut that answer's end.
 */
const SHUTDOWN_GRACE_MS = 100;

const TIMED_OUT = Symbol("timed out");

/** Requests being answered, to what holds their connection's place past the answer. */
const holders = new WeakMap<Request, (until: Promise<unknown>) => void>();

/**
 * Keeps the connection of `request` (as the handler got it) counted until `until` settles, past
 * its answer: a WebSocket, whose connection leaves HTTP when it upgrades, holds its descriptor
 * (and its place under the connection cap) until it closes. Does nothing under `Deno.serve`.
 */
export function holdConnection(request: Request, until: Promise<unknown>): void {
  holders.get(request)?.(until);
}

/** Serves `handler` under the options' limits. */
export function serveGuarded(o: GuardedServerOptions, handler: Handler): GuardedServer {
  const guard = new ConnectionGuard(o.maxConnections, o.maxConnectionsPerAddress);
  if (o.limits === false) return unguarded(o, handler, guard);
  if (typeof serveHttp !== "function") {
    o.warn?.("this Deno has no Deno.serveHttp: the HTTP connection limits and timeouts are off");
    return unguarded(o, handler, guard);
  }
  const serveConnection = serveHttp;
  const listener = Deno.listen({ hostname: o.hostname, port: o.port, transport: "tcp" });
  /** Cuts each connection's wait for its next request short (at shutdown). */
  const waiting = new Set<() => void>();
  const ended = new Set<Promise<void>>();
  /** Hands freed memory back to the system after many connections or requests (see TrimPolicy). */
  const trim = new TrimPolicy(performance.now());
  let trimTimer: ReturnType<typeof setInterval> | undefined;
  const mayTrim = (wanted: boolean) => {
    if (!wanted || trimTimer !== undefined) return;
    trimTimer = setInterval(() => {
      const now = performance.now();
      const due = trim.due(now);
      if (due === "flood") {
        mallocTrim();
        trim.trimmed(performance.now());
      } else if (due === "quiet") {
        // A collection first: V8 frees the buffers of gone connections only when it collects
        // them, and the trim comes once it has (see TRIM_AFTER_GC_MS).
        trim.trimmed(now);
        void collectGarbage().then(() => Deno.unrefTimer(setTimeout(mallocTrim, TRIM_AFTER_GC_MS)));
      }
      if (trim.pending) return;
      clearInterval(trimTimer);
      trimTimer = undefined;
    }, 500);
    Deno.unrefTimer(trimTimer);
  };
  const closed = () => mayTrim(trim.closed(performance.now()));
  /** Gives an admitted connection's place back. */
  const release = (address: string) => {
    guard.release(address);
    closed();
  };
  let closing = false;
  let lastWarn = 0;

  const serve = async (conn: Deno.Conn, address: string): Promise<void> => {
    let http: HttpConn;
    try {
      http = serveConnection.call(Deno, conn);
    } catch {
      // The connection is gone already.
      try {
        conn.close();
      } catch { /* closed */ }
      release(address);
      return;
    }
    const close = () => {
      try {
        http.close();
      } catch { /* closed already */ }
    };
    const info: ServeInfo = { remoteAddr: conn.remoteAddr as Deno.NetAddr };
    /** Set by a WebSocket's upgrade: the connection's place is let go when it settles. */
    let held: Promise<unknown> | undefined;
    /** The connection's next request, already asked for (while an event stream was answered). */
    let following: Promise<RequestEvent | null> | undefined;
    try {
      for (let first = true;; first = false) {
        const timeout = closing ? SHUTDOWN_GRACE_MS : first ? o.headerTimeout : o.idleTimeout;
        const event = await nextRequest(following ?? http.nextRequest(), timeout, waiting, close);
        following = undefined;
        if (event === TIMED_OUT) {
          if (!closing) guard.counters.timedOut++;
          break;
        }
        if (!event) break;
        let response: Response;
        holders.set(event.request, (until) => held = until);
        try {
          response = await handler(event.request, info);
        } catch (e) {
          console.error("the gateway's handler failed:", e);
          response = new Response("Internal Server Error", { status: 500 });
        }
        if (isEventStream(response)) {
          // A client leaving an event stream would be seen only at the stream's next write (its
          // heartbeat): a read of the connection meanwhile sees it go at once and ends the stream.
          // Not when the client had sent bytes behind its request (pipelined): the server reads no
          // further until the answer ends, so a write sees the client go, the second heartbeat
          // after it left. Should a request behind it be read, the stream ends, so that request
          // is answered.
          const stream = cancellable(response);
          response = stream.response;
          following = http.nextRequest();
          following.then(stream.cancel, stream.cancel);
        }
        // Resolves once the body is sent (an event stream: once it ends) or the client is gone.
        await event.respondWith(response).catch(() => {});
        mayTrim(trim.answered(performance.now()));
        if (held) return; // taken over (a WebSocket): no more HTTP on it
      }
    } catch {
      /* the client went away */
    } finally {
      // A shutdown waits for answers, not for WebSockets (the gateway closes those itself).
      const end = () => {
        close();
        release(address);
      };
      if (held) void held.catch(() => {}).finally(end);
      else end();
    }
  };

  const accepting = (async () => {
    while (!closing) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource) break;
        if (goneBeforeAccept(e)) {
          // The client reset it between the handshake and the accept (Deno then fails to read its
          // address): nothing is wrong with the server. Waiting here, as for a full descriptor
          // table, let 40 such connections a second hold every other client back (p50 770 ms).
          guard.counters.resetBeforeAccept++;
          continue;
        }
        guard.counters.acceptErrors++;
        const now = Date.now();
        if (now - lastWarn >= 1000) {
          lastWarn = now;
          o.warn?.(`the HTTP server cannot accept a connection (${(e as Error).message}); retrying`);
        }
        await delay(50);
        continue;
      }
      const address = (conn.remoteAddr as Deno.NetAddr).hostname;
      if (guard.admit(address) !== "ok") {
        try {
          conn.close();
        } catch { /* gone */ }
        closed();
        continue;
      }
      const end = serve(conn, address).catch(() => {}).finally(() => ended.delete(end));
      ended.add(end);
    }
  })();

  const done = Promise.withResolvers<void>();
  let shuttingDown: Promise<void> | undefined;
  return {
    addr: listener.addr as Deno.NetAddr,
    counters: guard.counters,
    limited: true,
    shutdown: () =>
      shuttingDown ??= (async () => {
        closing = true;
        try {
          listener.close();
        } catch { /* closed */ }
        await accepting;
        for (const cut of [...waiting]) cut();
        while (ended.size) await Promise.all([...ended]);
        clearInterval(trimTimer);
        done.resolve();
      })(),
    finished: done.promise,
  };
}

/**
 * The next request (`next`, a connection's `nextRequest()`), `null` at the connection's end, or
 * {@linkcode TIMED_OUT} (then the connection is closed with `close`). Registers in `waiting` a
 * function that cuts the wait to {@linkcode SHUTDOWN_GRACE_MS}.
 */
async function nextRequest(
  next: Promise<RequestEvent | null>,
  timeout: number,
  waiting: Set<() => void>,
  close: () => void,
): Promise<RequestEvent | null | typeof TIMED_OUT> {
  let timedOut = false;
  const expire = () => {
    timedOut = true;
    close();
  };
  let timer = setTimeout(expire, timeout);
  const cut = () => {
    clearTimeout(timer);
    timer = setTimeout(expire, Math.min(timeout, SHUTDOWN_GRACE_MS));
  };
  waiting.add(cut);
  try {
    const event = await next;
    return timedOut ? TIMED_OUT : event;
  } catch (e) {
    if (timedOut) return TIMED_OUT;
    throw e;
  } finally {
    clearTimeout(timer);
    waiting.delete(cut);
  }
}

/** Whether an accept failed because its connection was gone already (reset or aborted by the client). */
function goneBeforeAccept(e: unknown): boolean {
  return e instanceof Deno.errors.NotConnected || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionAborted;
}

/**
 * Whether `response` is an event stream (`text/event-stream`): a body that lasts. Its type is looked
 * at first: reading `body` turns a string or bytes body into a stream, which the server then sends
 * chunked, without a `Content-Length` (every answer was, until the bench's test caught it).
 */
function isEventStream(response: Response): boolean {
  return (response.headers.get("content-type") ?? "").startsWith("text/event-stream") &&
    response.body !== null;
}

/**
 * `response` with its body passed through a stream that `cancel` ends: the body is read by the
 * server once it is answered (and locked), so it cannot be cancelled itself. `cancel` cancels the
 * original body, as the server does when a write fails.
 */
function cancellable(response: Response): { response: Response; cancel: () => void } {
  const reader = response.body!.getReader();
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      const r = await reader.read();
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return {
    response: new Response(body, response),
    cancel: () => {
      if (cancelled) return;
      cancelled = true;
      reader.cancel("the client went away").catch(() => {});
    },
  };
}

/** `Deno.serve`, without the limits. */
function unguarded(o: GuardedServerOptions, handler: Handler, guard: ConnectionGuard): GuardedServer {
  const server = Deno.serve({ hostname: o.hostname, port: o.port, onListen: () => {} }, handler);
  return {
    addr: server.addr,
    counters: guard.counters,
    limited: false,
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}
