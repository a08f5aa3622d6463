// The Subject's kept finals (src/roles/final_replay.ts): kept only for requests that asked, copied
// out of the batch they left in, bounded in bytes and count, published again marked `replay`; and
// over a real deployment, a client's request sent again with its id.
import assert from "node:assert/strict";
import { FinalReplay, markReplay } from "../src/roles/final_replay.ts";
import { KeptStore } from "../src/roles/kept_store.ts";
import { PausedStore } from "../src/roles/paused_store.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { RequestTimeoutError } from "../src/client/client.ts";
import { killRole, rolePids, roleStats } from "../testing/deployment.ts";
import { countFinals, settle } from "./finals.ts";
import { IM_PLACEMENTS, runCli, RUNTIME_FIXTURE, startDeployment } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A final's frames as views into one larger buffer, as they leave in a batch. */
function final(id: string, values = "{}"): Uint8Array[] {
  const parts = [`F~~~~done`, JSON.stringify({ v: 1, id }), values].map((s) => enc.encode(s));
  const batch = new Uint8Array(parts.reduce((a, p) => a + p.length, 0) + 8);
  let at = 4;
  return parts.map((p) => {
    batch.set(p, at);
    const view = batch.subarray(at, at + p.length);
    at += p.length;
    return view;
  });
}

Deno.test("final replay: only a request that asked has its final kept; a copy gets it marked replay", () => {
  const r = new FinalReplay(1024);
  assert.equal(r.wanting, false);
  r.final("a", final("a")); // did not ask
  assert.equal(r.replay("a"), undefined);
  r.want("b");
  assert.equal(r.wanting, true);
  r.final("b", final("b", '{"x":1}'));
  assert.equal(r.wanting, false);
  const again = r.replay("b");
  assert.ok(again);
  assert.equal(dec.decode(again[0]), "F~~~~done");
  assert.deepEqual(JSON.parse(dec.decode(again[1])), { v: 1, id: "b", replay: 1 });
  assert.equal(dec.decode(again[2]), '{"x":1}');
  assert.deepEqual(r.stats(), { kept: 1, keptBytes: 9 + 16 + 7, replayed: 1, forgotten: 0 });
  // Replayed as often as copies come (each a retry that lost its answer).
  assert.ok(r.replay("b"));
});

Deno.test("final replay: the kept frames are copies, not views of the batch they left in", () => {
  const r = new FinalReplay(1024);
  r.want("c");
  const frames = final("c", '{"v":"original"}');
  r.final("c", frames);
  frames[2].fill(0x20); // the batch's buffer is reused
  assert.equal(dec.decode(r.replay("c")![2]), '{"v":"original"}');
  assert.notEqual(r.replay("c")![2].buffer, frames[2].buffer, "its own buffer");
});

Deno.test("final replay: bounded in bytes and count, oldest first; a final larger than the bound is not kept; 0 keeps none", () => {
  const size = final("r0").reduce((a, f) => a + f.length, 0); // 30 bytes
  const r = new FinalReplay(size * 3, 10);
  for (let i = 0; i < 5; i++) {
    r.want(`r${i}`);
    r.final(`r${i}`, final(`r${i}`));
  }
  assert.deepEqual([0, 1, 2, 3, 4].map((i) => r.replay(`r${i}`) !== undefined), [
    false,
    false,
    true,
    true,
    true,
  ]);
  assert.equal(r.stats().forgotten, 2);
  assert.equal(r.stats().keptBytes, size * 3);
  r.want("big");
  r.final("big", final("big", "x".repeat(size * 3)));
  assert.equal(r.replay("big"), undefined);
  const few = new FinalReplay(1 << 20, 2);
  for (const id of ["p", "q", "s"]) {
    few.want(id);
    few.final(id, final(id));
  }
  assert.deepEqual(["p", "q", "s"].map((id) => few.replay(id) !== undefined), [false, true, true]);
  const off = new FinalReplay(0);
  off.want("z");
  assert.equal(off.wanting, false);
});

Deno.test("final replay: requests that asked and never end are forgotten past the count bound", () => {
  const r = new FinalReplay(1 << 20, 3);
  for (const id of ["a", "b", "c", "d"]) r.want(id);
  r.final("a", final("a")); // forgotten: "d" pushed it out
  assert.equal(r.replay("a"), undefined);
  r.final("d", final("d"));
  assert.ok(r.replay("d"));
});

