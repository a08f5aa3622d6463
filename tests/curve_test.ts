// CURVE on tcp, end to end through real role processes on loopback: peers without an allowed key
// (a wrong key, or plaintext) get nothing through and are counted; allowlists change at run time;
// `stats` over CURVE shows the allowed roles and says when its key is refused.
import assert from "node:assert/strict";
import { Client } from "../src/client/client.ts";
import { loadSecurity } from "../src/roles/security.ts";
import type { CurveClientKeys } from "../src/zmq/curve.ts";
import { Context, type Socket } from "../src/zmq/socket.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { connectRedialing, requireCurve } from "../src/zmq/curve.ts";
import { runCli, startDeployment } from "./helpers.ts";
import {
  type Endpoints,
  loopbackEndpoints,
  makeAllowlists,
  makeKeys,
  roleCounters,
  runRole,
  waitFor,
  writeHostConfig,
} from "./curve_fixture.ts";

// This process's sockets use CURVE: load a libzmq with CURVE before any socket is made.
requireCurve();

async function keysOf(dir: string, name: string): Promise<CurveClientKeys> {
  const s = await loadSecurity({
    curve_secret_key: `${dir}/keys/${name}.key`,
    curve_server_key: `${dir}/keys/hub.pub`,
    curve_allow_services: "",
    curve_allow_workers: "",
    curve_allow_subscribers: "",
  });
  return s!.keys;
}

/** A raw SUB socket subscribed to everything, counting what it receives. */
function rawSubscriber(
  ctx: Context,
  ep: Endpoints,
  keys?: CurveClientKeys,
): { sock: Socket; count(): number } {
  const sock = ctx.socket("SUB", {
    linger: 0,
    ...(keys
      ? { curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, curveServerKey: keys.serverKey }
      : {}),
  });
  sock.subscribe("");
  sock.connect(ep.imPub);
  let n = 0;
  return {
    sock,
    count: () => {
      while (sock.tryReceive()) n++;
      return n;
    },
  };
}

type Counts = Record<"services" | "workers" | "subscribers" | "subject", number>;
interface SecurityCounters {
  allowed: Counts;
  refused: Counts;
  handshakeFailed: Counts;
  reloads: number;
}

async function security(dir: string, role: string): Promise<SecurityCounters | undefined> {
  return (await roleCounters(dir))[role]?.[0]?.security as SecurityCounters | undefined;
}

/** A DEALER that connects with `keys` (again after each refusal) and notes when a handshake succeeds. */
async function lateConnection(reactor: Reactor, endpoint: string, keys: CurveClientKeys) {
  const sock = reactor.socket("DEALER", {
    linger: 0,
    curvePublicKey: keys.publicKey,
    curveSecretKey: keys.secretKey,
    curveServerKey: keys.serverKey,
  });
  let at: number | undefined;
  await connectRedialing(reactor, sock, endpoint, { onAccepted: () => (at ??= performance.now()) });
  return { acceptedAt: () => at };
}

async function notAccepted(c: Client, ms: number): Promise<boolean> {
  const r = await Promise.race([
    c.send("Hello", { name: "x" }).then(() => "accepted", () => "refused"),
    new Promise((r) => setTimeout(() => r("nothing"), ms)),
  ]);
  return r === "nothing";
}

