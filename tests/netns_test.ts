// Three hosts over CURVE, as Linux network namespaces this test creates: hub (Subject + IM),
// worker host (2 workers), edge (a service and a subscriber), each joined by a veth pair to a
// bridge in a fourth namespace; addresses only inside those namespaces, no default route. Each
// host runs `cli.ts start --roles …` (or the edge peer) under `ip netns exec`, with the config
// files and keygen steps of the README's "Running on several hosts". 2,000 requests end to end;
// mid-load the worker host's link goes down for 5 s and comes back: every request gets exactly
// one final publication, none lost. Then `stats` on the edge host shows every role's counters, and
// `tap` there prints the final publication of a request `send` pushes from there.
// Everything is deleted at the end, also on failure.
import assert from "node:assert/strict";
import { readUntil } from "../src/_async.ts";
import {
  type Endpoints,
  makeAllowlists,
  makeKeys,
  roleCounters,
  runRole,
  writeHostConfig,
} from "./curve_fixture.ts";

const isRoot = Deno.uid() === 0;
const ci = Deno.env.get("CI") === "true";
const REQUESTS = 2000;

async function ip(...args: string[]): Promise<void> {
  const r = await new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
}

Deno.test({
  name:
    "netns: 3 hosts over CURVE, 2,000 requests, the worker host's link down 5 s mid-load: exactly one final publication each, none lost; stats, tap and send from the edge host",
  ignore: !isRoot && !ci,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(isRoot, "the network-namespace test needs root (ip netns); CI runs as root");
    if (!isRoot) return;
    const tag = `${Deno.pid % 100_000}`;
    const ns = { bridge: `zmb${tag}`, hub: `zmh${tag}`, wk: `zmw${tag}`, edge: `zme${tag}` };
    // A private subnet that exists only inside these namespaces.
    const addr = { hub: "10.231.7.1", wk: "10.231.7.2", edge: "10.231.7.3" };
    const created: string[] = [];
    const dir = await Deno.makeTempDir({ prefix: "zmnetns" });
    const procs: { stop(): Promise<number> }[] = [];
    try {
      await ip("netns", "add", ns.bridge);
      created.push(ns.bridge);
      await ip("-n", ns.bridge, "link", "add", "br0", "type", "bridge");
      await ip("-n", ns.bridge, "link", "set", "br0", "up");
      for (const host of ["hub", "wk", "edge"] as const) {
        await ip("netns", "add", ns[host]);
        created.push(ns[host]);
        await ip(
          "-n",
          ns.bridge,
          "link",
          "add",
          `to-${host}`,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          ns[host],
        );
        await ip("-n", ns.bridge, "link", "set", `to-${host}`, "master", "br0", "up");
        await ip("-n", ns[host], "addr", "add", `${addr[host]}/24`, "dev", "eth0");
        await ip("-n", ns[host], "link", "set", "eth0", "up");
        await ip("-n", ns[host], "link", "set", "lo", "up");
      }

      // The README's steps: a key pair per host, the hub's allowlists, one config file per host.
      await makeKeys(dir, ["hub", "wk", "edge"]);
      await makeAllowlists(dir, { services: ["edge"], workers: ["wk"], subscribers: ["edge"] });
      const ep: Endpoints = {
        subject: `tcp://${addr.hub}:5555`,
        workers: `tcp://${addr.hub}:5556`,
        imPull: `tcp://${addr.hub}:5557`,
        imPub: `tcp://${addr.hub}:5558`,
      };
      // Workers declared dead after 2 s of silence, well inside the 5 s outage.
      const extra = { heartbeat_timeout: 2000 };
      await writeHostConfig(`${dir}/hub.ini`, dir, ep, { key: "hub", hub: true, extra });
      await writeHostConfig(`${dir}/wk.ini`, dir, ep, { key: "wk", extra });
      await writeHostConfig(`${dir}/edge.ini`, dir, ep, { key: "edge" });

      const exec = (host: keyof typeof ns) => ["ip", "netns", "exec", ns[host]];
      procs.push(
        await runRole(["start", "--roles", "subject,integration-manager", "--config", `${dir}/hub.ini`], {
          prefix: exec("hub"),
          ready: true,
          runtimeDir: `${dir}/rt-hub`,
        }),
      );
      procs.push(
        await runRole(["start", "--roles", "workers", "--workers", "2", "--config", `${dir}/wk.ini`], {
          prefix: exec("wk"),
          ready: true,
          runtimeDir: `${dir}/rt-wk`,
        }),
      );

      const edge = new Deno.Command("ip", {
        args: [
          ...exec("edge").slice(1),
          Deno.execPath(),
          "run",
          "-A",
          new URL("./peers/netns_edge.ts", import.meta.url).pathname,
          `${dir}/edge.ini`,
          String(REQUESTS),
        ],
        stdout: "piped",
        stderr: "inherit",
        env: { ZMANAGER_LOG: "warning" },
      }).spawn();
      const lines = edge.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let summary:
        | { sent: number; accepted: number; finals: Record<string, number>; errors: string[] }
        | undefined;
      let outage: Promise<void> | undefined;
      for (;;) {
        const r = await lines.read();
        if (r.done) break;
        buffer += r.value;
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line.startsWith("{")) summary = JSON.parse(line);
          // Mid-load: once a quarter of the requests are out, the worker host drops off the network.
          else if (line === `sent ${REQUESTS / 4}` && !outage) {
            outage = (async () => {
              await ip("-n", ns.bridge, "link", "set", "to-wk", "down");
              await new Promise((r) => setTimeout(r, 5000));
              await ip("-n", ns.bridge, "link", "set", "to-wk", "up");
            })();
          }
        }
      }
      assert.equal((await edge.status).code, 0, "the edge process failed");
      assert.ok(outage, "the outage never started");
      await outage;
      assert.ok(summary, "no summary from the edge");
      assert.equal(summary.sent, REQUESTS);
      assert.equal(summary.accepted, REQUESTS, "a request had no final publication at the service");
      const ids = Array.from({ length: REQUESTS }, (_, i) => `r${i}`);
      const missing = ids.filter((id) => !summary!.finals[id]);
      const repeated = ids.filter((id) => (summary!.finals[id] ?? 0) > 1);
      assert.deepEqual(missing, [], `${missing.length} requests without a final publication`);
      assert.deepEqual(repeated, [], `${repeated.length} requests with more than one final publication`);
      assert.deepEqual(summary.errors, []);
      // `stats` on the edge host, with its own runtime directory: every role's counters, over CURVE,
      // from the metrics the roles publish through the hub's IM.
      const stats = await new Deno.Command("ip", {
        args: [
          ...exec("edge").slice(1),
          Deno.execPath(),
          "run",
          "-A",
          new URL("../cli.ts", import.meta.url).pathname,
          "stats",
          "--json",
          "--config",
          `${dir}/edge.ini`,
          "--runtime-dir",
          `${dir}/rt-edge`,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { ZMANAGER_LOG: "warning" },
      }).output();
      const statsErr = new TextDecoder().decode(stats.stderr);
      assert.equal(stats.code, 0, `stats on the edge host: ${statsErr}`);
      const rows = JSON.parse(new TextDecoder().decode(stats.stdout)) as {
        role: string;
        received?: number;
      }[];
      assert.deepEqual(rows.map((r) => r.role).sort(), [
        "integration-manager",
        "subject",
        "worker",
        "worker",
      ]);
      assert.ok(
        (rows.find((r) => r.role === "subject")?.received ?? 0) >= REQUESTS,
        "stats on the edge host shows the hub's Subject's counters",
      );
      // `tap` and `send` on the edge host too: tap prints the final publication of a request sent.
      const cli = (...args: string[]) => [
        ...exec("edge").slice(1),
        Deno.execPath(),
        "run",
        "-A",
        new URL("../cli.ts", import.meta.url).pathname,
        ...args,
        "--config",
        `${dir}/edge.ini`,
        "--runtime-dir",
        `${dir}/rt-edge`,
      ];
      const tap = new Deno.Command("ip", {
        args: cli("tap", "Hello~~~~done", "--count", "1"),
        stdout: "piped",
        stderr: "piped",
        env: { ZMANAGER_LOG: "warning" },
        signal: AbortSignal.timeout(60_000),
      }).spawn();
      const tapErr = tap.stderr.pipeThrough(new TextDecoderStream()).getReader();
      assert.ok(
        await readUntil(tapErr, "tap: subscribed") !== undefined,
        "tap on the edge host never subscribed",
      );
      void (async () => {
        while (!(await tapErr.read()).done) { /* drain */ }
      })();
      const sent = await new Deno.Command("ip", {
        args: cli("send", "Hello", "--data", '{"name":"edge"}', "--id", "from-edge", "--wait"),
        stdout: "piped",
        stderr: "piped",
        env: { ZMANAGER_LOG: "warning" },
      }).output();
      assert.equal(sent.code, 0, `send on the edge host: ${new TextDecoder().decode(sent.stderr)}`);
      const tapOut = new Response(tap.stdout).text();
      assert.equal((await tap.status).code, 0);
      const tapped = JSON.parse((await tapOut).trim());
      assert.equal(tapped.id, "from-edge", "tap on the edge host printed the request's final publication");
      const subject = (await roleCounters(`${dir}/rt-hub`)).subject?.[0];
      console.log(
        `hub: redelivered ${subject?.redelivered}, late results ${subject?.lateResults}, security ${
          JSON.stringify(subject?.security)
        }`,
      );
    } finally {
      for (const p of procs.reverse()) await p.stop().catch(() => {});
      for (const n of created.reverse()) await ip("netns", "del", n).catch((e) => console.error(e.message));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
