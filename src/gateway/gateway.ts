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
import { Client } from "../client/client.ts";
import type { Values } from "../handler.ts";
import { logger } from "../log.ts";
import { tryParseActionKey } from "../topic/action_key.ts";
import { formatActionKey } from "../topic/action_key.ts";
import { decodeHeader, parseToken, type Publication, publicationJson, text } from "../wire/protocol.ts";
import { Reactor, type ReactorSocket } from "../zmq/reactor.ts";
import { connectRedialing, curveClientOptions } from "../zmq/curve.ts";
import { METRICS_TOPIC, type RoleMetrics } from "../roles/metrics.ts";
import { Auth, type Caller, type Refusal } from "./auth.ts";
import { openApiDocument } from "./openapi.ts";
import { PROMETHEUS_CONTENT_TYPE, renderMetrics } from "./prometheus.ts";
import { chartLibrary, dashboardPage } from "./dashboard.ts";
import { PausedStore } from "../roles/paused_store.ts";
import { eventStream, type StreamHost, webSocket } from "./streams.ts";
import type { GatewayOptions, GatewayStats } from "./options.ts";

export type { GatewayOptions, GatewayStats } from "./options.ts";
import {
  DEFAULT_HTTP_BODY_TIMEOUT,
  DEFAULT_HTTP_HEADER_TIMEOUT,
  DEFAULT_HTTP_HEARTBEAT,
  DEFAULT_HTTP_IDLE_TIMEOUT,
  DEFAULT_HTTP_MAX_CONNECTIONS,
  DEFAULT_HTTP_MAX_STREAMS,
} from "../config.ts";
import { connectionCap, softFileLimit } from "./connections.ts";
import { type GuardedServer, serveGuarded } from "./http_server.ts";
import {
  type Answer,
  answerOf,
  badRequest,
  failure,
  problem,
  readValues,
  refuse,
  scopedId,
  scopeKey,
  send,
} from "./answers.ts";

/** A remembered POST's answer: pending, then settled (with its body serialized). */
interface Remembered {
  readonly answer: Promise<Answer>;
  /** The first POST's acknowledgement: 202, or why not (see `Gateway#accept`). */
  readonly accepted: Promise<Answer>;
  settled?: Answer;
}

/** Idempotency keys remembered with their answers. */
const IDEMPOTENCY_MEMORY = 10_000;
/** Bytes of remembered answers (as JSON) kept at most, by default. */
export const DEFAULT_IDEMPOTENCY_BYTES = 64 * 1024 * 1024;
/** Error publications the dashboard lists. */
const RECENT_ERRORS = 50;
/**
 * How long a request may wait for the next message to leave with (the reactor's
 * `coalesceSendsMs`): the HTTP server hands over one request per event-loop turn, and a request sent
 * alone wakes the reactor's off-thread poll, a thread hop each way (docs/gateway.md, _Throughput_).
 */
const COALESCE_SENDS_MS = 1;
/** Milliseconds after which a role's metrics count as stale (the role is gone). */
const METRICS_STALE_MS = 3500;

/** This process's soft open-file limit (`/proc/self/limits`), where it can be read. */
function openFileLimit(): number | undefined {
  try {
    return softFileLimit(Deno.readTextFileSync("/proc/self/limits"));
  } catch {
    return undefined;
  }
}

