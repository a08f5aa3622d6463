// Reloads under steady load (issue 22, "what it must show"): a real `cli.ts start` deployment
// (2 workers) takes RATE requests a second for SECONDS seconds (by default 2,000 and 30) of a
// three-worker-step flow with a service's @PUBLISH step in the middle (its last two steps go back
// through the Subject, to any worker), while three reloads happen: one adds a flow, one changes
// the handlers' result (they stamp their code's version), one removes a flow. Then a reload with a
// flow syntax error and one with a handler module that throws on import, still under load, change
// nothing. Every request gets exactly one final publication; every result's three stamps are those
// of the version its request started on; none is lost, none is `overloaded`.
import assert from "node:assert/strict";
import { ReloadError } from "../src/client/reload.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { roleStats } from "../testing/deployment.ts";
import { copyComponent, deploy, eventually, reloadCli, reloadKey } from "./reload_fixture.ts";

const RATE = Number(Deno.env.get("ZMANAGER_RELOAD_RATE") ?? 2000);
const SECONDS = Number(Deno.env.get("ZMANAGER_RELOAD_SECONDS") ?? 30);
const GONE = "\n[Gone]\n?Gone?Push\nSubject?Gone?One\nSubject?Gone?Two\nSubject?Gone?Three\n??done\n";
const EXTRA = "\n[Extra]\n?Extra?Push\nSubject?Extra?One\nSubject?Extra?Two\nSubject?Extra?Three\n??done\n";

interface Sent {
  readonly flow: string;
  readonly at: number;
  id?: string;
  result?: Publication;
  failure?: unknown;
  doneAt?: number;
}

