/**
 * The HTTP gateway: a `Deno.serve` service that is an ordinary ZManager service (a
 * {@linkcode Client}: it pushes requests and subscribes like any other), so it runs on any host
 * that reaches the Subject and the Integration Manager. Routes (README, _HTTP gateway_):
 *
 * - `POST /v1/flows/{flow}`: run a flow; answers with the final publication (status table in
 *   {@linkcode ERROR_STATUS}); `Idempotency-Key` is the request id; `?wait=0` answers 202 at once
 * - `POST /v1/resume/{token}`: resume a paused flow
 * - `GET /v1/events?prefix=…` (Server-Sent Events) and `GET /v1/ws` (WebSocket)
 * - `GET /v1/flows`, `GET /v1/openapi.json`, `GET /healthz`, `GET /readyz`
 *
 * Routing, CORS and the body limit come from Hono (npm:hono), which runs on `Deno.serve` as is.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context as HonoContext } from "hono";
import { cors } from "hono/cors";
import { bodyLimit } from "hono/body-limit";
import { Client, RequestRefusedError, RequestTimeoutError } from "../client/client.ts";
import type { Values } from "../handler.ts";
import { logger } from "../log.ts";
import { tryParseActionKey } from "../topic/action_key.ts";
import type { Flow } from "../topic/flow_file.ts";
import { formatActionKey } from "../topic/action_key.ts";
import { decodeHeader, parseToken, type Publication, publicationJson, text } from "../wire/protocol.ts";
import { Reactor, type ReactorSocket } from "../zmq/reactor.ts";
import { connectRedialing, type CurveClientKeys, curveClientOptions } from "../zmq/curve.ts";
import { METRICS_TOPIC, type RoleMetrics } from "../roles/metrics.ts";
import { Auth, type Caller, type Refusal, type TokenEntry } from "./auth.ts";
import { ByteQueue } from "./byte_queue.ts";
import { openApiDocument } from "./openapi.ts";
import { PROMETHEUS_CONTENT_TYPE, renderMetrics } from "./prometheus.ts";
import { chartLibrary, dashboardPage } from "./dashboard.ts";
import { PausedStore } from "../roles/paused_store.ts";
import { errorStatus, OVERLOADED_RETRY_AFTER } from "./status.ts";

/** Options of {@linkcode Gateway.start}. */
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
  /** Milliseconds between heartbeats on event streams and WebSockets. @default {15000} */
  readonly heartbeat?: number;
  /** Bearer tokens; absent: no auth. */
  readonly tokens?: readonly TokenEntry[];
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
}

/** One answer: status, JSON body, extra headers. */
interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Record<string, string>;
}

/** Idempotency keys remembered with their answers. */
const IDEMPOTENCY_MEMORY = 10_000;
/**
 * Seconds a WebSocket client may leave a ping unanswered before Deno closes its connection: how
 * a client cut off for not reading (which never answers the close either) loses its connection.
 */
const WS_IDLE_TIMEOUT = 10;
/** Error publications the dashboard lists. */
const RECENT_ERRORS = 50;
/** Milliseconds after which a role's metrics count as stale (the role is gone). */
const METRICS_STALE_MS = 3500;

/** A running gateway. */
export class Gateway {
  readonly #o: GatewayOptions;
  readonly #log = logger("gateway");
  readonly #reactor: Reactor;
  readonly #client: Client;
  readonly #metricsSub: ReactorSocket;
  readonly #auth?: Auth;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** Answers by idempotency key (flow and key), in arrival order: the oldest are forgotten first. */
  readonly #answers = new Map<string, Promise<Answer>>();
  /** Waiters for the pause publication of a request id. */
  readonly #pauseWaiters = new Map<string, (p: Publication) => void>();
  readonly #pauseSubs = new Map<string, Promise<unknown>>();
  /** Flows whose pause subscription is active. */
  readonly #pausesWatched = new Set<string>();
  /** The latest metrics of each role process, by `role-pid`. */
  readonly #metrics = new Map<string, RoleMetrics>();
  readonly #streams = new Set<() => void>();
  readonly #stats: GatewayStats = { responses: {}, streams: 0, cutOff: 0 };
  /** The latest error publications of the loaded flows, newest last. */
  readonly #errors: Record<string, unknown>[] = [];
  readonly #errorSubs: AsyncIterableIterator<Publication>[] = [];
  #closed?: Promise<void>;

