// The HTTP gateway over real roles: `cli.ts start --http` (the gateway as a supervised process),
// real HTTP on loopback, real ZeroMQ behind it.
import assert from "node:assert/strict";
import { hashToken } from "../src/gateway/auth.ts";
import { Gateway } from "../src/gateway/gateway.ts";
import type { GatewayOptions } from "../src/gateway/options.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { freePort, rolePids } from "../testing/deployment.ts";
import { readUntil } from "../src/_async.ts";

import { type Deployment, runCli, startDeployment } from "./helpers.ts";

/** A deployment of the basic component with the gateway (`start --http`); its base URL. */
async function withGateway(args: string[] = []): Promise<{ d: Deployment; url: string }> {
  const port = freePort();
  const d = await startDeployment({ workers: 1, args: ["--http", `127.0.0.1:${port}`, ...args] });
  return { d, url: `http://127.0.0.1:${port}` };
}

async function post(
  url: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const r = await fetch(url, { method: "POST", body, headers });
  return { status: r.status, json: await r.json(), headers: r.headers };
}

/** A gateway in this process for deployment `d`, on a free port, with `options` over the defaults. */
function gatewayOn(d: Deployment, options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return Gateway.start({ subject: d.subject, publisher: d.publisher, flows: new Map(), port: 0, ...options });
}

const errorCode = (j: Record<string, unknown>) => (j.error as { code?: string } | undefined)?.code;

