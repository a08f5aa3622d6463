// The gateway's auth, body limit and CORS: the pure token logic with an injected clock, then the
// refusals over a real deployment (`start --http` with a token file).
import assert from "node:assert/strict";
import { Auth, hashToken, parseTokenFile } from "../src/gateway/auth.ts";
import { freePort } from "../testing/deployment.ts";
import { startDeployment } from "./helpers.ts";

Deno.test("auth: token file errors name the file and the entry", () => {
  assert.throws(() => parseTokenFile("{", "t.json"), /t\.json: not JSON/);
  assert.throws(() => parseTokenFile('{"tokens": {}}', "t.json"), /expected \{"tokens"/);
  assert.throws(
    () => parseTokenFile('{"tokens": [{"sha256": "secret"}]}', "t.json"),
    /t\.json: tokens\[0\]: "sha256" must be 64 lowercase hex digits/,
  );
  const ok = "a".repeat(64);
  assert.throws(() => parseTokenFile(`{"tokens": [{"sha256": "${ok}", "rate": 0}]}`, "t"), /"rate"/);
  assert.throws(() => parseTokenFile(`{"tokens": [{"sha256": "${ok}", "flows": "Hello"}]}`, "t"), /"flows"/);
  assert.throws(() => parseTokenFile(`{"tokens": [{"sha256": "${ok}", "streams": 0.5}]}`, "t"), /"streams"/);
  assert.deepEqual(parseTokenFile(`{"tokens": [{"name": "a", "sha256": "${ok}", "rate": 5}]}`, "t"), [
    { name: "a", sha256: ok, rate: 5 },
  ]);
  // A name scopes a caller's idempotency keys; a hash finds one entry: neither is shared.
  const b = "b".repeat(64);
  assert.throws(
    () =>
      parseTokenFile(`{"tokens": [{"name": "a", "sha256": "${ok}"}, {"name": "a", "sha256": "${b}"}]}`, "t"),
    /t: tokens\[1\]: its name is tokens\[0\]'s too/,
  );
  assert.throws(
    () =>
      parseTokenFile(`{"tokens": [{"name": "a", "sha256": "${ok}"}, {"name": "b", "sha256": "${ok}"}]}`, "t"),
    /t: tokens\[1\]: its sha256 is tokens\[0\]'s too/,
  );
  assert.throws(
    () => parseTokenFile(`{"tokens": [{"sha256": "${ok}"}, {"name": "token 0", "sha256": "${b}"}]}`, "t"),
    /its name is tokens\[0\]'s too/,
    "a generated name counts",
  );
});

Deno.test("auth: tokens are matched by hash; flow prefixes; a token bucket per token", async () => {
  let now = 0;
  const auth = new Auth([
    { name: "web", sha256: await hashToken("w"), flows: ["Hel", "Order"], rate: 2 },
    { name: "ops", sha256: await hashToken("o") },
  ], () => now);
  assert.equal((await auth.authenticate(undefined) as { status: number }).status, 401);
  assert.equal((await auth.authenticate("Basic dzp3") as { status: number }).status, 401);
  assert.equal((await auth.authenticate("Bearer nope") as { status: number }).status, 401);
  const web = await auth.authenticate("Bearer w");
  const ops = await auth.authenticate("bearer o");
  assert.ok(!("status" in web) && !("status" in ops));
  assert.equal(auth.allow(web, "Hello"), true);
  assert.equal(auth.allow(web, "Three"), false);
  assert.equal(auth.allow(ops, "Three"), true);
  assert.equal(auth.allowPrefix(web, "Order~"), true);
  assert.equal(auth.allowPrefix(web, ""), false, "everything includes flows it may not see");
  // Burst of 2, then one every 500 ms.
  assert.equal(auth.take(web), 0);
  assert.equal(auth.take(web), 0);
  assert.equal(auth.take(web), 0.5);
  now = 250;
  assert.equal(auth.take(web), 0.25);
  now = 500;
  assert.equal(auth.take(web), 0);
  for (let i = 0; i < 100; i++) assert.equal(auth.take(ops), 0, "no rate: no limit");
});

Deno.test("gateway auth over a real deployment: no token, wrong token, flow not allowed, over the rate; body limit; CORS", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "zmgauth" });
  const tokens = `${dir}/tokens.json`;
  await Deno.writeTextFile(
    tokens,
    JSON.stringify({
      tokens: [
        { name: "three", sha256: await hashToken("t-secret"), flows: ["Three"], rate: 1 },
        { name: "any", sha256: await hashToken("a-secret") },
        { name: "other", sha256: await hashToken("o-secret"), flows: ["Three", "Slow"] },
        { name: "one-stream", sha256: await hashToken("s-secret"), streams: 1 },
        // Names that a separator-joined scope would confuse: "x" on flow "Slow\0Three", "x\0Slow" on "Three".
        { name: "x", sha256: await hashToken("x-secret") },
        { name: "x\u0000Slow", sha256: await hashToken("xs-secret") },
      ],
    }),
  );
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const d = await startDeployment({
    workers: 1,
    args: [
      "--http",
      `127.0.0.1:${port}`,
      "--http-tokens",
      tokens,
      "--http-body-limit",
      "1000",
      "--http-cors-origins",
      "https://app.example",
    ],
  });
  const post = async (path: string, token?: string, body = "{}") => {
    const r = await fetch(`${url}${path}`, {
      method: "POST",
      body,
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    return { status: r.status, headers: r.headers, json: await r.json() };
  };
  try {
    await t.step("no token: 401 with WWW-Authenticate", async () => {
      const r = await post("/v1/flows/Three");
      assert.equal(r.status, 401);
      assert.match(r.headers.get("WWW-Authenticate") ?? "", /^Bearer/);
      assert.equal(r.json.error.code, "unauthorized");
      const flows = await fetch(`${url}/v1/flows`);
      assert.equal(flows.status, 401);
      await flows.body?.cancel();
    });
    await t.step("wrong token: 401", async () => {
      assert.equal((await post("/v1/flows/Three", "t-secreT")).status, 401);
    });
    await t.step(
      "flow not allowed: 403 (POST, event stream); /v1/flows lists only allowed flows",
      async () => {
        const r = await post("/v1/flows/Boom", "t-secret");
        assert.equal(r.status, 403);
        assert.equal(r.json.error.code, "forbidden");
        const sse = await fetch(`${url}/v1/events?prefix=Boom~`, {
          headers: { Authorization: "Bearer t-secret" },
        });
        assert.equal(sse.status, 403);
        await sse.body?.cancel();
        const flows =
          await (await fetch(`${url}/v1/flows`, { headers: { Authorization: "Bearer t-secret" } }))
            .json();
        assert.deepEqual(flows.map((f: { name: string }) => f.name), ["Three"]);
      },
    );
    await t.step("allowed, then over the rate (1/s): 200, then 429 with Retry-After", async () => {
      // The 403s above took nothing from the bucket; the listing took that second's request.
      await new Promise((r) => setTimeout(r, 1100));
      const first = await post("/v1/flows/Three", "t-secret");
      assert.equal(first.status, 200, JSON.stringify(first.json));
      const second = await post("/v1/flows/Three", "t-secret");
      assert.equal(second.status, 429);
      assert.equal(second.headers.get("Retry-After"), "1");
      assert.equal(second.json.error.code, "rate_limited");
      // Another token has its own bucket (and no limit).
      for (let i = 0; i < 3; i++) assert.equal((await post("/v1/flows/Three", "a-secret")).status, 200);
    });
    await t.step(
      "every authenticated request counts against the rate: listings, event streams, WebSockets",
      async () => {
        const get = async (path: string, headers: Record<string, string> = {}) => {
          const r = await fetch(`${url}${path}`, {
            headers: { Authorization: "Bearer t-secret", ...headers },
          });
          await r.body?.cancel();
          return r.status;
        };
        for (const path of ["/v1/events?prefix=Three~", "/v1/flows", "/metrics", "/v1/ws"]) {
          await new Promise((r) => setTimeout(r, 1100)); // a full bucket (1)
          const ws = path === "/v1/ws" ? { Upgrade: "websocket" } : undefined;
          assert.notEqual(await get(path, ws), 429, `${path}: the first of the second`);
          assert.equal(await get(path, ws), 429, `${path}: the second of the second`);
        }
      },
    );
    await t.step(
      "one Idempotency-Key from two tokens, or from one token on two flows, names separate requests",
      async () => {
        const keyed = (flow: string, token: string, values: unknown) =>
          fetch(`${url}/v1/flows/${flow}`, {
            method: "POST",
            body: JSON.stringify(values),
            headers: { Authorization: `Bearer ${token}`, "Idempotency-Key": "shared" },
          }).then(async (r) => ({ status: r.status, json: await r.json() }));
        const [a, o] = await Promise.all([
          keyed("Three", "a-secret", { who: "any" }),
          keyed("Three", "o-secret", { who: "other" }),
        ]);
        assert.equal(a.status, 200, JSON.stringify(a.json));
        assert.equal(o.status, 200, JSON.stringify(o.json));
        assert.equal(a.json.values.who, "any", "each token is answered with its own request");
        assert.equal(o.json.values.who, "other");
        assert.notEqual(a.json.id, o.json.id);
        const slow = await keyed("Slow", "o-secret", { ms: 0, who: "other" });
        assert.equal(slow.status, 200, JSON.stringify(slow.json));
        assert.equal(slow.json.values.slept, true, "the other flow ran: its key is not the Three request's");
        // A retry is still the same request: the first answer.
        const again = await keyed("Three", "o-secret", { who: "someone else" });
        assert.deepEqual(again.json, o.json);
      },
    );
    await t.step(
      "keys of up to 200 characters run, and each names its own request; a NUL in a token name or flow forges no scope",
      async () => {
        const post = (flow: string, token: string, key: string, values: unknown) =>
          fetch(`${url}/v1/flows/${flow}`, {
            method: "POST",
            body: JSON.stringify(values),
            headers: { Authorization: `Bearer ${token}`, "Idempotency-Key": key },
          }).then(async (r) => ({ status: r.status, json: await r.json() }));
        const long = "k".repeat(199);
        const [a, b] = await Promise.all([
          post("Three", "a-secret", `${long}a`, { n: "a" }),
          post("Three", "a-secret", `${long}b`, { n: "b" }),
        ]);
        assert.equal(a.status, 200, JSON.stringify(a.json).slice(0, 300));
        assert.equal(b.status, 200, JSON.stringify(b.json).slice(0, 300));
        assert.deepEqual(
          [a.json.values.n, b.json.values.n],
          ["a", "b"],
          "keys differing in their last character",
        );
        assert.ok(a.json.id.length <= 200 && a.json.id !== b.json.id);
        assert.deepEqual((await post("Three", "a-secret", `${long}a`, { n: "again" })).json, a.json);
        const victim = await post("Three", "xs-secret", "nul-key", { secret: "victim's" });
        assert.equal(victim.status, 200);
        const forger = await post("Slow%00Three", "x-secret", "nul-key", {});
        assert.notEqual(forger.status, 200, JSON.stringify(forger.json));
        assert.ok(
          !JSON.stringify(forger.json).includes("victim's"),
          "not answered with the other token's request",
        );
      },
    );
    await t.step(
      'a token\'s "streams" caps its open event streams and WebSockets (429); other tokens are not counted',
      async () => {
        const auth = { Authorization: "Bearer s-secret" };
        const first = await fetch(`${url}/v1/events?prefix=Three~`, { headers: auth });
        assert.equal(first.status, 200);
        for (
          const [path, extra] of [["/v1/events?prefix=Three~", {}], ["/v1/ws", {
            Upgrade: "websocket",
          }]] as const
        ) {
          const r = await fetch(`${url}${path}`, { headers: { ...auth, ...extra } });
          // (A stream that opened would never end: read the body only once refused.)
          if (r.status !== 429) await r.body?.cancel();
          assert.equal(r.status, 429, path);
          const body = await r.json();
          assert.equal(r.headers.get("Retry-After"), "1");
          assert.match(body.error.message, /this token has 1 event streams/);
        }
        const other = await fetch(`${url}/v1/events?prefix=Three~`, {
          headers: { Authorization: "Bearer a-secret" },
        });
        assert.equal(other.status, 200, "another token's stream");
        await other.body?.cancel();
        await first.body?.cancel();
        // Closed: the token may open one again within 2.5 s (the gateway sees the close on the
        // connection; the stream's next write, its heartbeat, is 15 s away).
        let again = 0;
        for (let i = 0; i < 50 && again !== 200; i++) {
          await new Promise((r) => setTimeout(r, 50));
          const r = await fetch(`${url}/v1/events?prefix=Three~`, { headers: auth });
          again = r.status;
          await r.body?.cancel();
        }
        assert.equal(again, 200);
      },
    );
    await t.step("body over http_body_limit: 413", async () => {
      const r = await post("/v1/flows/Three", "a-secret", JSON.stringify({ pad: "x".repeat(2000) }));
      assert.equal(r.status, 413);
    });
    await t.step("CORS: the allowed origin gets the headers, another does not", async () => {
      const pre = (origin: string) =>
        fetch(`${url}/v1/flows/Three`, {
          method: "OPTIONS",
          headers: { Origin: origin, "Access-Control-Request-Method": "POST" },
        });
      const ok = await pre("https://app.example");
      await ok.body?.cancel();
      assert.equal(ok.headers.get("Access-Control-Allow-Origin"), "https://app.example");
      const other = await pre("https://evil.example");
      await other.body?.cancel();
      assert.notEqual(other.headers.get("Access-Control-Allow-Origin"), "https://evil.example");
    });
    await t.step("/healthz and /readyz need no token", async () => {
      for (const p of ["/healthz", "/readyz"]) {
        const r = await fetch(`${url}${p}`);
        await r.body?.cancel();
        assert.notEqual(r.status, 401, p);
      }
    });
  } finally {
    await d.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
