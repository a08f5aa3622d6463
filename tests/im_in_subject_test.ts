// `integration_manager_in_subject`: the Integration Manager runs in the Subject's process, on its
// reactor, linked over inproc. Real processes (`cli.ts start`), real sockets, a real SIGKILL.
// The kill and drain tests of the Subject run in this placement too (subject_restart_test.ts,
// reliability_test.ts: `IM_PLACEMENTS`).
import assert from "node:assert/strict";
import { killRole, rolePids, roleStats } from "../testing/deployment.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { countFinals, settle } from "./finals.ts";
import { IM_PLACEMENTS, startDeployment } from "./helpers.ts";

const IN_SUBJECT = IM_PLACEMENTS[1].args;

Deno.test("IM in the Subject's process: one process runs both, requests are answered, stats shows both roles", async () => {
  await using d = await startDeployment({ workers: 1, args: IN_SUBJECT });
  await using client = await d.connect();
  const p = await client.request("Slow", { ms: 0, i: 7 });
  assert.equal(p.action, "done");
  assert.equal(p.values.i, 7);
  const subjects = await rolePids(d.dir, "subject");
  assert.equal(subjects.length, 1);
  assert.deepEqual(
    await rolePids(d.dir, "integration-manager"),
    subjects,
    "the IM's counters come from the Subject's pid",
  );
  // No process of its own: `start`'s only `integration-manager` child would show in ps.
  const ps = new TextDecoder().decode(
    (await new Deno.Command("ps", { args: ["-eo", "args"] }).output()).stdout,
  );
  const own = ps.split("\n").filter((l) => l.includes(d.dir) && / integration-manager /.test(l));
  assert.deepEqual(own, [], "no integration-manager process");
  // The counters are written every second.
  let im = await roleStats(d.dir, "integration-manager");
  for (let t = 0; t < 20 && !((im.published as number) >= 1); t++) {
    await new Promise((r) => setTimeout(r, 250));
    im = await roleStats(d.dir, "integration-manager");
  }
  assert.ok((im.published as number) >= 1, "the IM in the Subject's process published the final");
  assert.equal(im.dropped, 0);
  assert.equal((await roleStats(d.dir, "subject")).imUnacked, 0, "and it was acknowledged over inproc");
});

Deno.test("IM in the Subject's process: integration_manager_pull_address still takes plain publications", async () => {
  await using d = await startDeployment({ workers: 1, args: IN_SUBJECT });
  await using client = await d.connect();
  const stream = await client.subscribe("T~");
  const r = new Reactor();
  try {
    const dealer = r.socket("DEALER");
    await dealer.connect(`ipc://${d.dir}/im-pull`);
    const enc = new TextEncoder();
    const got = (async () => {
      for await (const p of stream) return p;
    })();
    // Sent until one arrives: the subscription may not have reached the IM yet.
    let seen: unknown;
    void got.then((p) => seen = p);
    for (let i = 0; i < 50 && seen === undefined; i++) {
      await dealer.send([
        enc.encode("T~~~~plain"),
        enc.encode(`{"v":1,"id":"p${i}"}`),
        enc.encode('{"x":1}'),
      ]);
      await new Promise((res) => setTimeout(res, 100));
    }
    const p = await got;
    assert.equal(p?.topic, "T~~~~plain");
    assert.deepEqual(p?.values, { x: 1 });
  } finally {
    await stream.return?.();
    await r.close();
  }
});

Deno.test("IM in the Subject's process: SIGKILL while finals flow; start brings both back, every caller gets its final", async () => {
  await using d = await startDeployment({ workers: 2, args: IN_SUBJECT });
  await using client = await d.connect();
  const w = await countFinals(d, "Slow");
  try {
    const n = 500;
    // Handlers sleep 500 to 1,500 ms: finals flow for a second, and the process dies in the middle.
    // Which callers had their final before the client saw the new incarnation: only those finals
    // can have been written by the dying process, so only those may be missing on the watcher.
    const beforeRestart = new Set<string>();
    const requests = Array.from({ length: n }, (_, i) => {
      const id = `in-${i}`;
      const r = client.request("Slow", { i, ms: 500 + 2 * i }, { id, timeout: 45_000 });
      void r.then(() => client.subjectRestarts === 0 && beforeRestart.add(id), () => {});
      return r;
    });
    await w.count(100);
    const killed = await killRole(d.dir, "subject");
    assert.ok(killed !== undefined, "a Subject to kill");
    const results = await Promise.all(requests);
    results.forEach((p, i) => {
      assert.equal(p.action, "done", `request ${i}: ${JSON.stringify(p.error)}`);
      assert.equal(p.values.i, i);
    });
    assert.equal(
      client.subjectRestarts,
      1,
      "the caller saw the new incarnation and sent its unfinished requests again",
    );
    const sentinel = await settle(d, client, w.seen, "Slow");
    // libzmq writes one publication to the subscribers' connections one after the other,
    // microseconds apart, so a process killed in between has given a final to some of them only
    // (README, Not guaranteed). If the caller missed it, the request runs again and a raw subscriber
    // that had read it sees it twice; if the caller had it and the raw subscriber not, the raw
    // subscriber never sees it (CI saw 1 of 500). Everything after the restart reaches both.
    const twice = [...w.finals].filter(([, c]) => c !== 1);
    assert.ok(twice.every(([, c]) => c === 2), `no final more than twice: ${JSON.stringify(twice)}`);
    const missing = requests.map((_, i) => `in-${i}`).filter((id) => !w.finals.has(id));
    assert.deepEqual(
      missing.filter((id) => !beforeRestart.has(id)),
      [],
      "every final published after the restart reached the separate subscription",
    );
    assert.ok(missing.length <= n / 10, `${missing.length} finals missing on the separate subscription`);
    assert.equal(w.finals.size, n + 1 - missing.length, "no final for anything else");
    assert.equal(w.finals.get(sentinel), 1);
    const [after] = await rolePids(d.dir, "subject");
    assert.ok(after !== undefined && after !== killed, "start restarted the Subject");
    assert.deepEqual(await rolePids(d.dir, "integration-manager"), [after], "and the IM with it");
    console.log(
      `finals ${w.finals.size - 1}/${n} on the separate subscription (${missing.length} missing, ` +
        `${twice.length} seen twice); resent after the restart: ${client.resentAfterRestart}`,
    );
  } finally {
    await w.close();
  }
});

Deno.test("IM in the Subject's process: the IM cannot run alone, and start --roles without the Subject is refused", async () => {
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const run = async (args: string[]) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli, ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    return { code: r.code, stderr: new TextDecoder().decode(r.stderr) };
  };
  const alone = await run(["integration-manager", ...IN_SUBJECT]);
  assert.equal(alone.code, 64);
  assert.match(
    alone.stderr,
    /integration_manager_in_subject is on: the Integration Manager runs in the Subject's process; run `subject`/,
  );
  const roles = await run(["start", "--roles", "integration-manager,workers", ...IN_SUBJECT]);
  assert.equal(roles.code, 64);
  assert.match(roles.stderr, /give --roles subject on this host, or turn the setting off/);
});