  private constructor(
    o: GatewayOptions,
    reactor: Reactor,
    client: Client,
    metricsSub: ReactorSocket,
  ) {
    this.#o = o;
    this.#reactor = reactor;
    this.#client = client;
    this.#metricsSub = metricsSub;
    if (o.tokens) this.#auth = new Auth(o.tokens);
    this.#server = Deno.serve({
      hostname: o.hostname ?? "127.0.0.1",
      port: o.port ?? 8080,
      onListen: () => {},
    }, this.#app().fetch);
  }

  /** Connects to the deployment and starts serving. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const reactor = new Reactor();
    const client = await Client.connect({
      subject: options.subject,
      publisher: options.publisher,
      reactor,
      requestTimeout: options.waitTimeout ?? 30_000,
      curve: options.curve,
    });
    const sub = reactor.socket("SUB", {
      ...curveClientOptions(options.curve, options.publisher),
      receiveHighWaterMark: 1000,
      linger: 0,
    });
    await sub.subscribe(METRICS_TOPIC);
    if (options.curve) await connectRedialing(reactor, sub, options.publisher);
    else await sub.connect(options.publisher);
    const g = new Gateway(options, reactor, client, sub);
    sub.onMessage((f) => g.#onMetrics(f));
    void g.#watchErrors();
    return g;
  }

  /** Where it listens, e.g. `http://127.0.0.1:8080`. */
  get url(): string {
    const a = this.#server.addr;
    return `http://${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}`;
  }

  /** Its counters. */
  stats(): GatewayStats {
    return { ...this.#stats, responses: { ...this.#stats.responses } };
  }

  /** The latest metrics of every live role process (at most {@linkcode METRICS_STALE_MS} old). */
  roles(): RoleMetrics[] {
    const now = Date.now();
    for (const [k, m] of this.#metrics) if (now - m.at > METRICS_STALE_MS) this.#metrics.delete(k);
    return [...this.#metrics.values()];
  }

  /** Keeps the last {@linkcode RECENT_ERRORS} error publications of the loaded flows. */
  async #watchErrors(): Promise<void> {
    for (const name of this.#o.flows.keys()) {
      const it = await this.#client.subscribe(`${name}~~~~error`).catch(() => undefined);
      if (!it) return;
      this.#errorSubs.push(it);
      void (async () => {
        for await (const p of it) {
          if (p.action !== "error" || p.flow !== name) continue;
          this.#errors.push({ at: Date.now(), ...publicationJson(p) });
          if (this.#errors.length > RECENT_ERRORS) this.#errors.shift();
        }
      })();
    }
  }

  /** Flows paused at an `@ASYNC` step, from the store (see {@linkcode GatewayOptions.pausedStore}). */
  #paused(): Record<string, unknown>[] {
    const path = this.#o.pausedStore;
    if (!path) return [];
    try {
      Deno.statSync(path);
    } catch {
      return [];
    }
    const store = new PausedStore(path);
    try {
      const now = Date.now();
      return store.list().map((p) => ({ flow: p.flow, id: p.id, ageMs: now - p.pausedAt, token: p.token }));
    } finally {
      store.close();
    }
  }

  #onMetrics(frames: Uint8Array[]): void {
    if (frames.length !== 3 || text(frames[0]) !== METRICS_TOPIC) return;
    const h = decodeHeader(frames[1]);
    if (typeof h === "string") return;
    try {
      const m = JSON.parse(text(frames[2])) as RoleMetrics;
      if (typeof m?.role !== "string" || typeof m.pid !== "number") return;
      // `at`: when it arrived (for staleness); `sentAt`: when the role took it (for rates).
      this.#metrics.set(
        `${m.role}-${m.host}-${m.pid}`,
        { ...m, sentAt: m.at, at: Date.now() } as RoleMetrics,
      );
    } catch { /* not ours */ }
  }

  #app(): Hono {
    const app = new Hono();
    app.use("*", async (c, next) => {
      await next();
      const s = String(c.res.status);
      this.#stats.responses[s] = (this.#stats.responses[s] ?? 0) + 1;
    });
    const origins = this.#o.corsOrigins?.filter((o) => o !== "") ?? [];
    if (origins.length) {
      app.use(
        "/v1/*",
        cors({
          origin: origins.includes("*") ? "*" : origins,
          allowHeaders: ["Authorization", "Content-Type", "Idempotency-Key"],
          allowMethods: ["GET", "POST", "OPTIONS"],
          exposeHeaders: ["Location", "Retry-After"],
        }),
      );
    }
    if (this.#o.bodyLimit) {
      const maxSize = this.#o.bodyLimit;
      app.use(
        "/v1/*",
        bodyLimit({
          maxSize,
          onError: (c) => c.json(problem("body_too_large", `the body is over ${maxSize} bytes`), 413),
        }),
      );
    }
    app.get("/healthz", (c) => c.json({ status: "ok" }));
    app.get("/readyz", (c) => {
      const r = this.#ready();
      return c.json(r, r.ready ? 200 : 503);
    });
    app.get("/metrics", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      return c.body(renderMetrics(this.roles(), this.#stats), 200, {
        "content-type": PROMETHEUS_CONTENT_TYPE,
      });
    });
    app.get("/v1/metrics.json", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      return c.json({
        at: Date.now(),
        roles: this.roles(),
        gateway: this.stats(),
        errors: this.#errors.filter((e) => !who.entry || this.#auth!.allow(who as Caller, String(e.flow))),
        paused: this.#paused().filter((p) => !who.entry || this.#auth!.allow(who as Caller, String(p.flow))),
      });
    });
    app.get("/", async (c) => c.html(await dashboardPage()));
    app.get("/dashboard/chart.js", async (c) =>
      c.body(await chartLibrary(), 200, {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "max-age=3600",
      }));
    app.get("/v1/flows", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      return c.json(
        [...this.#o.flows.values()]
          .filter((f) => !who.entry || this.#auth!.allow(who as Caller, f.name))
          .map((f) => ({ name: f.name, steps: f.steps.map((s) => formatActionKey(s.key)) })),
      );
    });
    app.get("/v1/openapi.json", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      return c.json(openApiDocument(this.#o.flows.values()));
    });
    app.post("/v1/flows/:flow", async (c) => {
      const flow = c.req.param("flow");
      const caller = await this.#admit(c, flow);
      if (caller instanceof Response) return caller;
      const body = await readValues(c);
      if ("answer" in body) return send(c, body.answer);
      const values = body.values;
      const key = c.req.query("key");
      if (key !== undefined) {
        const k = tryParseActionKey(key);
        if (!k.ok) return send(c, badRequest(`invalid key "${key}" at column ${k.column}: ${k.reason}`));
      }
      const idem = c.req.header("Idempotency-Key");
      if (idem !== undefined && (idem.length === 0 || idem.length > 200)) {
        return send(c, badRequest("Idempotency-Key must be 1 to 200 characters"));
      }
      const id = idem ?? crypto.randomUUID();
      if (c.req.query("wait") === "0") return send(c, await this.#accept(flow, values, id, key));
      if (idem === undefined) return send(c, await this.#run(flow, values, id, key));
      // A retried POST: the first one's answer, or a wait for it (keys are per token and flow).
      const slot = `${caller}\0${flow}\0${idem}`;
      let answer = this.#answers.get(slot);
      if (!answer) {
        answer = this.#run(flow, values, id, key);
        this.#remember(slot, answer);
      }
      return send(c, await answer);
    });
    app.post("/v1/resume/:token", async (c) => {
      const token = c.req.param("token");
      const caller = await this.#admit(c, parseToken(token)?.flow ?? "");
      if (caller instanceof Response) return caller;
      const body = await readValues(c);
      if ("answer" in body) return send(c, body.answer);
      return send(c, await this.#resume(token, body.values));
    });
    app.get("/v1/events", async (c) => {
      const prefix = c.req.query("prefix") ?? "";
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      if (who.entry && !this.#auth!.allowPrefix(who as Caller, prefix)) {
        return refuse(c, { status: 403, message: `this token may not subscribe to "${prefix}"` });
      }
      return await this.#eventStream(prefix);
    });
    app.get("/v1/ws", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        return c.json(problem("bad_request", "expected a WebSocket upgrade"), 426);
      }
      return this.#webSocket(c.req.raw, who.entry ? who as Caller : undefined);
    });
    app.notFound((c) => c.json(problem("not_found", `no route ${c.req.method} ${c.req.path}`), 404));
    app.onError((e, c) => {
      this.#log.error("{method} {path}: {error}", {
        method: c.req.method,
        path: c.req.path,
        error: String(e),
      });
      return c.json(problem("internal", String((e as Error)?.message ?? e)), 500);
    });
    return app;
  }

  /** The caller (with auth on) or a refusal; `{}` when auth is off. */
  async #caller(c: HonoContext): Promise<Caller | Refusal | { entry?: undefined }> {
    if (!this.#auth) return {};
    return await this.#auth.authenticate(c.req.header("Authorization"));
  }

  /**
   * With auth on: a refusal (401, 403, 429) unless the caller may run `flow` now; else the
   * caller's token name ("" with auth off).
   */
  async #admit(c: HonoContext, flow: string): Promise<Response | string> {
    if (!this.#auth) return "";
    const who = await this.#auth.authenticate(c.req.header("Authorization"));
    if ("status" in who) return refuse(c, who);
    if (!this.#auth.allow(who, flow)) {
      return refuse(c, { status: 403, message: `this token may not use flow "${flow}"` });
    }
    const wait = this.#auth.take(who);
    if (wait > 0) {
      return refuse(c, { status: 429, message: "over this token's rate", retryAfter: Math.ceil(wait) });
    }
    return who.entry.name;
  }

  #remember(slot: string, answer: Promise<Answer>): void {
    this.#answers.set(slot, answer);
    // A POST that timed out is forgotten: a retry waits for the same request's final again.
    answer.then((a) => {
      if (a.status === 504 && this.#answers.get(slot) === answer) this.#answers.delete(slot);
    });
    while (this.#answers.size > IDEMPOTENCY_MEMORY) {
      this.#answers.delete(this.#answers.keys().next().value!);
    }
  }

  #ready(): { ready: boolean; reason?: string; workers?: number; subject?: number } {
    const roles = this.roles();
    const subject = roles.find((r) => r.role === "subject");
    if (!subject) return { ready: false, reason: "no metrics from a Subject in the last 3.5 s" };
    const workers = Number(subject.counters.workers ?? 0);
    if (workers < 1) {
      return { ready: false, reason: "the Subject has no worker", workers, subject: subject.pid };
    }
    return { ready: true, workers, subject: subject.pid };
  }

  /** Pushes a request; 202 with its id once the Subject accepted it. */
  async #accept(flow: string, values: Values, id: string, key?: string): Promise<Answer> {
    try {
      const sent = this.#client.send(flow, values, { id, key });
      const timeout = this.#o.waitTimeout ?? 30_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), timeout));
      const r = await Promise.race([sent, late]).finally(() => clearTimeout(timer));
      if (r === undefined) {
        sent.catch(() => {});
        return {
          status: 504,
          body: problem("timeout", `the Subject did not accept the request within ${timeout} ms`, id),
        };
      }
      return { status: 202, body: { id } };
    } catch (e) {
      return failure(e, id);
    }
  }

  /** Waits for the pause publications of `flow` (subscribed once per flow). */
  #watchPauses(flow: string): Promise<unknown> {
    let p = this.#pauseSubs.get(flow);
    if (!p) {
      p = this.#client.subscribe(`${flow}~ASYNC~`).then((it) => {
        void (async () => {
          for await (const pub of it) if (pub.resume !== undefined) this.#pauseWaiters.get(pub.id)?.(pub);
        })();
      });
      p.catch(() => this.#pauseSubs.delete(flow));
      this.#pauseSubs.set(flow, p);
    }
    return p;
  }

  /** Runs a request to its final publication, or its first pause. */
  #run(flow: string, values: Values, id: string, key?: string): Promise<Answer> {
    return this.#untilFinalOrPause(
      flow,
      id,
      (signal) => this.#client.request(flow, values, { id, key, signal }),
    );
  }

  #resume(token: string, values: Values): Promise<Answer> {
    const named = parseToken(token);
    const id = crypto.randomUUID();
    return this.#untilFinalOrPause(
      named?.flow ?? "",
      named?.id ?? id,
      () => this.#client.resume(token, values, { id, timeout: this.#o.waitTimeout }),
    );
  }

  async #untilFinalOrPause(
    flow: string,
    id: string,
    start: (signal: AbortSignal) => Promise<Publication>,
  ): Promise<Answer> {
    const ac = new AbortController();
    try {
      const timeout = this.#o.waitTimeout ?? 30_000;
      if (!this.#pausesWatched.has(flow)) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const subscribed = await Promise.race([
          this.#watchPauses(flow).then(() => true),
          new Promise<false>((r) => timer = setTimeout(() => r(false), timeout)),
        ]);
        clearTimeout(timer);
        if (!subscribed) return { status: 504, body: problem("timeout", "no deployment answered", id) };
        this.#pausesWatched.add(flow);
      }
      const paused = new Promise<Publication>((r) => this.#pauseWaiters.set(id, r));
      const final = start(ac.signal);
      final.catch(() => {});
      const p = await Promise.race([final, paused]);
      return answerOf(p);
    } catch (e) {
      return failure(e, id);
    } finally {
      this.#pauseWaiters.delete(id);
      ac.abort();
    }
  }

  /** `GET /v1/events`: publications on `prefix` as Server-Sent Events. */
  async #eventStream(prefix: string): Promise<Response> {
    const enc = new TextEncoder();
    const sink = new StreamSink(this.#o.clientBuffer ?? 1024 * 1024, () => this.#stats.cutOff++, this.#log);
    const it = await this.#client.subscribe(prefix);
    const heartbeat = setInterval(
      () => sink.offer(enc.encode(": heartbeat\n\n")),
      this.#o.heartbeat ?? 15_000,
    );
    const stop = () => {
      clearInterval(heartbeat);
      void it.return?.();
      if (this.#streams.delete(stop)) this.#stats.streams--;
    };
    this.#streams.add(stop);
    this.#stats.streams++;
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
  #webSocket(req: Request, caller?: Caller): Response {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: WS_IDLE_TIMEOUT });
    const limit = this.#o.clientBuffer ?? 1024 * 1024;
    const subs = new Map<string, AsyncIterableIterator<Publication>>();
    let cut = false;
    const emit = (msg: unknown) => {
      if (cut || socket.readyState !== WebSocket.OPEN) return;
      const data = JSON.stringify(msg);
      if (socket.bufferedAmount + data.length > limit) {
        cut = true;
        this.#stats.cutOff++;
        const reason = `slow client: more than ${limit} bytes waiting to be sent`;
        this.#log.warn("WebSocket client cut off: {reason}", { reason });
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
      this.#o.heartbeat ?? 15_000,
    );
    const stop = () => {
      clearInterval(heartbeat);
      for (const it of subs.values()) void it.return?.();
      subs.clear();
      if (this.#streams.delete(stop)) this.#stats.streams--;
    };
    this.#streams.add(stop);
    this.#stats.streams++;
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
        if (caller && !this.#auth!.allowPrefix(caller, prefix)) {
          return emit({ type: "error", message: `this token may not subscribe to "${prefix}"` });
        }
        if (subs.has(prefix)) return;
        const it = await this.#client.subscribe(prefix);
        if (cut) return void it.return?.();
        subs.set(prefix, it);
        emit({ type: "subscribed", prefix });
        for await (const p of it) emit({ type: "publication", ...publicationJson(p) });
        return;
      }
      if (m.type === "send") {
        const flow = typeof m.flow === "string" ? m.flow : "";
        const values = m.values ?? {};
        const id = typeof m.id === "string" && m.id.length > 0 && m.id.length <= 200
          ? m.id
          : crypto.randomUUID();
        if (values === null || typeof values !== "object" || Array.isArray(values)) {
          return emit({ type: "error", id, message: "values must be a JSON object" });
        }
        if (caller) {
          if (!this.#auth!.allow(caller, flow)) {
            return emit({ type: "error", id, status: 403, message: `this token may not use flow "${flow}"` });
          }
          const wait = this.#auth!.take(caller);
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
        const a = m.wait
          ? await this.#run(flow, values as Values, id, key)
          : await this.#accept(flow, values as Values, id, key);
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

  /** Stops listening and closes every stream and the client. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const s of [...this.#streams]) s();
      for (const it of this.#errorSubs) void it.return?.();
      await this.#server.shutdown().catch(() => {});
      await this.#client.close();
      await this.#metricsSub.close().catch(() => {});
      await this.#reactor.close();
    })();
    return this.#closed;
  }

  /** Resolves once closed. */
  closed(): Promise<void> {
    return this.#closed ?? this.#server.finished;
  }

  /** Same as {@linkcode Gateway.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Chunks for one event-stream client, at most `limit` bytes queued: the response body pulls
 * from it at the client's pace, so a client that does not read fills it and is cut off (its
 * stream errors, which closes the connection), never growing the gateway's memory.
 */
class StreamSink {
  readonly #q: ByteQueue;
  readonly #limit: number;
  readonly #onCut: () => void;
  readonly #log: ReturnType<typeof logger>;
  #wake?: () => void;
  #cut?: string;
  #ended = false;
  #onCutStream?: () => void;
  onEnd?: () => void;

  constructor(limit: number, onCut: () => void, log: ReturnType<typeof logger>) {
    this.#q = new ByteQueue(limit);
    this.#limit = limit;
    this.#onCut = onCut;
    this.#log = log;
  }

  offer(chunk: Uint8Array): void {
    if (this.#cut || this.#ended) return;
    if (!this.#q.push(chunk)) {
      this.#cut = `slow client: more than ${this.#limit} bytes waiting to be sent`;
      this.#q.clear();
      this.#onCut();
      this.#log.warn("Event-stream client cut off: {reason}", { reason: this.#cut });
      this.#onCutStream?.();
    }
    this.#wake?.();
  }

  stream(last: (reason: string) => Uint8Array): ReadableStream<Uint8Array> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let told = false;
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    // Erroring the body is what makes Deno drop the connection (closing it would end the
    // response and keep the connection alive for the next request).
    const abort = () => {
      if (this.#ended) return;
      try {
        controller.error(new Error(`event stream cut off: ${this.#cut}`));
      } catch { /* closed meanwhile */ }
      end();
    };
    const end = () => {
      if (this.#ended) return;
      this.#ended = true;
      clearTimeout(timer);
      this.#q.clear();
      this.onEnd?.();
    };
    this.#onCutStream = () => {
      // A client that reads no more is not waited for: the connection goes within 2 s.
      timer = setTimeout(abort, 2000);
    };
    return new ReadableStream<Uint8Array>({
      start: (c) => void (controller = c),
      pull: async (c) => {
        for (;;) {
          if (this.#ended) return;
          if (this.#cut) {
            // The reason goes last, for a client that still reads; then the connection goes.
            if (told) return abort();
            told = true;
            return c.enqueue(last(this.#cut));
          }
          const chunk = this.#q.shift();
          if (chunk) return c.enqueue(chunk);
          await new Promise<void>((r) => this.#wake = r);
          this.#wake = undefined;
        }
      },
      cancel: () => end(),
    }, { highWaterMark: 0 });
  }
}

function problem(code: string, message: string, id?: string): unknown {
  return { error: { code, message }, ...(id ? { id } : {}) };
}

function badRequest(message: string): Answer {
  return { status: 400, body: problem("bad_request", message) };
}

function send(c: HonoContext, a: Answer): Response {
  return c.json(a.body, a.status as 200, a.headers);
}

function refuse(c: HonoContext, r: Refusal): Response {
  const headers: Record<string, string> = {};
  if (r.status === 401) headers["WWW-Authenticate"] = 'Bearer realm="zmanager"';
  if (r.retryAfter !== undefined) headers["Retry-After"] = String(r.retryAfter);
  const code = r.status === 401 ? "unauthorized" : r.status === 403 ? "forbidden" : "rate_limited";
  return c.json(problem(code, r.message), r.status as 401, headers);
}

/** The body as a values object, or a 400 answer. An empty body is `{}`. */
async function readValues(c: HonoContext): Promise<{ values: Values } | { answer: Answer }> {
  const raw = await c.req.text();
  if (raw.trim() === "") return { values: {} };
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    return { answer: badRequest(`the body is not JSON: ${(e as Error).message}`) };
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    return { answer: badRequest("the body must be a JSON object") };
  }
  return { values: v as Values };
}

/** The answer of a final or pause publication. */
function answerOf(p: Publication): Answer {
  const body = publicationJson(p);
  if (p.error) {
    const status = errorStatus(p.error.code);
    return {
      status,
      body,
      headers: p.error.code === "overloaded" ? { "Retry-After": String(OVERLOADED_RETRY_AFTER) } : undefined,
    };
  }
  if (p.resume !== undefined) {
    return { status: 202, body, headers: { Location: `/v1/resume/${encodeURIComponent(p.resume)}` } };
  }
  return { status: 200, body };
}

function failure(e: unknown, id: string): Answer {
  if (e instanceof RequestTimeoutError) return { status: 504, body: problem("timeout", e.message, id) };
  if (e instanceof RequestRefusedError) {
    return { status: e.reason === "oversize" ? 413 : 400, body: problem(e.reason, e.message, id) };
  }
  return { status: 503, body: problem("unavailable", String((e as Error)?.message ?? e), id) };
}