/** A running gateway. */
export class Gateway {
  readonly #o: GatewayOptions;
  readonly #log = logger("gateway");
  readonly #reactor: Reactor;
  readonly #client: Client;
  readonly #metricsSub: ReactorSocket;
  readonly #auth?: Auth;
  readonly #server: GuardedServer;
  readonly #bodyTimeout: number;
  readonly #bodyTimedOut = () => this.#server.counters.bodyTimedOut++;
  /** Aborted when the gateway starts closing: a body still coming is not waited for. */
  readonly #closing = new AbortController();
  /** Answers by idempotency key (flow and key), in arrival order: the oldest are forgotten first. */
  readonly #answers = new Map<string, Remembered>();
  /** The sum of the remembered answers' `json` lengths. */
  #answerBytes = 0;
  /** Waiters for the pause publication of a request id. */
  readonly #pauseWaiters = new Map<string, (p: Publication) => void>();
  readonly #pauseSubs = new Map<string, Promise<unknown>>();
  /** Flows whose pause subscription is active. */
  readonly #pausesWatched = new Set<string>();
  /** The latest metrics of each role process, by `role-pid`. */
  readonly #metrics = new Map<string, RoleMetrics>();
  readonly #streams = new Set<() => void>();
  readonly #stats: GatewayStats = { responses: {}, streams: 0, cutOff: 0 };
  /** What the event streams and WebSockets use of this gateway (streams.ts). */
  readonly #streamHost: StreamHost;
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
    this.#streamHost = {
      client,
      clientBuffer: o.clientBuffer ?? 1024 * 1024,
      heartbeat: o.heartbeat ?? DEFAULT_HTTP_HEARTBEAT,
      stats: this.#stats,
      streams: this.#streams,
      byCaller: new Map(),
      log: this.#log,
      auth: this.#auth,
      run: (flow, values, id, key, keep) => this.#run(flow, values, id, key, keep),
      accept: (flow, values, id, key, keep) => this.#accept(flow, values, id, key, keep).accepted,
    };
    this.#bodyTimeout = o.bodyTimeout ?? DEFAULT_HTTP_BODY_TIMEOUT;
    const wanted = o.maxConnections ?? DEFAULT_HTTP_MAX_CONNECTIONS;
    const { cap, clamped } = connectionCap(wanted, openFileLimit());
    if (clamped && o.connectionLimits !== false) {
      this.#log.warn(
        "The open-file limit holds {cap} HTTP connections, not {wanted} (http_max_connections): raise it (ulimit -n) or lower the setting",
        { cap, wanted },
      );
    }
    this.#server = serveGuarded({
      hostname: o.hostname ?? "127.0.0.1",
      port: o.port ?? 8080,
      maxConnections: cap,
      maxConnectionsPerAddress: o.maxConnectionsPerAddress ?? 0,
      headerTimeout: o.headerTimeout ?? DEFAULT_HTTP_HEADER_TIMEOUT,
      idleTimeout: o.idleTimeout ?? DEFAULT_HTTP_IDLE_TIMEOUT,
      limits: o.connectionLimits ?? true,
      warn: (message) => this.#log.warn("{message}", { message }),
    }, this.#app().fetch);
  }

  /** Connects to the deployment and starts serving. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const reactor = new Reactor({ coalesceSendsMs: COALESCE_SENDS_MS });
    const client = await Client.connect({
      subject: options.subject,
      publisher: options.publisher,
      reactor,
      requestTimeout: options.waitTimeout ?? 30_000,
      curve: options.curve,
      maxMessageSize: options.maxMessageSize,
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
    return {
      ...this.#stats,
      responses: { ...this.#stats.responses },
      connections: { ...this.#server.counters, limited: this.#server.limited },
    };
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
      return c.body(renderMetrics(this.roles(), this.stats()), 200, {
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
      const body = await readValues(c, this.#bodyTimeout, this.#bodyTimedOut, this.#closing.signal);
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
      const id = idem === undefined ? crypto.randomUUID() : await scopedId(caller, flow, idem);
      const wait = c.req.query("wait") !== "0";
      if (idem === undefined) {
        return send(
          c,
          await (wait ? this.#run(flow, values, id, key) : this.#accept(flow, values, id, key).accepted),
        );
      }
      // A retried POST: the first one's answer, or a wait for it (keys are per token and flow);
      // with ?wait=0, 202 again, or the first one's refusal.
      const slot = scopeKey(caller, flow, idem);
      const known = this.#answers.get(slot);
      if (known) {
        if (wait) return send(c, await known.answer);
        // Answered once the first one was acknowledged or refused (a 202 before, for a request
        // the Subject then refused: an outside attack's concurrent retries got 202s for nothing).
        const settled = known.settled;
        if (settled) return send(c, settled.status >= 300 ? settled : { status: 202, body: { id } });
        return send(c, await known.accepted);
      }
      // Its final is kept at the Subject too: a retry that reaches a restarted gateway gets it.
      const accepting = this.#accept(flow, values, id, key, true);
      const answer = this.#remember(slot, accepting);
      return send(c, await (wait ? answer : accepting.accepted));
    });
    app.post("/v1/resume/:token", async (c) => {
      const token = c.req.param("token");
      const caller = await this.#admit(c, parseToken(token)?.flow ?? "");
      if (caller instanceof Response) return caller;
      const body = await readValues(c, this.#bodyTimeout, this.#bodyTimedOut, this.#closing.signal);
      if ("answer" in body) return send(c, body.answer);
      return send(c, await this.#resume(token, body.values));
    });
    app.get("/v1/events", async (c) => {
      const prefix = c.req.query("prefix") ?? "";
      const who = await this.#caller(
        c,
        (w) =>
          this.#auth!.allowPrefix(w, prefix)
            ? undefined
            : { status: 403, message: `this token may not subscribe to "${prefix}"` },
      );
      if ("status" in who) return refuse(c, who);
      // Checked and taken with no await between: streams opened at once cannot all pass.
      const full = this.#streamRoom(who.entry ? who as Caller : undefined);
      if (full) return refuse(c, full);
      return await eventStream(this.#streamHost, prefix, who.entry?.name);
    });
    app.get("/v1/ws", async (c) => {
      const who = await this.#caller(c);
      if ("status" in who) return refuse(c, who);
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        return c.json(problem("bad_request", "expected a WebSocket upgrade"), 426);
      }
      // Checked and taken with no await between (`webSocket` counts it at once).
      const full = this.#streamRoom(who.entry ? who as Caller : undefined);
      if (full) return refuse(c, full);
      return webSocket(this.#streamHost, c.req.raw, who.entry ? who as Caller : undefined);
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

  /**
   * The caller (with auth on) or a refusal: 401; `check`'s (a 403); 429 over its rate (every
   * authenticated request that passed `check` counts, event streams and WebSocket connections
   * too, even one then refused for the stream caps). `{}` when auth is off.
   */
  async #caller(
    c: HonoContext,
    check?: (who: Caller) => Refusal | undefined,
  ): Promise<Caller | Refusal | { entry?: undefined }> {
    if (!this.#auth) return {};
    const who = await this.#auth.authenticate(c.req.header("Authorization"));
    if ("status" in who) return who;
    const refused = check?.(who);
    if (refused) return refused;
    const wait = this.#auth.take(who);
    return wait > 0 ? { status: 429, message: "over this token's rate", retryAfter: Math.ceil(wait) } : who;
  }

  /**
   * Why one more event stream or WebSocket may not open now: the gateway has `maxStreams` open
   * (503), or `caller` its token's `streams` (429); `undefined` if it may.
   */
  #streamRoom(caller?: Caller): Refusal | undefined {
    const max = this.#o.maxStreams ?? DEFAULT_HTTP_MAX_STREAMS;
    if (this.#stats.streams >= max) {
      const message = `the gateway has ${max} event streams and WebSockets open (http_max_streams)`;
      return { status: 503, message, retryAfter: 1 };
    }
    const own = caller?.entry.streams;
    if (own !== undefined && (this.#streamHost.byCaller.get(caller!.entry.name) ?? 0) >= own) {
      const message = `this token has ${own} event streams and WebSockets open (its "streams")`;
      return { status: 429, message, retryAfter: 1 };
    }
    return undefined;
  }

  /**
   * With auth on: a refusal (401, 403, 429) unless the caller may run `flow` now; else the
   * caller's token name ("" with auth off).
   */
  async #admit(c: HonoContext, flow: string): Promise<Response | string> {
    const who = await this.#caller(
      c,
      (w) =>
        this.#auth!.allow(w, flow)
          ? undefined
          : { status: 403, message: `this token may not use flow "${flow}"` },
    );
    if ("status" in who) return refuse(c, who);
    return who.entry?.name ?? "";
  }

  /**
   * Remembers the answer of `slot`'s first POST; resolves with it serialized once (`json`), which
   * is what is sent and what its size is counted by.
   */
  #remember(
    slot: string,
    { answer, accepted }: { answer: Promise<Answer>; accepted: Promise<Answer> },
  ): Promise<Answer> {
    const r: Remembered = {
      accepted,
      answer: answer.then((a) => {
        const json = JSON.stringify(a.body) ?? "null";
        r.settled = { ...a, json };
        if (this.#answers.get(slot) !== r) return r.settled;
        // A POST that timed out is forgotten: a retry waits for the same request's final again.
        // So is one answered 503 (overloaded): its retry, after Retry-After, is sent again.
        if (a.status === 504 || a.status === 503) {
          this.#forget(slot);
          return r.settled;
        }
        // Bounded in bytes too: 10,000 answers of values up to max_message_size (1 MiB by
        // default) could hold about 10 GB.
        this.#answerBytes += json.length;
        const limit = this.#o.idempotencyBytes ?? DEFAULT_IDEMPOTENCY_BYTES;
        while (this.#answerBytes > limit && this.#answers.size > 1) {
          this.#forget(this.#answers.keys().next().value!);
        }
        return r.settled;
      }),
    };
    this.#answers.set(slot, r);
    while (this.#answers.size > IDEMPOTENCY_MEMORY) this.#forget(this.#answers.keys().next().value!);
    return r.answer;
  }

  #forget(slot: string): void {
    const r = this.#answers.get(slot);
    if (!r) return;
    this.#answers.delete(slot);
    // Counted only once settled, and not when it timed out (forgotten before it was counted).
    if (r.settled && r.settled.status !== 504) this.#answerBytes -= r.settled.json?.length ?? 0;
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

  /**
   * `?wait=0`: `accepted` is the answer once the Subject acknowledged the request (202), or why
   * not. The request is kept until its final publication (`answer`), as a waited one is, so a
   * Subject that dies before finishing it gets it again (`Client.submit`); `send()` kept nothing,
   * and an outside attack lost 1 in 3,000 finals after a 202 when it killed the Subject.
   */
  #accept(
    flow: string,
    values: Values,
    id: string,
    key?: string,
    keep = false,
  ): { accepted: Promise<Answer>; answer: Promise<Answer> } {
    const acked = Promise.withResolvers<"accepted" | "refused">();
    const answer = this.#untilFinalOrPause(flow, id, (signal) => {
      const s = this.#client.submit(flow, values, { id, key, signal, keep });
      s.accepted.then(() => acked.resolve("accepted"), () => acked.resolve("refused"));
      return s.final;
    });
    const accepted = (async (): Promise<Answer> => {
      const timeout = this.#o.waitTimeout ?? 30_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), timeout));
      try {
        const r = await Promise.race([acked.promise, answer, late]);
        if (r === "accepted") return { status: 202, body: { id } };
        if (r === "late") {
          return {
            status: 504,
            body: problem(
              "timeout",
              `the Subject did not acknowledge the request within ${timeout} ms; it may still run ` +
                "(retry with the same Idempotency-Key to run it at most once)",
              id,
            ),
          };
        }
        if (r === "refused") return await answer; // the refusal, as a waited request gets it
        // Answered before the acknowledgement was seen: a final or a pause was accepted first.
        return r.status < 300 ? { status: 202, body: { id } } : r;
      } finally {
        clearTimeout(timer);
      }
    })();
    return { accepted, answer };
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
  #run(flow: string, values: Values, id: string, key?: string, keep = false): Promise<Answer> {
    return this.#untilFinalOrPause(
      flow,
      id,
      (signal) => this.#client.request(flow, values, { id, key, signal, keep }),
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
    let pausedFirst = false;
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
      const paused = new Promise<Publication>((r) =>
        this.#pauseWaiters.set(id, (p) => {
          pausedFirst = true;
          r(p);
        })
      );
      const final = start(ac.signal);
      final.catch(() => {});
      const p = await Promise.race([final, paused]);
      return answerOf(p);
    } catch (e) {
      return failure(e, id);
    } finally {
      this.#pauseWaiters.delete(id);
      // Only a request that paused is still waited for by the client (an abort costs a
      // DOMException with its stack: ~5% of the gateway's time when every request paid it).
      if (pausedFirst) ac.abort();
    }
  }

  /** Stops listening and closes every stream and the client. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort();
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