Deno.test("final replay: a record that goes back to the ring's start never overwrites one still kept", () => {
  /** A final of exactly `size` bytes. */
  const sized = (id: string, size: number) => {
    const frames = final(id, "");
    const pad = size - frames[0].length - frames[1].length;
    return [frames[0], frames[1], enc.encode(`"${"v".repeat(pad - 2)}"`)];
  };
  const r = new FinalReplay(200, 100);
  const keep = (id: string, size: number) => {
    r.want(id);
    r.final(id, sized(id, size));
  };
  keep("a", 140); // [0, 140)
  keep("b", 50); // [140, 190)
  keep("c", 120); // back to 0: [0, 120), "a" forgotten; "b" stays
  keep("d", 90); // back to 0 again: "b" (skipped) and "c" (overlapped) go
  assert.deepEqual(["a", "b", "c", "d"].map((id) => r.replay(id) !== undefined), [false, false, false, true]);
  const d = r.replay("d")!;
  assert.equal(d[0].length + d[1].length - 11 + d[2].length, 90, "intact"); // (the header gained ,"replay":1)
  // Every kept record intact through many rounds of mixed sizes.
  const many = new FinalReplay(1000, 7);
  const sizes = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    const id = `m${i}`;
    const size = 30 + ((i * 37) % 170);
    sizes.set(id, size);
    many.want(id);
    many.final(id, sized(id, size));
    for (const [k, want] of sizes) {
      const got = many.replay(k);
      if (!got) continue;
      assert.equal(JSON.parse(dec.decode(got[1])).id, k, `record ${k} after ${id}`);
      assert.equal(got[0].length + got[1].length - 11 + got[2].length, want);
    }
  }
  assert.ok(many.stats().kept <= 7 && many.stats().keptBytes <= 1000);
});

Deno.test("final replay: a request that paused has its pause kept until it is resumed; then its final", () => {
  const r = new FinalReplay(1024);
  r.want("p");
  const pause = final("p").map((f, i) => i === 0 ? enc.encode("F~ASYNC~~~wait") : f);
  r.paused("p", pause);
  assert.equal(dec.decode(r.replay("p")![0]), "F~ASYNC~~~wait", "a copy sent while it waits gets the pause");
  assert.equal(r.wanting, true, "still waiting for its final");
  r.resumed("p");
  assert.equal(r.replay("p"), undefined, "resumed: the pause's token is taken");
  r.final("p", final("p", '{"done":1}'));
  assert.equal(dec.decode(r.replay("p")![2]), '{"done":1}');
  r.resumed("p"); // a final is not forgotten by a resume
  assert.ok(r.replay("p"));
  r.paused("other", pause); // did not ask
  assert.equal(r.replay("other"), undefined);
});

Deno.test("final replay: its sink is told each record kept and forgotten (bounds, resume, too large); restored records are not told again", () => {
  const told: string[] = [];
  const sink = {
    put: (id: string, pause: boolean) => void told.push(`put ${id}${pause ? " pause" : ""}`),
    remove: (id: string) => void told.push(`remove ${id}`),
  };
  const r = new FinalReplay(100, 2, sink);
  const keep = (id: string) => {
    r.want(id);
    r.final(id, final(id));
  };
  keep("a");
  keep("b");
  keep("c"); // two at most: "a" goes
  r.want("p");
  r.paused("p", final("p")); // "b" goes
  r.resumed("p");
  r.want("big");
  r.final("big", final("big", `"${"x".repeat(200)}"`)); // over 100 bytes: not kept
  assert.deepEqual(told, ["put a", "put b", "remove a", "put c", "remove b", "put p pause", "remove p"]);
  assert.deepEqual(["a", "b", "c", "p"].map((id) => r.has(id)), [false, false, true, false]);
  // A Subject started again reads them back, oldest first: kept, nothing told but what the
  // bounds forget.
  told.length = 0;
  const again = new FinalReplay(100, 2, sink);
  for (const id of ["x", "y", "z"]) again.restore(id, final(id), false);
  assert.deepEqual(told, ["remove x"]);
  assert.deepEqual(["x", "y", "z"].map((id) => again.has(id)), [false, true, true]);
  assert.equal(JSON.parse(dec.decode(again.replay("z")![1])).replay, 1);
});