Deno.test("gateway: each outcome's HTTP status, the body `send --wait` prints, resumes", async (t) => {
  const { d, url } = await withGateway(["--step-limit", "4", "--handler-timeout", "500"]);
  try {
    await t.step("done: 200 with the final publication, as send --wait prints it", async () => {
      const r = await post(`${url}/v1/flows/Three`, '{"x":1}', { "Idempotency-Key": "same-as-cli" });
      assert.equal(r.status, 200);
      // Sent whole, with its length (not chunked, as a stream body would be).
      assert.equal(r.headers.get("transfer-encoding"), null);
      assert.ok(Number(r.headers.get("content-length")) > 0, "Content-Length");
      const cli = await runCli(["send", "Three", "--data", '{"x":1}', "--wait", ...d.flags]);
      assert.equal(cli.code, 0, cli.stderr);
      const printed = JSON.parse(cli.stdout);
      assert.deepEqual({ ...r.json, id: "" }, { ...printed, id: "" });
      assert.match(String(r.json.id), /^same-as-cli~[0-9a-f]{32}$/, "the key, scoped to its caller and flow");
      assert.deepEqual((r.json.values as { trace: string[] }).trace, ["one", "two", "three"]);
    });
    const cases: [string, string | undefined, number, string][] = [
      ["Nope", undefined, 404, "unknown_flow"],
      ["Three?key=X?Y?Z", undefined, 422, "no_step"],
      ["Unmapped", undefined, 422, "no_handler"],
      ["Boom", undefined, 500, "handler_error"],
      ["Slow", '{"ms": 5000}', 504, "timeout"],
      ["Loop", undefined, 508, "step_limit"],
      ["Three", "[1, 2]", 400, "bad_request"],
      ["Three", "{not json", 400, "bad_request"],
    ];
    for (const [path, body, status, code] of cases) {
      await t.step(`${code}: ${status} (POST /v1/flows/${path}${body ? ` ${body}` : ""})`, async () => {
        const r = await post(`${url}/v1/flows/${path}`, body);
        assert.equal(r.status, status, JSON.stringify(r.json));
        assert.equal(errorCode(r.json), code);
        if (code === "handler_error") assert.equal((r.json.error as { message: string }).message, "kaboom");
      });
    }
    await t.step("paused: 202 with Location; POST there resumes (200); a second resume: 409", async () => {
      const r = await post(`${url}/v1/flows/Pause`, '{"a":1}');
      assert.equal(r.status, 202);
      const location = r.headers.get("Location")!;
      assert.equal(location, `/v1/resume/${encodeURIComponent(String(r.json.resume))}`);
      const resumed = await post(`${url}${location}`, '{"b":2}');
      assert.equal(resumed.status, 200, JSON.stringify(resumed.json));
      assert.equal(resumed.json.id, r.json.id);
      assert.deepEqual(resumed.json.values, { a: 1, b: 2, trace: ["one", "two"] });
      const again = await post(`${url}${location}`, "{}");
      assert.equal(again.status, 409);
      assert.equal(errorCode(again.json), "bad_resume");
    });
    await t.step("?wait=0: 202 with the id at once; the request still runs", async () => {
      const client = await d.connect();
      try {
        const finals = await client.subscribe("Three~~~~");
        const r = await post(`${url}/v1/flows/Three?wait=0`, "{}");
        assert.equal(r.status, 202);
        assert.equal(typeof r.json.id, "string");
        for await (const p of finals) if (p.id === r.json.id) break;
        await finals.return!();
      } finally {
        await client.close();
      }
    });
    await t.step(
      "oversize: 413 at once for values just over max_message_size and 20 times over it (waited and ?wait=0)",
      async () => {
        for (const bytes of [1_048_600, 20_000_000]) {
          for (const query of ["", "?wait=0"]) {
            const t0 = performance.now();
            const r = await post(
              `${url}/v1/flows/Three${query}`,
              JSON.stringify({ blob: "x".repeat(bytes) }),
            );
            const ms = performance.now() - t0;
            assert.equal(r.status, 413, `${bytes} bytes${query}: ${JSON.stringify(r.json)}`);
            assert.equal(errorCode(r.json), "oversize");
            assert.match(
              (r.json.error as { message: string }).message,
              /^The client refused request .*max_message_size/,
            );
            // Sent on, 20 MB was dropped by the Subject's socket with the connection, unanswered: 504 after 30 s.
            assert.ok(ms < 5_000, `${bytes} bytes${query}: answered after ${Math.round(ms)} ms`);
          }
        }
        assert.equal((await post(`${url}/v1/flows/Three`, "{}")).status, 200, "and the gateway serves on");
      },
    );
    await t.step("GET /v1/flows, /v1/openapi.json (one operation per flow), /healthz, /readyz", async () => {
      const flows = await (await fetch(`${url}/v1/flows`)).json() as { name: string; steps: string[] }[];
      assert.ok(flows.some((f) => f.name === "Three" && f.steps.includes("T?Three?two")));
      const doc = await (await fetch(`${url}/v1/openapi.json`)).json();
      assert.equal(doc.openapi, "3.1.0");
      for (const f of flows) assert.ok(doc.paths[`/v1/flows/${f.name}`]?.post?.operationId, f.name);
      assert.equal(doc.paths["/v1/flows/Three"].post.responses["508"] !== undefined, true);
      assert.equal(await fetch(`${url}/healthz`).then((r) => (r.body?.cancel(), r.status)), 200);
      const ready = await fetch(`${url}/readyz`);
      assert.equal(ready.status, 200);
      assert.ok((await ready.json()).workers >= 1);
    });
  } finally {
    await d.stop();
  }
});

Deno.test("gateway: an Idempotency-Key retried 3 times runs once (in turn and at once)", async () => {
  const { d, url } = await withGateway();
  const client = await d.connect();
  try {
    const finals: Publication[] = [];
    const stream = await client.subscribe("Three~~~~");
    const counting = (async () => {
      for await (const p of stream) finals.push(p);
    })();
    const inTurn: Awaited<ReturnType<typeof post>>[] = [];
    for (let i = 0; i < 3; i++) {
      inTurn.push(await post(`${url}/v1/flows/Three`, "{}", { "Idempotency-Key": "k-1" }));
    }
    const atOnce = await Promise.all(
      [0, 1, 2].map(() => post(`${url}/v1/flows/Three`, "{}", { "Idempotency-Key": "k-2" })),
    );
    for (const r of [...inTurn, ...atOnce]) assert.equal(r.status, 200);
    assert.deepEqual(inTurn[1].json, inTurn[0].json);
    assert.deepEqual(inTurn[2].json, inTurn[0].json);
    assert.deepEqual(atOnce[1].json, atOnce[0].json);
    // A probe sent last: once its final is here, any repeat's final would be too.
    await client.request("Three", {});
    await stream.return!();
    await counting;
    assert.equal(finals.filter((p) => p.id === inTurn[0].json.id).length, 1);
    assert.equal(finals.filter((p) => p.id === atOnce[0].json.id).length, 1);
    assert.equal(finals.length, 3, "k-1, k-2 and the probe");
  } finally {
    await client.close();
    await d.stop();
  }
});