Deno.test(`reload under load: ${RATE} requests/s for ${SECONDS} s, three reloads and two bad ones; one final each, each on its start version`, async () => {
  const c = await copyComponent();
  const base = await Deno.readTextFile(c.flows);
  await Deno.writeTextFile(c.flows, base + GONE);
  await using d = await deploy(c);
  const service = await d.connect();
  const client = await d.connect();
  const tap = await d.connect();
  const key = await reloadKey(d);
  const finals = new Map<string, number>();
  const sent: Sent[] = [];
  const marks: Record<string, number> = {};
  try {
    await service.handle("Subject?Relay?Mid", async (v) => {
      await new Promise((r) => setTimeout(r, 20)); // requests straddle the reloads
      return { ...v, mid: true };
    }, { flow: "Relay" });
    const taps = await Promise.all(["Relay~~~~", "Gone~~~~", "Extra~~~~"].map((p) => tap.subscribe(p)));
    const tapping = taps.map(async (it) => {
      for await (const p of it) finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
    });

    const request = (flow: string) => {
      const s: Sent = { flow, at: performance.now() };
      sent.push(s);
      client.request(flow, {}, { timeout: 120_000 }).then(
        (p) => [s.result, s.id, s.doneAt] = [p, p.id, performance.now()],
        (e) => s.failure = e,
      );
    };
    const start = performance.now();
    marks.start = start;
    let n = 0;
    const timer = setInterval(() => {
      const due = Math.floor((performance.now() - start) / 1000 * RATE);
      for (; n < due; n++) {
        request("Relay");
        if (n % 20 === 0) request("Gone");
        if (n % 20 === 10 && marks.added !== undefined) request("Extra");
      }
    }, 10);
    const at = (fraction: number) =>
      new Promise((r) => setTimeout(r, Math.max(0, start + fraction * SECONDS * 1000 - performance.now())));
    const reload = async (name: string, flows: string, stamp?: string) => {
      await Deno.writeTextFile(c.flows, flows);
      if (stamp) await c.setStamp(stamp);
      marks[`${name}Start`] = performance.now();
      const version = await client.reload([c.flows, c.mapping], { key });
      marks[name] = performance.now();
      return version;
    };

    await at(0.2);
    assert.equal(await reload("added", base + GONE + EXTRA), 2);
    await at(0.45);
    assert.equal(await reload("stamped", base + GONE + EXTRA, "v2"), 3);
    await at(0.7);
    assert.equal(await reload("removed", base + EXTRA), 4);
    // Still under load: a flow syntax error (the CLI refuses it, nothing is sent) ...
    await at(0.8);
    const bad = await c.write("bad.ini", "[Broken\n?Broken?Push\n??done\n");
    const cli = await reloadCli(d, [c.flows, bad, c.mapping]);
    assert.equal(cli.code, 1, cli.stdout);
    assert.match(cli.stderr, /bad\.ini:1:\d+: error: /);
    // ... and a handler module that throws on import (the workers refuse it, it is dropped).
    await at(0.85);
    await c.write("broken.ts", 'throw new Error("boom at import");\nexport const one = () => ({});\n');
    const mapping = await c.write("mapping2.ini", "[actionmapping]\n??One = ./broken.ts#one\n");
    const refused = await client.reload([c.flows, mapping], { key }).then(() => undefined, (e) => e);
    assert.ok(refused instanceof ReloadError, String(refused));
    assert.match(refused.message, /boom at import.*nothing changed/);

    marks.refused = performance.now();
    // The load goes on for SECONDS, and for a second at least after the last reload (a slow
    // machine may have delayed them).
    await at(1);
    await new Promise((r) => setTimeout(r, Math.max(0, marks.refused + 1000 - performance.now())));
    clearInterval(timer);
    marks.stopped = performance.now();
    const total = sent.length;
    assert.ok(
      await eventually(() => sent.every((s) => s.result || s.failure), 120_000),
      `${sent.filter((s) => !s.result && !s.failure).length} of ${total} requests without a final`,
    );
    // Duplicates would come within a moment.
    await new Promise((r) => setTimeout(r, 2000));

    const failures = sent.filter((s) => s.failure).map((s) => String(s.failure));
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} requests failed (lost)`);
    const byCode = new Map<string, number>();
    let straddled = 0;
    for (const s of sent) {
      const p = s.result!;
      assert.equal(finals.get(p.id), 1, `request ${p.id} (${s.flow}): ${finals.get(p.id)} finals`);
      const code = p.error?.code ?? "done";
      byCode.set(`${s.flow} ${code}`, (byCode.get(`${s.flow} ${code}`) ?? 0) + 1);
      assert.notEqual(code, "overloaded");
      if (s.flow === "Gone") {
        if (s.at < marks.removedStart) assert.equal(code, "done", JSON.stringify(p));
        else if (s.at > marks.removed) assert.equal(code, "unknown_flow", JSON.stringify(p));
        else assert.ok(code === "done" || code === "unknown_flow", JSON.stringify(p));
        if (code === "unknown_flow") continue;
      } else assert.equal(code, "done", JSON.stringify(p));
      const v = p.values;
      // All three steps ran on one version: that of the request's start.
      assert.ok(v.one === v.two && v.two === v.three, `mixed versions in ${JSON.stringify(p)}`);
      if (s.at > marks.stamped) assert.equal(v.one, "v2", JSON.stringify(p));
      if (s.doneAt! < marks.stampedStart) assert.equal(v.one, "v1", JSON.stringify(p));
      if (v.one === "v1" && s.doneAt! > marks.stamped) straddled++;
      if (s.flow === "Relay") assert.equal(v.mid, true);
    }
    console.log(
      `${total} requests in ${((marks.stopped - start) / 1000).toFixed(1)} s; outcomes ${
        JSON.stringify(Object.fromEntries(byCode))
      }; ` +
        `${straddled} started on v1 and ended after v2's switch; reloads (s): ${
          JSON.stringify(
            Object.fromEntries(Object.entries(marks).map(([k, t]) => [k, ((t - start) / 1000).toFixed(2)])),
          )
        }`,
    );
    assert.ok(straddled > 0, "requests in flight at the handler change finished on their own version");
    assert.ok((byCode.get("Extra done") ?? 0) > 0, "the added flow served");
    assert.ok((byCode.get("Gone unknown_flow") ?? 0) > 0, "the removed flow is gone");
    const s = await roleStats(d.dir, "subject");
    assert.equal(s.version, 4);
    assert.equal(s.reloadsFailed, 1);
    assert.equal(s.lost, 0);
    // A client sends again what the Subject acknowledges late (a loaded machine): those copies are
    // acknowledged and dropped as duplicates. Nothing else is dropped.
    const { duplicate: _resent, ...drops } = s.dropped as Record<string, number>;
    assert.deepEqual(drops, {});
    await Promise.all(taps.map((it) => it.return?.()));
    await Promise.race([Promise.all(tapping), new Promise((r) => setTimeout(r, 1000))]);
  } finally {
    await Promise.all([service.close(), client.close(), tap.close()]);
    await Deno.remove(c.dir, { recursive: true });
  }
});