Deno.test("kept store: records kept, replaced and forgotten are written at each commit (and at close), and come back in the order they were last kept, from another connection to the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-kept-" });
  try {
    const path = `${dir}/paused.sqlite`;
    const a = new KeptStore(path);
    a.put("one", true, final("one", '{"p":1}'));
    a.put("two", false, final("two"));
    a.put("one", false, final("one", '{"done":1}')); // its final, after its pause: now the newest
    a.put("three", false, final("three"));
    a.remove("two");
    const b = new KeptStore(path); // the next Subject, while this one is still open
    assert.deepEqual([...b.all()], [], "nothing written before the commit");
    assert.equal(a.pending, true);
    a.commit();
    assert.equal(a.pending, false);
    const rows = [...b.all()];
    assert.deepEqual(rows.map((r) => [r.id, r.pause]), [["one", false], ["three", false]]);
    assert.equal(dec.decode(rows[0].frames[2]), '{"done":1}');
    assert.equal(dec.decode(rows[0].frames[0]), "F~~~~done");
    a.put("four", false, final("four"));
    a.close(); // commits what waits
    assert.deepEqual([...b.all()].map((r) => r.id), ["one", "three", "four"]);
    b.close();
    b.close(); // twice is safe
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("markReplay: adds replay to a JSON object header, leaves anything else as it is", () => {
  assert.deepEqual(
    JSON.parse(dec.decode(markReplay(enc.encode('{"v":1,"id":"x","error":{"code":"timeout"}}')))),
    {
      v: 1,
      id: "x",
      error: { code: "timeout" },
      replay: 1,
    },
  );
  const odd = enc.encode("[1]");
  assert.equal(markReplay(odd), odd);
  const bad = enc.encode("{");
  assert.equal(markReplay(bad), bad);
});

Deno.test("a request sent with keep, sent again with the same id after its final: the final again, marked replay, nothing run twice; without keep, nothing comes", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const w = await countFinals(d, "Three");
  try {
    const first = await client.request("Three", { n: 1 }, { id: "kept-1", keep: true });
    assert.equal(first.action, "done");
    assert.equal(first.replay, undefined);
    // Another client (a restarted service) sends the same request again.
    await using other = await d.connect();
    const again = await other.request("Three", { n: 2 }, { id: "kept-1", keep: true });
    assert.equal(again.replay, true);
    assert.deepEqual(again.values, first.values, "the first run's final, not a second run");
    assert.equal(again.values.n, 1);
    await client.request("Three", { n: 1 }, { id: "not-kept" });
    // (A client connected now: one subscribed already could still be handed the first final.)
    await using late = await d.connect();
    await assert.rejects(
      late.request("Three", { n: 2 }, { id: "not-kept", timeout: 1500 }),
      RequestTimeoutError,
    );
    const stats = await roleStats(d.dir, "subject");
    assert.ok((stats.replay as { replayed: number }).replayed >= 1, JSON.stringify(stats.replay));
    await settle(d, client, w.seen, "Three");
    assert.deepEqual([...w.finals].filter(([, c]) => c !== 1), [], "each ran once");
  } finally {
    await w.close();
  }
});

for (const { label, args } of IM_PLACEMENTS) {
  Deno.test(`kept finals outlive the Subject: after a SIGKILL, copies of 200 keyed requests (and of one paused) get their first run's final, marked replay; nothing runs twice${label}`, async () => {
    await using d = await startDeployment({ workers: 2, args });
    await using client = await d.connect();
    const w = await countFinals(d, "Three");
    try {
      const n = 200;
      const ids = Array.from({ length: n }, (_, i) => `keyed-${i}`);
      const first = await Promise.all(
        ids.map((id, i) => client.request("Three", { i }, { id, keep: true, timeout: 20_000 })),
      );
      first.forEach((p) => assert.equal(p.action, "done"));
      // A keyed request that waits at its @ASYNC step: its pause is what is kept.
      const pauses = await client.subscribe("Pause~ASYNC~");
      const pausedRun = client.request("Pause", { a: 1 }, { id: "keyed-pause", keep: true, timeout: 60_000 });
      pausedRun.catch(() => {}); // a failed assertion below reports itself, not this
      const pause = (await pauses.next()).value as Publication;
      await pauses.return!();
      assert.equal(pause.id, "keyed-pause");
      const old = await killRole(d.dir, "subject");
      assert.ok(old !== undefined, "a Subject to kill");
      // Another client (a restarted service or gateway) sends each again, with other values.
      await using other = await d.connect();
      const again = await Promise.all(
        ids.map((id, i) => other.request("Three", { i, again: 1 }, { id, keep: true, timeout: 30_000 })),
      );
      again.forEach((p, i) => {
        assert.equal(p.replay, true, `request ${i}: ${JSON.stringify(p.values)}`);
        assert.deepEqual(p.values, first[i].values, "the first run's final");
      });
      // The paused one's copy gets the pause again (the same token), and, once resumed, the final.
      const otherPauses = await other.subscribe("Pause~ASYNC~");
      const copy = other.request("Pause", { a: 2 }, { id: "keyed-pause", keep: true, timeout: 60_000 });
      copy.catch(() => {});
      const pauseAgain = (await otherPauses.next()).value as Publication;
      await otherPauses.return!();
      assert.equal(pauseAgain.replay, true);
      assert.equal(pauseAgain.values.a, 1, "the first run's pause");
      assert.equal(pauseAgain.resume, pause.resume);
      await other.sendResume(pause.resume!, { b: 1 });
      const [ranOnce, copyFinal] = await Promise.all([pausedRun, copy]);
      assert.equal(ranOnce.action, "done");
      assert.deepEqual(copyFinal.values, ranOnce.values);
      assert.equal(ranOnce.values.a, 1);
      // Its final is kept in place of its pause (the new Subject knew it asked from the pause it
      // read back): a third copy gets the final, and runs nothing.
      const third = await other.request("Pause", { a: 3 }, {
        id: "keyed-pause",
        keep: true,
        timeout: 20_000,
      });
      assert.equal(third.replay, true, JSON.stringify(third));
      assert.deepEqual(third.values, ranOnce.values);
      assert.notEqual((await rolePids(d.dir, "subject"))[0], old, "a new Subject answered");
      const sentinel = await settle(d, client, w.seen, "Three");
      assert.deepEqual([...w.finals].filter(([, c]) => c !== 1), [], "each ran once");
      assert.equal(w.finals.size, n + 1);
      assert.equal(w.finals.get(sentinel), 1);
    } finally {
      await w.close();
    }
  });
}