Deno.test("gateway: the answers remembered for Idempotency-Key retries are bounded in bytes; past the bound the oldest key is forgotten, and its retry gets the Subject's kept final", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d, { idempotencyBytes: 250_000, waitTimeout: 2000 });
  try {
    const blob = "x".repeat(100_000);
    const run = (i: number, key: string) =>
      post(`${g.url}/v1/flows/Three`, JSON.stringify({ blob, i }), { "Idempotency-Key": key });
    for (let i = 0; i < 4; i++) assert.equal((await run(i, `b-${i}`)).status, 200);
    // Each answer is over 100 KB (its values come back): 250,000 bytes hold the last two.
    const newest = await run(99, "b-3");
    assert.equal(
      (newest.json.values as { i: number }).i,
      3,
      "the newest key is remembered: the first answer",
    );
    // The oldest was forgotten: its retry is sent again, and the Subject drops it as a duplicate
    // (its duplicate_window): it is not run twice; the Subject kept its final (the request was
    // sent with keep) and publishes it again, so the retry still gets the first run's answer.
    const oldest = await run(100, "b-0");
    assert.equal(oldest.status, 200, JSON.stringify(oldest.json).slice(0, 200));
    assert.equal((oldest.json.values as { i: number }).i, 0, "the first run's final");
    assert.equal(oldest.json.replay, true);
  } finally {
    await g.close();
    await d.stop();
  }
});

Deno.test("gateway: 503 with Retry-After while the Subject is shutting down (overloaded)", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d);
  try {
    assert.equal((await post(`${g.url}/v1/flows/Three`, "{}")).status, 200); // subscribed, warm
    const slow = post(`${g.url}/v1/flows/Slow`, '{"ms": 6000}');
    await new Promise((r) => setTimeout(r, 300));
    d.process.kill("SIGINT"); // `start` stops the Subject first: it drains the slow request
    let r: Awaited<ReturnType<typeof post>> | undefined;
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 100));
      r = await post(`${g.url}/v1/flows/Three`, "{}");
      if (r.status !== 200) break;
    }
    assert.equal(r!.status, 503, JSON.stringify(r!.json));
    assert.equal(errorCode(r!.json), "overloaded");
    assert.equal(r!.headers.get("Retry-After"), "1");
    assert.equal((await slow).status, 200);
  } finally {
    await g.close();
    await d.stop();
  }
});

for (const auth of [false, true]) {
  Deno.test(`gateway: past http_max_streams open event streams and WebSockets, another is refused with 503 and Retry-After, until one closes${auth ? " (with tokens)" : ""}`, async () => {
    const d = await startDeployment({ workers: 1 });
    const tokens = auth ? [{ name: "t", sha256: await hashToken("t-secret") }] : undefined;
    // Heartbeats every 60 s: a client gone from an event stream is seen by its connection's read,
    // not by the stream's next write.
    const g = await gatewayOn(d, { maxStreams: 2, tokens, heartbeat: 60_000 });
    const withToken = (headers: Record<string, string> = {}) =>
      auth ? { ...headers, Authorization: "Bearer t-secret" } : headers;
    const open: Response[] = [];
    try {
      // Twenty at once: each place is checked and taken with no await between, so two open.
      const first = await Promise.all(
        Array.from({ length: 20 }, () => fetch(`${g.url}/v1/events?prefix=Three~`, { headers: withToken() })),
      );
      for (const r of first) {
        if (r.status === 200) open.push(r);
        else await r.body?.cancel();
      }
      assert.deepEqual(first.map((r) => r.status).sort(), [200, 200, ...Array(18).fill(503)]);
      for (
        const [path, headers] of [["/v1/events?prefix=", {}], ["/v1/ws", { Upgrade: "websocket" }]] as const
      ) {
        const r = await fetch(`${g.url}${path}`, { headers: withToken(headers) });
        // (A stream that opened would never end: read the body only once refused.)
        if (r.status !== 503) await r.body?.cancel();
        assert.equal(r.status, 503, path);
        const body = await r.json();
        assert.equal(r.headers.get("Retry-After"), "1");
        assert.equal(body.error.code, "overloaded");
        assert.match(body.error.message, /2 event streams and WebSockets open \(http_max_streams\)/);
      }
      assert.equal(g.stats().streams, 2);
      await open[0].body?.cancel();
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const r = await fetch(`${g.url}/v1/events?prefix=Three~`, { headers: withToken() });
        status = r.status;
        if (status === 200) open[0] = r;
        else await r.body?.cancel();
      }
      assert.equal(status, 200, "room again once one closed");
    } finally {
      // (The gateway's close waits for open responses: an event stream ends when its client goes.)
      for (const r of open) await r.body?.cancel();
      await g.close();
      await d.stop();
    }
  });
}