Deno.test({
  name:
    "curve: bad-key and plaintext services, workers and subscribers get nothing through and are counted; a key added at run time is accepted within 2 s; a removed key is refused for new connections",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmcurve" });
    const ep = loopbackEndpoints();
    await makeKeys(dir, ["hub", "svc", "wk", "bad", "late"]);
    await makeAllowlists(dir, { services: ["svc"], workers: [], subscribers: ["svc"] });
    await writeHostConfig(`${dir}/hub.ini`, dir, ep, {
      key: "hub",
      hub: true,
      extra: { heartbeat_timeout: 2000 },
    });
    await writeHostConfig(`${dir}/wk.ini`, dir, ep, { key: "wk" });
    await writeHostConfig(`${dir}/bad.ini`, dir, ep, { key: "bad" });
    await writeHostConfig(`${dir}/plain.ini`, dir, ep);
    const hubDir = `${dir}/hub`;
    const procs: { stop(): Promise<number> }[] = [];
    const clients: Client[] = [];
    const ctx = new Context();
    const reactor = new Reactor();
    try {
      procs.push(
        await runRole(["start", "--roles", "subject,integration-manager", "--config", `${dir}/hub.ini`], {
          ready: true,
          runtimeDir: hubDir,
        }),
      );
      const received = async () => (await roleCounters(hubDir)).subject?.[0]?.received as number;
      await new Promise((r) => setTimeout(r, 1500)); // a stats file is written every second
      const receivedBefore = await received();
      // Subscribers: a wrong key and plaintext.
      const badSub = rawSubscriber(ctx, ep, await keysOf(dir, "bad"));
      const plainSub = rawSubscriber(ctx, ep);
      // Services: a wrong key and plaintext; neither request is accepted.
      const bad = await Client.connect({
        subject: ep.subject,
        publisher: ep.imPub,
        curve: await keysOf(dir, "bad"),
      });
      const plain = await Client.connect({ subject: ep.subject, publisher: ep.imPub });
      clients.push(bad, plain);
      const [badRefused, plainRefused] = await Promise.all([
        notAccepted(bad, 3000),
        notAccepted(plain, 3000),
      ]);
      assert.ok(badRefused, "a service with a wrong key had a request accepted");
      assert.ok(plainRefused, "a plaintext service had a request accepted");
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await received(), receivedBefore, "the Subject received a message from a refused service");
      // Workers: a wrong key, plaintext, and one whose key is not on the list yet.
      for (const name of ["bad", "plain", "wk"]) {
        procs.push(
          await runRole(["worker", "--config", `${dir}/${name}.ini`], { runtimeDir: `${dir}/w-${name}` }),
        );
      }
      const good = await Client.connect({
        subject: ep.subject,
        publisher: ep.imPub,
        curve: await keysOf(dir, "svc"),
      });
      clients.push(good);
      const finals = Array.from(
        { length: 20 },
        (_, i) => good.request("Hello", { name: `n${i}` }, { timeout: 60_000 }),
      );
      for (const f of finals) f.catch(() => {}); // awaited below; a failure before that is reported first
      await new Promise((r) => setTimeout(r, 3000));
      const subject0 = (await roleCounters(hubDir)).subject[0];
      assert.equal(subject0.dispatched, 0, "a step went to a worker without an allowed key");

      // Keys added at run time: a service's connection (already refused once, so redialing) is
      // accepted within 2 s, and the worker's steps start flowing, without restarting anything.
      const late = await lateConnection(reactor, ep.subject, await keysOf(dir, "late"));
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(late.acceptedAt(), undefined, "a key not on the list yet was accepted");
      const added = performance.now();
      await Deno.copyFile(`${dir}/keys/late.pub`, `${dir}/allow/services/late.pub`);
      await Deno.copyFile(`${dir}/keys/wk.pub`, `${dir}/allow/workers/wk.pub`);
      assert.ok(
        await waitFor(() => late.acceptedAt() !== undefined, 5000),
        "the added service key was not accepted",
      );
      const acceptedAfter = late.acceptedAt()! - added;
      console.log(`service key accepted ${Math.round(acceptedAfter)} ms after it was added`);
      assert.ok(acceptedAfter < 2000, `accepted after ${Math.round(acceptedAfter)} ms`);
      const results = await Promise.all(finals);
      assert.equal(results.length, 20);
      assert.ok(results.every((p) => p.action === "done"));

      // Nothing reached the refused subscribers.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(badSub.count(), 0, "a subscriber with a wrong key received publications");
      assert.equal(plainSub.count(), 0, "a plaintext subscriber received publications");
      // Only the allowed worker ran steps.
      const workerRows = async (name: string) => (await roleCounters(`${dir}/w-${name}`)).worker ?? [];
      assert.ok(
        await waitFor(async () => Number((await workerRows("wk"))[0]?.steps) >= 20, 3000),
        "the allowed worker ran the steps",
      );
      for (const name of ["bad", "plain"]) {
        const rows = await workerRows(name);
        assert.ok(rows.every((r) => r.steps === 0), `the ${name} worker ran steps`);
      }

      // `stats` (its own runtime directory) with an allowed key: the hub's roles and the allowed
      // worker, whose key was added at run time (the refused workers' metrics get nothing through
      // either); with a key not on the subscribers list: refused, saying which list.
      const stats = (ini: string) =>
        runCli(["stats", "--json", "--config", `${dir}/${ini}`, "--runtime-dir", `${dir}/stats-rt`]);
      const wkPid = (await workerRows("wk"))[0]?.pid;
      let shown: { role: string; pid: number }[] = [];
      assert.ok(
        await waitFor(async () => {
          const r = await stats("hub.ini");
          shown = r.code === 0 ? JSON.parse(r.stdout) : [];
          return shown.some((x) => x.role === "worker");
        }, 30_000),
        "stats never showed the allowed worker",
      );
      assert.deepEqual(shown.map((x) => x.role).sort(), ["integration-manager", "subject", "worker"]);
      assert.equal(shown.find((x) => x.role === "worker")!.pid, wkPid);
      const refusedStats = await stats("bad.ini");
      assert.equal(refusedStats.code, 1);
      assert.match(refusedStats.stderr, /refused the connection: this host's key .*curve_allow_subscribers/);
      // With no key at all: refused, and told that a key is needed (not that its key is not listed).
      await writeHostConfig(`${dir}/nokey.ini`, dir, ep);
      const plainStats = await stats("nokey.ini");
      assert.equal(plainStats.code, 1);
      assert.match(
        plainStats.stderr,
        /refused the connection: it requires CURVE keys and this host has none; set curve_secret_key/,
      );

      // Every refusal is counted: wrong keys by ZAP, plaintext peers at the handshake.
      const s = (await security(hubDir, "subject"))!;
      const im = (await security(hubDir, "integration-manager"))!;
      assert.ok(s.refused.services >= 1, JSON.stringify(s));
      assert.ok(s.handshakeFailed.services >= 1, JSON.stringify(s));
      assert.ok(s.refused.workers >= 1, JSON.stringify(s));
      assert.ok(s.handshakeFailed.workers >= 1, JSON.stringify(s));
      assert.ok(im.refused.subscribers >= 1, JSON.stringify(im));
      assert.ok(im.handshakeFailed.subscribers >= 1, JSON.stringify(im));

      // A removed key: the connected service keeps its connection; a new connection is refused.
      const refusedBefore = s.refused.services;
      await Deno.remove(`${dir}/allow/services/svc.pub`);
      assert.ok(
        await waitFor(async () => ((await security(hubDir, "subject"))?.reloads ?? 0) > s.reloads, 4000),
        "the allowlist was not reloaded",
      );
      assert.equal((await good.request("Hello", { name: "still" }, { timeout: 30_000 })).action, "done");
      const again = await Client.connect({
        subject: ep.subject,
        publisher: ep.imPub,
        curve: await keysOf(dir, "svc"),
      });
      clients.push(again);
      assert.ok(await notAccepted(again, 3000), "a removed key had a new request accepted");
      assert.ok(
        await waitFor(
          async () => (await security(hubDir, "subject"))!.refused.services > refusedBefore,
          3000,
        ),
        "the removed key's refusal was not counted",
      );
      // SIGHUP reads the allowlists again too (the process keeps running: same pid, counters go on).
      const before = (await roleCounters(hubDir)).subject[0];
      Deno.kill(Number(before.pid), "SIGHUP");
      assert.ok(
        await waitFor(async () => {
          const row = (await roleCounters(hubDir)).subject?.find((r) => r.pid === before.pid);
          return Number((row?.security as SecurityCounters | undefined)?.reloads) >
            (before.security as SecurityCounters).reloads;
        }, 4000),
        "SIGHUP did not reload the allowlists",
      );
    } finally {
      for (const c of clients) await c.close();
      ctx.terminate(0);
      await reactor.close();
      for (const p of procs.reverse()) await p.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("tcp edge: a peer that connects and says nothing is dropped after the handshake timeout (5 s)", async () => {
  await using d = await startDeployment({ transport: "tcp", workers: 1 });
  const port = Number(d.subject.split(":").pop());
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = performance.now();
  const buf = new Uint8Array(1024);
  // The Subject sends its greeting, then closes the connection when the handshake does not come.
  const closed = (async () => {
    try {
      while ((await conn.read(buf)) !== null) { /* the greeting */ }
    } catch { /* reset */ }
    return performance.now() - started;
  })();
  const limit = new Promise<number>((r) => setTimeout(() => r(Infinity), 20_000));
  const after = await Promise.race([closed, limit]);
  try {
    conn.close();
  } catch { /* closed */ }
  await closed;
  assert.ok(
    after < 20_000,
    "a silent peer kept its connection for 20 s (libzmq's default handshake timeout is 30 s)",
  );
  console.log(`silent peer dropped after ${Math.round(after)} ms`);
});

Deno.test({
  name:
    "curve: a worker started before its key is on the list gets its metrics through once the key is added (stats shows it)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmcurve" });
    const ep = loopbackEndpoints();
    await makeKeys(dir, ["hub", "wk"]);
    await makeAllowlists(dir, { services: [], workers: [], subscribers: [] });
    await writeHostConfig(`${dir}/hub.ini`, dir, ep, { key: "hub", hub: true });
    await writeHostConfig(`${dir}/wk.ini`, dir, ep, { key: "wk" });
    const procs: { stop(): Promise<number> }[] = [];
    try {
      procs.push(
        await runRole(["start", "--roles", "subject,integration-manager", "--config", `${dir}/hub.ini`], {
          ready: true,
          runtimeDir: `${dir}/hub`,
        }),
      );
      procs.push(await runRole(["worker", "--config", `${dir}/wk.ini`], { runtimeDir: `${dir}/w` }));
      // The worker runs (its counters are written), and its connections are refused meanwhile: its
      // own socket's (every 250 ms) and its metrics socket's (each second).
      const refusedWorkers = async () => (await security(`${dir}/hub`, "subject"))?.refused.workers ?? 0;
      assert.ok(
        await waitFor(async () => ((await roleCounters(`${dir}/w`)).worker ?? []).length > 0, 30_000),
        "the worker did not start",
      );
      const refusedAtStart = await refusedWorkers();
      assert.ok(
        await waitFor(async () => (await refusedWorkers()) >= refusedAtStart + 10, 20_000),
        "the worker's connections were not refused",
      );
      await Deno.copyFile(`${dir}/keys/wk.pub`, `${dir}/allow/workers/wk.pub`);
      let roles: string[] = [];
      assert.ok(
        await waitFor(async () => {
          const r = await runCli([
            "stats",
            "--json",
            "--config",
            `${dir}/hub.ini`,
            "--runtime-dir",
            `${dir}/s`,
          ]);
          roles = r.code === 0 ? (JSON.parse(r.stdout) as { role: string }[]).map((x) => x.role).sort() : [];
          return roles.includes("worker");
        }, 30_000),
        `stats never showed the worker: ${roles.join(", ")}`,
      );
      assert.deepEqual(roles, ["integration-manager", "subject", "worker"]);
    } finally {
      for (const p of procs.reverse()) await p.stop().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