Deno.test("kept finals read back by a Subject with a smaller replay_buffer: the newest that fit are kept, the rest forgotten (on disk too), and it starts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-kept-shrink-" });
  const store = `${dir}/paused.sqlite`;
  try {
    const ids = Array.from({ length: 50 }, (_, i) => `shrink-${i}`);
    {
      await using d = await startDeployment({ workers: 1, args: ["--async-store", store] });
      await using client = await d.connect();
      for (const id of ids) {
        assert.equal((await client.request("Three", { id }, { id, keep: true })).action, "done");
      }
      // One final larger than the next Subject's whole buffer.
      const big = await client.request("Three", { id: "big", pad: "x".repeat(3000) }, {
        id: "big",
        keep: true,
      });
      assert.equal(big.action, "done");
    }
    // About 100 bytes a final: 2,000 bytes hold the last 20 or so.
    await using d = await startDeployment({
      workers: 1,
      args: ["--async-store", store, "--replay-buffer", "2000"],
    });
    await using client = await d.connect();
    const newest = await client.request("Three", { id: "again" }, { id: ids[49], keep: true });
    assert.equal(newest.replay, true);
    assert.equal(newest.values.id, ids[49]);
    const oldest = await client.request("Three", { id: "again" }, { id: ids[0], keep: true });
    assert.equal(oldest.replay, undefined, "forgotten: it ran again");
    assert.equal(oldest.values.id, "again");
    const rows = new KeptStore(store);
    try {
      const kept = [...rows.all()].map((r) => r.id);
      // The newest that fit, and the one that ran again (kept anew).
      assert.ok(kept.length <= 25 && kept.includes(ids[49]) && !kept.includes(ids[1]), kept.join(" "));
      assert.ok(!kept.includes("big"), "a final over the new bound is forgotten on disk too");
      assert.equal(kept.at(-1), ids[0]);
    } finally {
      rows.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the async_store file locked from outside for 6 s: the Subject keeps answering keyed requests (their finals kept in memory meanwhile) and is not restarted", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const [subject] = await rolePids(d.dir, "subject");
  // (python3 is there in CI for the pyzmq peers.)
  const locker = await lockFromOutside(`${d.dir}/paused.sqlite`, 6);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < 6500) {
    const p = await client.request("Three", { n }, { id: `locked-${n}`, keep: true, timeout: 10_000 });
    assert.equal(p.action, "done");
    n++;
  }
  await locker.status;
  // Before: the paused flows' expiry threw "database is locked" out of the Subject's timer.
  assert.deepEqual(await rolePids(d.dir, "subject"), [subject], "the same Subject");
  const again = await client.request("Three", { n: -1 }, { id: "locked-0", keep: true });
  assert.equal(again.replay, true, "kept in memory while the file was locked");
  const stats = await roleStats(d.dir, "subject");
  assert.ok(((stats.dropped as Record<string, number>).kept_store ?? 0) >= 1, JSON.stringify(stats.dropped));
});

