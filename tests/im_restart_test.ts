// A dead Integration Manager loses nothing (issue 16, item 3): `start` restarts it, the Subject
// sends again what the dead one did not acknowledge, and subscribers are back before the new one
// publishes. Real processes (`cli.ts start`), real sockets, a real SIGKILL.
import assert from "node:assert/strict";
import { Client } from "../src/client.ts";
import { readUntil } from "../src/_async.ts";
import { killRole, rolePids, roleStats } from "../src/deployment.ts";
import { CLI, RUNTIME_FIXTURE } from "./helpers.ts";

Deno.test("SIGKILL of the IM with 500 requests in flight: start keeps running, one final each, none lost, a warning", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmim" });
  const start = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "start", "--workers", "2", "--runtime-dir", dir, "--", ...RUNTIME_FIXTURE],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { ZMANAGER_LOG: "warning" },
  }).spawn();
  let stderr = "";
  const errReading = (async () => {
    for await (const chunk of start.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  const out = start.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let exited = false;
  void start.status.then(() => exited = true);
  const subject = `ipc://${dir}/subject`;
  const publisher = `ipc://${dir}/im-pub`;
  const client = await (async () => {
    assert.notEqual(await readUntil(out, "ready\n"), undefined, "start is ready");
    return await Client.connect({ subject, publisher });
  })();
  const counter = await Client.connect({ subject, publisher });
  const outDrained = (async () => {
    while (!(await out.read()).done) { /* discard */ }
  })();
  try {
    // Finals counted per id on a subscription of their own.
    const finals = new Map<string, number>();
    const stream = await counter.subscribe("Slow~~~~");
    const n = 500;
    const killAt = 100;
    let reachedKillPoint!: () => void;
    const killPoint = new Promise<void>((r) => reachedKillPoint = r);
    const counting = (async () => {
      for await (const p of stream) {
        if (p.action !== "done" && p.action !== "error") continue;
        finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
        if (finals.size === killAt) reachedKillPoint();
      }
    })();
    // Handlers sleep 500 to 1,500 ms: publications flow for a second, and the IM dies in the middle.
    const requests = Array.from(
      { length: n },
      (_, i) => client.request("Slow", { i, ms: 500 + 2 * i }, { id: `im-${i}`, timeout: 30_000 }),
    );
    await killPoint;
    const [imBefore] = await rolePids(dir, "integration-manager");
    const killed = await killRole(dir, "integration-manager");
    assert.equal(killed, imBefore, "the IM was SIGKILLed");
    const results = await Promise.all(requests);
    results.forEach((p, i) => {
      assert.equal(p.action, "done", `request ${i}: ${JSON.stringify(p.error)}`);
      assert.equal(p.values.i, i);
    });
    // A duplicate final would arrive within this margin; then the counting subscription stops.
    await new Promise((r) => setTimeout(r, 500));
    await stream.return!();
    await counting;
    assert.equal(finals.size, n, "a final publication for every request on the separate subscription");
    assert.deepEqual([...finals].filter(([, c]) => c !== 1), [], "no request has two finals");
    assert.equal(exited, false, "start keeps running");
    const [imAfter] = await rolePids(dir, "integration-manager");
    assert.ok(imAfter !== undefined && imAfter !== killed, "a new IM runs");
    const s = await roleStats(dir, "subject");
    console.log(
      `finals ${finals.size}/${n}; subject imResent=${s.imResent} imUnacked=${s.imUnacked} published=${s.published}`,
    );
  } finally {
    await client.close();
    await counter.close();
    try {
      start.kill("SIGINT");
    } catch { /* gone */ }
    await start.status;
    await outDrained;
    await errReading;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  if (Deno.env.get("SHOW_STDERR")) console.log(stderr);
  assert.match(stderr, /Integration Manager \(pid \d+\) exited/, "a warning about the IM's death");
});