Deno.test("gateway: close ends open event streams and WebSockets at once (it waited for their clients before)", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d);
  const sse = await fetch(`${g.url}/v1/events?prefix=Three~`);
  const ws = new WebSocket(`${g.url.replace("http", "ws")}/v1/ws`);
  try {
    assert.equal(sse.status, 200);
    await new Promise((r) => ws.onopen = r);
    const wsClosed = new Promise<CloseEvent>((r) => ws.onclose = r);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise<"hung">((r) => timer = setTimeout(() => r("hung"), 5000));
    assert.equal(await Promise.race([g.close().then(() => "closed" as const), hung]), "closed");
    clearTimeout(timer);
    assert.equal((await wsClosed).code, 1001);
    const text = await sse.text(); // ends: the stream was closed, not cut
    assert.match(text, /^: subscribed to "Three~"/);
  } finally {
    await sse.body?.cancel().catch(() => {});
    ws.close();
    await g.close();
    await d.stop();
  }
});

Deno.test("gateway: one WebSocket holds at most 100 subscriptions; the 101st is refused until one is dropped", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d);
  const ws = new WebSocket(`${g.url.replace("http", "ws")}/v1/ws`);
  try {
    const got: { type: string; status?: number; prefix?: string }[] = [];
    let wake = () => {};
    ws.onmessage = (e) => {
      got.push(JSON.parse(e.data));
      wake();
    };
    await new Promise((r) => ws.onopen = r);
    const answers = async (n: number) => {
      for (let i = 0; i < 200 && got.length < n; i++) {
        await new Promise<void>((r) => (wake = r, setTimeout(r, 50)));
      }
    };
    // At once: the places are taken before the subscriptions are made.
    for (let i = 0; i <= 100; i++) ws.send(JSON.stringify({ type: "subscribe", prefix: `P${i}~` }));
    await answers(101);
    assert.equal(got.filter((m) => m.type === "subscribed").length, 100);
    const refused = got.filter((m) => m.type === "error");
    assert.equal(refused.length, 1);
    assert.equal(refused[0].status, 429);
    ws.send(JSON.stringify({ type: "unsubscribe", prefix: "P0~" }));
    ws.send(JSON.stringify({ type: "subscribe", prefix: "Q~" }));
    await answers(102);
    assert.deepEqual(got.at(-1), { type: "subscribed", prefix: "Q~" });
    ws.send(JSON.stringify({ type: "subscribe", prefix: "Q~" })); // held already: answered, not doubled
    await answers(103);
    assert.equal(got.length, 103, "the repeated subscribe is answered");
    assert.deepEqual(got.at(-1), { type: "subscribed", prefix: "Q~" });
  } finally {
    ws.close();
    await g.close();
    await d.stop();
  }
});

Deno.test("gateway: a WebSocket's subscriptions count against its token's rate, as its opening and sends do", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d, { tokens: [{ name: "t", sha256: await hashToken("t-secret"), rate: 3 }] });
  // (Deno's WebSocket takes headers; a browser's cannot send Authorization.)
  const ws = new WebSocket(`${g.url.replace("http", "ws")}/v1/ws`, {
    headers: { Authorization: "Bearer t-secret" },
  } as unknown as string[]);
  try {
    const got: { type: string; status?: number }[] = [];
    let wake = () => {};
    ws.onmessage = (e) => {
      got.push(JSON.parse(e.data));
      wake();
    };
    await new Promise((r) => ws.onopen = r); // the opening took one of the 3
    for (const p of ["A~", "B~", "C~"]) ws.send(JSON.stringify({ type: "subscribe", prefix: p }));
    for (let i = 0; i < 100 && got.length < 3; i++) {
      await new Promise<void>((r) => (wake = r, setTimeout(r, 50)));
    }
    assert.deepEqual(got.map((m) => m.type).sort(), ["error", "subscribed", "subscribed"]);
    assert.equal(got.find((m) => m.type === "error")?.status, 429);
  } finally {
    ws.close();
    await g.close();
    await d.stop();
  }
});