Deno.test("async_store: a second deployment on a file another Subject holds, or a file that is not a database, fails start with the file and the fix named", async () => {
  await using d = await startDeployment({ workers: 1 });
  const dir = await Deno.makeTempDir({ prefix: "zm-store-" });
  const start = (store: string) =>
    runCli([
      "start",
      "--workers",
      "1",
      // (It waits for the store's holder as long as a drain may take: handler_timeout + 10 s.)
      "--handler-timeout",
      "1000",
      "--runtime-dir",
      `${dir}/rt-${store.length}`,
      "--async-store",
      store,
      ...RUNTIME_FIXTURE,
    ]);
  try {
    // Before: the second read back the first's kept finals and forgot them past its bounds.
    const shared = await start(`${d.dir}/paused.sqlite`);
    assert.equal(shared.code, 1, shared.stderr);
    assert.match(
      shared.stderr,
      /async_store \S+paused\.sqlite is in use by another Subject \(pid \d+, \S+\.lock\); give each deployment its own --async-store/,
    );
    // Before: a raw stack trace.
    await Deno.writeFile(`${dir}/garbage.sqlite`, crypto.getRandomValues(new Uint8Array(20_000)));
    const garbage = await start(`${dir}/garbage.sqlite`);
    assert.equal(garbage.code, 1, garbage.stderr);
    assert.match(
      garbage.stderr,
      /error: async_store \S+garbage\.sqlite: file is not a database; move the file away/,
    );
    // The first deployment serves on.
    await using client = await d.connect();
    assert.equal((await client.request("Three", {})).action, "done");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a final the Subject cannot keep (its 1 GiB ring cannot be allocated) still reaches the caller; counted, the Subject serves on", async () => {
  // The Subject's address space capped (`prlimit`, as a container's limit would) 256 MiB above
  // what it has mapped: the ring of `--replay-buffer 1073741824`, allocated for the first final
  // kept, cannot be, while the Subject's other allocations still fit.
  if (
    !await new Deno.Command("prlimit", { args: ["--version"], stdout: "null" }).output().then(
      (o) => o.success,
      () => false,
    )
  ) {
    console.warn("skipped: prlimit (util-linux) is not installed");
    return;
  }
  await using d = await startDeployment({ workers: 1, args: ["--replay-buffer", "1073741824"] });
  const [subject] = await rolePids(d.dir, "subject");
  const vmSize = Number(/VmSize:\s+(\d+) kB/.exec(await Deno.readTextFile(`/proc/${subject}/status`))![1]) *
    1024;
  const capped = await new Deno.Command("prlimit", {
    args: ["--pid", String(subject), `--as=${vmSize + 256 * 1024 * 1024}`],
  }).output();
  assert.ok(capped.success, new TextDecoder().decode(capped.stderr));
  await using client = await d.connect();
  // Before: the allocation threw out of the IM batch's send, and the batch was lost.
  const p = await client.request("Three", { n: 1 }, { id: "cannot-keep", keep: true, timeout: 10_000 });
  assert.equal(p.action, "done");
  assert.equal((await client.request("Three", { n: 2 }, { timeout: 10_000 })).action, "done");
  let stats: Record<string, unknown> = {};
  for (let i = 0; i < 30; i++) {
    stats = await roleStats(d.dir, "subject");
    if ((stats.dropped as Record<string, number> | undefined)?.kept_memory) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal((stats.dropped as Record<string, number>).kept_memory, 1, JSON.stringify(stats.dropped));
  assert.deepEqual(await rolePids(d.dir, "subject"), [subject], "the same Subject");
});

Deno.test("a keyed copy of a request whose final is no longer kept is answered `forgotten` at once, and nothing runs again; a copy of one still running or paused waits for its final; a copy without keep gets nothing", async () => {
  // About 100 bytes a final: 600 bytes keep the last few.
  await using d = await startDeployment({ workers: 1, args: ["--replay-buffer", "600"] });
  await using client = await d.connect();
  await using other = await d.connect();
  assert.equal((await client.request("Three", { n: 0 }, { id: "old", keep: true })).action, "done");
  for (let i = 1; i <= 20; i++) await client.request("Three", { n: i }, { id: `newer-${i}`, keep: true });
  const t0 = performance.now();
  // Before: dropped as a duplicate, unanswered: this waited out its 20 s.
  const copy = await other.request("Three", { n: -1 }, { id: "old", keep: true, timeout: 20_000 });
  assert.ok(performance.now() - t0 < 5000, `answered after ${Math.round(performance.now() - t0)} ms`);
  assert.equal(copy.action, "error");
  assert.equal(copy.error?.code, "forgotten");
  assert.equal(copy.refused, undefined, "acknowledged as a duplicate, not refused: not marked refused");
  assert.match(
    copy.error!.message,
    /^request "old" has run, and its final is no longer kept \(replay_buffer\)/,
  );
  assert.equal(
    (await other.request("Three", {}, { id: "newer-20", keep: true })).replay,
    true,
    "the newest is kept",
  );
  // A copy without keep is dropped as before: nothing comes.
  await assert.rejects(other.request("Three", {}, { id: "old", timeout: 1500 }), RequestTimeoutError);
  // A keyed copy of a request still running is answered by its final, not `forgotten`.
  const slow = client.submit("Slow", { ms: 1500 }, { id: "slow", keep: true, timeout: 20_000 });
  await slow.accepted; // running: the Subject took it
  const slowCopy = await other.request("Slow", { ms: 0 }, { id: "slow", keep: true, timeout: 20_000 });
  assert.equal(slowCopy.action, "done", JSON.stringify(slowCopy.error));
  assert.deepEqual(slowCopy.values, (await slow.final).values);
  // A paused request (sent without keep, so its pause is not kept): a keyed copy waits for its final.
  const pauses = await client.subscribe("Pause~ASYNC~");
  const pausedRun = client.request("Pause", { a: 1 }, { id: "paused", timeout: 60_000 });
  const pause = (await pauses.next()).value as Publication;
  await pauses.return!();
  let copySettled = false;
  const pausedCopy = other.request("Pause", { a: 2 }, { id: "paused", keep: true, timeout: 60_000 });
  void pausedCopy.then(() => copySettled = true, () => copySettled = true);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(copySettled, false, "a paused request's copy was answered before its final");
  await client.sendResume(pause.resume!, { b: 1 });
  const [ran, copied] = await Promise.all([pausedRun, pausedCopy]);
  assert.equal(ran.action, "done");
  assert.deepEqual(copied.values, ran.values);
  // Nothing ran again: one `done` each for Three's 21 requests (the replay is not counted); the
  // `forgotten` answer is counted as refused, not as an outcome of a request.
  const stats = await roleStats(d.dir, "subject") as {
    requests: { flows: Record<string, { outcomes: object }> };
    refused: number;
  };
  assert.deepEqual(stats.requests.flows.Three.outcomes, { done: 21 });
  assert.equal(stats.refused, 1);
});

Deno.test("pauses made while async_store is locked from outside wait for it and are published once saved: none is lost, no step runs twice, and the Subject (liveness_timeout 2000) is not killed as hung", async () => {
  await using d = await startDeployment({ workers: 2, args: ["--liveness-timeout", "2000"] });
  await using client = await d.connect();
  const [subject] = await rolePids(d.dir, "subject");
  const locker = await lockFromOutside(`${d.dir}/paused.sqlite`, 5);
  const lockedAt = performance.now();
  const pauses = await client.subscribe("Pause~ASYNC~");
  // Pauses while it is locked, and steps of other requests in the same result batches.
  const paused = Array.from({ length: 8 }, (_, i) => {
    const p = client.request("Pause", { i }, { id: `pause-${i}`, timeout: 60_000 });
    p.catch(() => {}); // a failed assertion below reports itself
    return p;
  });
  const plain = await Promise.all(
    Array.from(
      { length: 200 },
      (_, i) => client.request("Three", { i }, { id: `plain-${i}`, timeout: 30_000 }),
    ),
  );
  plain.forEach((p) => assert.equal(p.action, "done"));
  const tokens = new Map<string, string>();
  const late = Symbol("late");
  const deadline = new Promise<typeof late>((r) => setTimeout(() => r(late), 20_000));
  while (tokens.size < 8) {
    const next = await Promise.race([pauses.next(), deadline]);
    if (next === late) break;
    const p = next.value as Publication;
    tokens.set(p.id, p.resume!);
  }
  await pauses.return!();
  assert.equal(tokens.size, 8, `pauses published within 20 s: ${[...tokens.keys()].join(" ")}`);
  // Before: a save that found the lock threw out of the worker's result batch: that request was
  // lost (no pause, nothing in the store), and the rest of the batch ran again.
  assert.ok(performance.now() - lockedAt > 4000, "the pauses waited for the lock");
  await locker.status;
  for (const [id, token] of tokens) await client.sendResume(token, { resumed: id });
  for (const p of await Promise.all(paused)) assert.equal(p.action, "done", JSON.stringify(p.error));
  assert.deepEqual(await rolePids(d.dir, "subject"), [subject], "the same Subject (not killed as hung)");
  // (The counters are written every second.)
  let stats = { redelivered: -1, lost: -1, storeWaiting: -1 };
  for (let i = 0; i < 30 && stats.storeWaiting !== 0; i++) {
    await new Promise((r) => setTimeout(r, 200));
    stats = await roleStats(d.dir, "subject") as typeof stats;
  }
  assert.deepEqual([stats.redelivered, stats.lost, stats.storeWaiting], [0, 0, 0]);
});

Deno.test("kept store: a commit that finds the file locked throws the lock's error, and the next second's commits are not tried (no wait on the caller's thread)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-kept-lock-" });
  const { DatabaseSync } = await import("node:sqlite");
  const store = new KeptStore(`${dir}/s.sqlite`);
  const other = new DatabaseSync(`${dir}/s.sqlite`);
  try {
    other.exec("BEGIN EXCLUSIVE");
    store.put("a", false, final("a"));
    assert.throws(() => store.commit(1000), /database is locked/);
    store.put("b", false, final("b"));
    const t0 = performance.now();
    assert.throws(() => store.commit(1500), /not tried: a write to the store failed less than 1000 ms ago/);
    assert.ok(performance.now() - t0 < 50, "no wait for the lock");
    other.exec("COMMIT");
    store.put("c", false, final("c"));
    store.commit(2001);
    assert.deepEqual([...store.all()].map((r) => r.id), ["c"], "a and b stayed in memory only");
  } finally {
    other.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Holds `file` (a SQLite database) locked from another process (`BEGIN EXCLUSIVE`) for `seconds`. */
async function lockFromOutside(file: string, seconds: number): Promise<Deno.ChildProcess> {
  const locker = new Deno.Command("python3", {
    args: [
      "-c",
      "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(float(sys.argv[2]))\nc.execute('COMMIT')",
      file,
      String(seconds),
    ],
    stdout: "piped",
  }).spawn();
  const out = locker.stdout.pipeThrough(new TextDecoderStream()).getReader();
  assert.equal((await out.read()).value?.trim(), "locked");
  // Read on to the end: with its output closed early, the locker's lock did not hold (tests saw
  // writes go through).
  void (async () => {
    while (!(await out.read()).done) { /* drain */ }
  })();
  return locker;
}

Deno.test("SIGTERM while pauses wait for a locked async_store: the drain waits for their saves, and each pause is published and saved", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const locker = await lockFromOutside(`${d.dir}/paused.sqlite`, 4);
  const pauses = await client.subscribe("Pause~ASYNC~");
  for (let i = 0; i < 4; i++) {
    client.request("Pause", { i }, { id: `drained-${i}`, timeout: 60_000 }).catch(() => {});
  }
  // Once the four wait for the store (the counters are written every second).
  let waiting = 0;
  for (let t = 0; t < 50 && waiting < 4; t++) {
    await new Promise((r) => setTimeout(r, 100));
    waiting = Number((await roleStats(d.dir, "subject")).storeWaiting);
  }
  assert.equal(waiting, 4, "the pauses wait for the store");
  // `paused` lists what the store holds, and says what waits to be saved.
  const listed = await runCli(["paused", "--runtime-dir", d.dir]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^0 paused flows$/m);
  assert.match(
    listed.stderr,
    /the Subject has 4 writes \(pauses, ends of resumed flows\) waiting for .*paused\.sqlite \(locked or full\): those pauses are not listed until they are saved/,
  );
  d.process.kill("SIGTERM");
  const seen = new Set<string>();
  const late = Symbol("late");
  const deadline = new Promise<typeof late>((r) => setTimeout(() => r(late), 20_000));
  while (seen.size < 4) {
    const next = await Promise.race([pauses.next(), deadline]);
    if (next === late || next.done) break;
    seen.add((next.value as Publication).id);
  }
  await pauses.return!();
  await locker.status;
  // Before: the drain did not wait for them; the Subject closed at once and they were lost.
  assert.equal(seen.size, 4, `pauses published: ${[...seen].join(" ")}`);
  assert.equal((await d.process.status).code, 0);
  const store = new PausedStore(`${d.dir}/paused.sqlite`);
  try {
    assert.deepEqual(store.list().map((p) => p.id).sort(), [...seen].sort());
  } finally {
    store.close();
  }
});

Deno.test("resumes sent at once while async_store is locked are answered overloaded within a few seconds, the Subject (liveness_timeout 2000) is not killed, and each runs once sent again", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--liveness-timeout", "2000"] });
  await using client = await d.connect();
  const [subject] = await rolePids(d.dir, "subject");
  const pauses = await client.subscribe("Pause~ASYNC~");
  const n = 20;
  const runs = Array.from({ length: n }, (_, i) => {
    const p = client.request("Pause", { i }, { id: `burst-${i}`, timeout: 60_000 });
    p.catch(() => {});
    return p;
  });
  const tokens: string[] = [];
  while (tokens.length < n) tokens.push(((await pauses.next()).value as Publication).resume!);
  await pauses.return!();
  const locker = await lockFromOutside(`${d.dir}/paused.sqlite`, 5);
  const t0 = performance.now();
  // Before: each waited 200 ms for the lock on the Subject's thread; at 15 it was killed as hung,
  // and again after each restart while the lock lasted.
  const refused = await Promise.all(
    tokens.map((t) => client.resume(t, { again: false }, { timeout: 20_000 })),
  );
  for (const p of refused) assert.equal(p.error?.code, "overloaded", JSON.stringify(p));
  assert.ok(performance.now() - t0 < 4000, `answered after ${Math.round(performance.now() - t0)} ms`);
  await locker.status;
  assert.deepEqual(await rolePids(d.dir, "subject"), [subject], "the same Subject");
  // The tokens were not taken: the resumes, sent again, resume each flow once.
  // The tokens were not taken: sent again (as `overloaded` says, once the store takes writes
  // again), the resumes resume each flow once.
  for (const t of tokens) {
    for (let k = 0; k < 20; k++) {
      const r = await client.resume(t, { again: true }, { timeout: 20_000 });
      if (r.error?.code !== "overloaded") break;
      await new Promise((res) => setTimeout(res, 250));
    }
  }
  for (const p of await Promise.all(runs)) {
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.equal(p.values.again, true);
  }
});

