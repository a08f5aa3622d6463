// The HTTP gateway over real roles: `cli.ts start --http` (the gateway as a supervised process),
// real HTTP on loopback, real ZeroMQ behind it.
import assert from "node:assert/strict";
import { Gateway } from "../src/gateway/gateway.ts";
import type { Publication } from "../src/wire/protocol.ts";

import { type Deployment, runCli, startDeployment } from "./helpers.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

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

const errorCode = (j: Record<string, unknown>) => (j.error as { code?: string } | undefined)?.code;

Deno.test("gateway: each outcome's HTTP status, the body `send --wait` prints, resumes", async (t) => {
  const { d, url } = await withGateway(["--step-limit", "4", "--handler-timeout", "500"]);
  try {
    await t.step("done: 200 with the final publication, as send --wait prints it", async () => {
      const r = await post(`${url}/v1/flows/Three`, '{"x":1}', { "Idempotency-Key": "same-as-cli" });
      assert.equal(r.status, 200);
      const cli = await runCli(["send", "Three", "--data", '{"x":1}', "--wait", ...d.flags]);
      assert.equal(cli.code, 0, cli.stderr);
      const printed = JSON.parse(cli.stdout);
      assert.deepEqual({ ...r.json, id: "" }, { ...printed, id: "" });
      assert.equal(r.json.id, "same-as-cli");
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
    const inTurn = [];
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
    assert.equal(finals.filter((p) => p.id === "k-1").length, 1);
    assert.equal(finals.filter((p) => p.id === "k-2").length, 1);
  } finally {
    await client.close();
    await d.stop();
  }
});

Deno.test("gateway: 503 with Retry-After while the Subject is shutting down (overloaded)", async () => {
  const d = await startDeployment({ workers: 1 });
  const g = await Gateway.start({ subject: d.subject, publisher: d.publisher, flows: new Map(), port: 0 });
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