Deno.test("gateway: /readyz is 503 without a deployment", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmg" });
  const g = await Gateway.start({
    subject: `ipc://${dir}/subject`,
    publisher: `ipc://${dir}/im-pub`,
    flows: new Map(),
    port: 0,
  });
  try {
    const r = await fetch(`${g.url}/readyz`);
    assert.equal(r.status, 503);
    assert.match((await r.json()).reason, /Subject/);
    assert.equal(await fetch(`${g.url}/healthz`).then((r) => (r.body?.cancel(), r.status)), 200);
  } finally {
    await g.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Server-Sent Events of a response, parsed: `{event, data}` (comments as event ":"). */
async function* sseEvents(r: Response): AsyncGenerator<{ event: string; data: string }> {
  const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (block.startsWith(":")) yield { event: ":", data: block.slice(1).trim() };
        else {
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join(
            "\n",
          );
          yield { event, data };
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Checks that each of `ids` got its @PUBLISH step publication, then its `done`, and nothing else. */
function assertInOrder(byId: Map<string, string[]>, ids: string[]): void {
  for (const id of ids) assert.deepEqual(byId.get(id), ["approve", "done"], `request ${id}`);
}

const REQUESTS = 1000;

/** The id a WebSocket `send` chose, from its request id (`<id>~<32 hex>`: see `scopedId`). */
function chosenId(requestId: string): string {
  const m = /^(.*)~[0-9a-f]{32}$/.exec(requestId);
  assert.ok(m, `a request id scoped to its caller and flow: ${requestId}`);
  return m[1];
}

Deno.test("gateway: SSE and WebSocket receive the publications of 1,000 requests in order per request, with heartbeats", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await gatewayOn(d, { heartbeat: 200 });
  const service = await d.connect();
  const ac = new AbortController();
  try {
    await service.handle("T?Svc?approve", (v) => ({ ...v, approved: true }), { flow: "Svc" });
    // SSE: subscribed before anything is sent (the first event says so).
    const sse = await fetch(`${g.url}/v1/events?prefix=Svc~`, { signal: ac.signal });
    assert.equal(sse.headers.get("content-type"), "text/event-stream");
    const events = sseEvents(sse);
    assert.equal((await events.next()).value?.event, ":");
    // WebSocket: subscribes, then sends the requests itself.
    const ws = new WebSocket(`${g.url.replace("http", "ws")}/v1/ws`);
    const wsById = new Map<string, string[]>();
    let wsHeartbeats = 0;
    let accepted = 0;
    const wsDone = Promise.withResolvers<void>();
    const subscribed = Promise.withResolvers<void>();
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "subscribed") subscribed.resolve();
      if (m.type === "heartbeat") wsHeartbeats++;
      if (m.type === "accepted") accepted++;
      if (m.type === "error") wsDone.reject(new Error(e.data));
      if (m.type !== "publication") return;
      const list = wsById.get(chosenId(m.id)) ?? [];
      wsById.set(chosenId(m.id), [...list, m.action]);
      if (
        m.action === "done" && [...wsById.values()].filter((l) => l.at(-1) === "done").length === REQUESTS
      ) {
        wsDone.resolve();
      }
    };
    await new Promise((r) => ws.onopen = r);
    ws.send(JSON.stringify({ type: "subscribe", prefix: "Svc~" }));
    await subscribed.promise;
    const ids = Array.from({ length: REQUESTS }, (_, i) => `req-${i}`);
    for (const id of ids) ws.send(JSON.stringify({ type: "send", flow: "Svc", id, values: { i: id } }));

    const sseById = new Map<string, string[]>();
    let finals = 0;
    // (Not for-await: breaking out of it would end the stream.)
    for (let r = await events.next(); !r.done; r = await events.next()) {
      const e = r.value;
      if (e.event !== "publication") continue;
      const p = JSON.parse(e.data);
      sseById.set(chosenId(p.id), [...sseById.get(chosenId(p.id)) ?? [], p.action]);
      if (p.action === "done" && ++finals === REQUESTS) break;
    }
    await wsDone.promise;
    assertInOrder(sseById, ids);
    assertInOrder(wsById, ids);
    assert.equal(accepted, REQUESTS);
    // Heartbeats every 200 ms: the run lasts longer than that; wait for one more on each to be sure.
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(wsHeartbeats >= 1, "WebSocket heartbeats");
    const more = await events.next();
    assert.equal(more.value?.event, ":", "an SSE heartbeat");
    assert.equal(more.value?.data, "heartbeat");
    await events.return(undefined);
    ws.close();
    await new Promise((r) => ws.onclose = r);
  } finally {
    ac.abort();
    await service.close();
    await g.close();
    await d.stop();
  }
});

/** Reads a connection until it ends, `done(bytes)` says so, or `ms` pass. */
async function readToEnd(
  c: Deno.Conn,
  ms: number,
  done: (bytes: Uint8Array) => boolean = () => false,
): Promise<{ bytes: Uint8Array; ended: boolean }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const all = () => {
    const out = new Uint8Array(size);
    let at = 0;
    for (const ch of chunks) out.set(ch, (at += ch.length) - ch.length);
    return out;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), ms));
  try {
    for (;;) {
      const buf = new Uint8Array(1 << 20);
      const n = await Promise.race([c.read(buf).catch(() => null), late]);
      if (n === "late") return { bytes: all(), ended: false };
      if (n === null) return { bytes: all(), ended: true };
      chunks.push(buf.slice(0, n));
      size += n;
      if (done(all())) return { bytes: all(), ended: false };
    }
  } finally {
    clearTimeout(timer);
  }
}