Deno.test("a keyed copy of a request whose resumed flow a Subject SIGKILL cut short waits for that flow's final (its resume, sent again, runs it on); nothing runs from the start again", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  await using other = await d.connect();
  // Every pause publication of the request, on a connection of its own.
  const watcher = await d.connect();
  const pauses: Publication[] = [];
  const seen = await watcher.subscribe("Pause~ASYNC~");
  const watching = (async () => {
    for await (const p of seen) if (p.id === "cut") pauses.push(p);
  })();
  try {
    const run = client.request("Pause", { a: 1 }, { id: "cut", keep: true, timeout: 60_000 });
    run.catch(() => {}); // the Subject that ran it dies: its caller gets the final through the copy below
    for (let i = 0; i < 100 && !pauses.length; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(pauses.length, 1, "the request paused");
    // The worker stopped: the resumed step waits in it when the Subject dies, and nothing ends
    // at the next Subject before the copy below is there.
    const [worker] = await rolePids(d.dir, "worker");
    Deno.kill(worker, "SIGSTOP");
    let resumed: Promise<Publication>;
    let old: number | undefined;
    let copy: Promise<Publication>;
    try {
      // Kept by its client, and sent again to the next Subject.
      resumed = client.resume(pauses[0].resume!, { b: 1 }, { timeout: 60_000 });
      resumed.catch(() => {});
      let stats = await roleStats(d.dir, "subject");
      for (let i = 0; i < 50 && Number(stats.resumed) < 1; i++) {
        await new Promise((r) => setTimeout(r, 100));
        stats = await roleStats(d.dir, "subject");
      }
      assert.equal(Number(stats.resumed), 1, "the resume took the token");
      old = await killRole(d.dir, "subject");
      assert.ok(old !== undefined, "a Subject to kill");
      for (let i = 0; i < 100; i++) {
        const pids = await rolePids(d.dir, "subject");
        if (pids.length === 1 && pids[0] !== old) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // A keyed copy, from another client (a restarted gateway, say): before, it ran from the
      // start (its pause's kept copy was dropped when the resume took the token), paused again
      // under a new token and waited out its timeout.
      const submitted = other.submit("Pause", { a: 2 }, { id: "cut", keep: true, timeout: 30_000 });
      await submitted.accepted;
      copy = submitted.final;
    } finally {
      Deno.kill(worker, "SIGCONT");
    }
    const final = await copy;
    assert.equal(final.action, "done", JSON.stringify(final));
    assert.deepEqual(final.values.trace, ["one", "two"], "each step once");
    assert.deepEqual([final.values.a, final.values.b], [1, 1], "the first run's values and the resume's");
    assert.deepEqual((await resumed).values, final.values);
    assert.deepEqual(pauses.map((p) => p.resume), [pauses[0].resume], "it paused once, not again");
    assert.notEqual((await rolePids(d.dir, "subject"))[0], old, "a new Subject answered");
  } finally {
    await seen.return?.();
    await watching;
    await watcher.close();
  }
});