/** The close code of the first close frame among the server's WebSocket frames (after the 101 head). */
function closeFrameCode(bytes: Uint8Array): number | undefined {
  const head = new TextDecoder().decode(bytes.subarray(0, 1024)).indexOf("\r\n\r\n");
  if (head < 0) return undefined;
  let i = head + 4;
  while (i + 2 <= bytes.length) {
    const opcode = bytes[i] & 0x0f;
    let len = bytes[i + 1] & 0x7f;
    let at = i + 2;
    if (len === 126) {
      len = (bytes[at] << 8) | bytes[at + 1];
      at += 2;
    } else if (len === 127) {
      len = Number(new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0));
      at += 8;
    }
    if (at + len > bytes.length) return undefined;
    if (opcode === 0x8) return (bytes[at] << 8) | bytes[at + 1];
    i = at + len;
  }
  return undefined;
}

/** The resident set size of a process, in bytes (Linux). */
async function rss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

Deno.test("gateway: clients that never read (SSE and WebSocket) are cut off; the gateway's RSS stays under 200 MiB", async () => {
  const { d, url } = await withGateway(["--http-client-buffer", String(1024 * 1024)]);
  const client = await d.connect();
  const port = Number(new URL(url).port);
  const conns: Deno.TcpConn[] = [];
  try {
    let gatewayPid: number | undefined;
    for (let i = 0; i < 50 && gatewayPid === undefined; i++) {
      [gatewayPid] = await rolePids(d.dir, "gateway");
      if (gatewayPid === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(gatewayPid, "the gateway's pid, from its stats file");
    const enc = new TextEncoder();
    // Raw connections that send their request and never read a byte.
    const sse = await Deno.connect({ hostname: "127.0.0.1", port });
    await sse.write(enc.encode(`GET /v1/events?prefix=Three~ HTTP/1.1\r\nHost: x\r\n\r\n`));
    const ws = await Deno.connect({ hostname: "127.0.0.1", port });
    await ws.write(enc.encode(
      "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    // Subscribe the WebSocket: a masked client text frame.
    const msg = enc.encode(JSON.stringify({ type: "subscribe", prefix: "Three~" }));
    const frame = new Uint8Array(2 + 4 + msg.length);
    frame[0] = 0x81;
    frame[1] = 0x80 | msg.length;
    frame.set([1, 2, 3, 4], 2);
    msg.forEach((b, i) => frame[6 + i] = b ^ [1, 2, 3, 4][i % 4]);
    await ws.write(frame);
    conns.push(sse, ws);
    await new Promise((r) => setTimeout(r, 500)); // both subscribed

    // 2,000 requests of 20 KB: 40 MB of publications for each never-reading client.
    const pad = "x".repeat(20_000);
    let peak = 0;
    let cut = 0;
    const sampling = (async () => {
      for (let i = 0; i < 600 && cut < 2; i++) {
        peak = Math.max(peak, await rss(gatewayPid!));
        cut = Number(
          (JSON.parse(await Deno.readTextFile(`${d.dir}/stats/gateway-${gatewayPid}.json`)))
            .cutOff ?? 0,
        );
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    for (let i = 0; i < 2000; i += 100) {
      await Promise.all(Array.from({ length: 100 }, () => client.request("Three", { pad })));
      if (cut >= 2) break;
    }
    await sampling;
    assert.equal(cut, 2, "both clients cut off");
    assert.ok(peak < 200 * 1024 * 1024, `gateway RSS peaked at ${(peak / 2 ** 20).toFixed(0)} MiB`);
    // Read now: what the kernel buffered, then the reason. The event stream's connection ends;
    // the WebSocket ends with its reason and a close frame (1008).
    const sseBytes = await readToEnd(sse, 30_000);
    assert.ok(sseBytes.ended, "the gateway closed the event stream's connection");
    const ws_ = await readToEnd(ws, 30_000, (b) => closeFrameCode(b) !== undefined);
    const wsText = new TextDecoder().decode(ws_.bytes.subarray(Math.max(0, ws_.bytes.length - 4096)));
    assert.match(wsText, /"type":"cutoff","reason":"slow client: more than 1048576 bytes/);
    assert.equal(closeFrameCode(ws_.bytes), 1008);
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await client.close();
    await d.stop();
  }
});

Deno.test("gateway CLI: a bad --listen / --http is a usage error (64); a bad token file fails start before it runs (1)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmgcli" });
  try {
    const listen = await runCli(["gateway", "--listen", "nowhere", "--runtime-dir", dir]);
    assert.equal(listen.code, 64);
    assert.match(listen.stderr, /--listen must be HOST:PORT/);
    const http = await runCli(["start", "--http", "127.0.0.1:99999", "--runtime-dir", dir]);
    assert.equal(http.code, 64);
    assert.match(http.stderr, /--http must be HOST:PORT/);
    await Deno.writeTextFile(`${dir}/tokens.json`, '{"tokens": [{"sha256": "plain-text-token"}]}');
    const tokens = await runCli([
      "start",
      "--http",
      "127.0.0.1:0",
      "--http-tokens",
      `${dir}/tokens.json`,
      "--runtime-dir",
      dir,
    ]);
    assert.equal(tokens.code, 1);
    assert.match(tokens.stderr, /tokens\.json: tokens\[0\]: "sha256" must be 64 lowercase hex digits/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gateway: start --http 127.0.0.1:0 picks a free port, says ready and serves on it (it stopped the deployment after 20 s)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmg" });
  const files = ["flows.ini", "mapping.ini"].map((f) =>
    new URL(`../fixtures/components/basic/${f}`, import.meta.url).pathname
  );
  const p = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../cli.ts", import.meta.url).pathname,
      "start",
      "--runtime-dir",
      dir,
      "--workers",
      "1",
      "--http",
      "127.0.0.1:0",
      ...files,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const err = p.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const out = await readUntil(p.stdout.pipeThrough(new TextDecoderStream()).getReader(), "ready");
    assert.ok(out !== undefined, "start said ready");
    const log = await readUntil(err, "Gateway on");
    const port = (log ?? "").match(/Gateway on "?http:\/\/127\.0\.0\.1:(\d+)/)?.[1];
    assert.ok(port && port !== "0", `the gateway's port in its log: ${log}`);
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    await r.body?.cancel();
    assert.equal(r.status, 200);
  } finally {
    p.kill("SIGTERM");
    await p.status;
    await err.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
