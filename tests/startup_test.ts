// Start-up and supervision (issue 16, items 7 and 8): bad handler modules fail `start` before
// `ready`; `start --strict` works; a runtime directory belongs to one `start`; `send` and `tap`
// end without a deployment; every role is restarted with a backoff that resets after a healthy
// minute; a role that cannot read its standard input is killed at stop. Real processes,
// sockets and signals throughout.
import assert from "node:assert/strict";
import { readUntil } from "../src/_async.ts";
import { Client } from "../src/client/client.ts";
import { killRole, rolePids } from "../testing/deployment.ts";
import { RestartBackoff } from "../src/cli/supervisor.ts";
import { SUBJECT_V8_FLAGS, WORKER_V8_FLAGS } from "../src/cli/start.ts";
import { CLI, RUNTIME_FIXTURE, spawnStart, startDeployment } from "./helpers.ts";

const FLOWS = "[Bad]\n?Bad?Push\nT?Bad?go\n??done\n";

/** Runs the CLI; kills it after `ms` (then `killed` is true). */
async function runWithin(args: string[], ms: number, env: Record<string, string> = {}) {
  const t0 = performance.now();
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { ZMANAGER_LOG: "warning", ...env },
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    p.kill("SIGKILL");
  }, ms);
  const r = await p.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: r.code,
    killed,
    elapsed: performance.now() - t0,
    stdout: dec.decode(r.stdout),
    stderr: dec.decode(r.stderr),
  };
}

/** Polls a condition every 100 ms, at most `tries` times (for state only visible in files). */
async function until(what: string, cond: () => Promise<boolean>, tries = 300): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const BAD_MODULES: [name: string, module: string | undefined, target: string, reason: RegExp][] = [
  ["a missing module", undefined, "./nope.ts#go", /cannot import file:.*\/nope\.ts: Module not found/],
  [
    "a syntax error",
    "export const go = (\n",
    "./syntax.ts#go",
    /cannot import file:.*\/syntax\.ts: SyntaxError: .* \(at file:.*\/syntax\.ts:1:\d+\)$/,
  ],
  ["a missing export", "export const other = 1;\n", "./noexp.ts#go", /noexp\.ts has no go/],
  [
    "a module that throws on import",
    'throw new Error("boom on import");\nexport const go = (v: unknown) => v;\n',
    "./throws.ts#go",
    /cannot import file:.*\/throws\.ts: boom on import \(at file:.*\/throws\.ts:1:\d+\)$/,
  ],
  [
    "a module that loops on import",
    "while (Date.now() > 0) { /* spins for ever */ }\nexport const go = (v: unknown) => v;\n",
    "./loops.ts#go",
    /loops\.ts did not finish importing within 3000 ms \(handler_import_timeout\)/,
  ],
];

for (const [name, module, target, reason] of BAD_MODULES) {
  Deno.test(`start: ${name} fails start-up before ready, naming the mapping entry and the reason`, async () => {
    // Written here rather than kept as files: a module with a syntax error would break fmt and lint.
    const dir = await Deno.makeTempDir({ prefix: "zmbad" });
    const runtime = await Deno.makeTempDir({ prefix: "zmd" });
    try {
      await Deno.writeTextFile(`${dir}/flows.ini`, FLOWS);
      await Deno.writeTextFile(`${dir}/mapping.ini`, `[actionmapping]\n; the entry\n??go = ${target}\n`);
      if (module !== undefined) {
        await Deno.writeTextFile(`${dir}/${target.slice(2, target.indexOf("#"))}`, module);
      }
      const r = await runWithin(
        [
          "start",
          "--workers",
          "1",
          "--runtime-dir",
          runtime,
          `${dir}/flows.ini`,
          `${dir}/mapping.ini`,
        ],
        60_000,
        { ZMANAGER_HANDLER_IMPORT_TIMEOUT: "3000" },
      );
      assert.equal(r.killed, false, `start did not exit within 60 s; its output: ${r.stdout}`);
      assert.equal(r.code, 1, r.stderr);
      assert.doesNotMatch(r.stdout, /ready/);
      const line = r.stderr.split("\n").find((l) =>
        l.startsWith(`${dir}/mapping.ini:3:1: error: ${target}: `)
      );
      assert.ok(line, r.stderr);
      assert.match(line, reason);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(runtime, { recursive: true });
    }
  });
}

Deno.test("start: a handler module that needs a permission its sandbox lacks fails start-up before ready (its worker exits), naming the grant that fixes it", async () => {
  // It imports in the start-up check (which has every permission), but not in its sandbox.
  const dir = await Deno.makeTempDir({ prefix: "zmbad" });
  const runtime = await Deno.makeTempDir({ prefix: "zmd" });
  try {
    await Deno.writeTextFile(`${dir}/flows.ini`, FLOWS);
    await Deno.writeTextFile(`${dir}/mapping.ini`, "[actionmapping]\n??go = ./env.ts#go\n");
    await Deno.writeTextFile(
      `${dir}/env.ts`,
      'const home = Deno.env.get("HOME");\nexport const go = (v: object) => ({ ...v, home });\n',
    );
    const args = [
      "start",
      "--workers",
      "2",
      "--runtime-dir",
      runtime,
      `${dir}/flows.ini`,
      `${dir}/mapping.ini`,
    ];
    const r = await runWithin(args, 60_000);
    assert.equal(r.killed, false, `start did not exit within 60 s; its output: ${r.stdout}`);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stdout, /ready/);
    assert.match(
      r.stderr,
      new RegExp(
        `env access to "HOME" denied: grant it in the \\[permissions\\] section of ${dir}/mapping.ini \\(env = HOME\\) \\(at file://${dir}/env.ts:1:\\d+\\)`,
      ),
    );
    assert.match(
      r.stderr,
      /"Worker \d" exited with 1 at start-up \(its error is above\): not ready, stopping/,
    );
    assert.doesNotMatch(r.stderr, /restarting in/, "no worker restarted before ready");
    // Granted, it starts.
    await Deno.writeTextFile(
      `${dir}/mapping.ini`,
      "[actionmapping]\n??go = ./env.ts#go\n[permissions]\nenv = HOME\n",
    );
    const ok = spawnStart(runtime, { workers: 2, files: [`${dir}/flows.ini`, `${dir}/mapping.ini`] });
    try {
      assert.ok(await ready(ok), "start with the grant is ready");
    } finally {
      ok.kill("SIGINT");
      await ok.status;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(runtime, { recursive: true });
  }
});

Deno.test("start --strict runs the basic fixture", async () => {
  await using dep = await startDeployment({ workers: 1, args: ["--strict"] });
  await using c = await dep.connect();
  const p = await c.request("Three", {}, { timeout: 20_000 });
  assert.equal(p.action, "done");
  assert.deepEqual(p.values.trace, ["one", "two", "three"]);
});

Deno.test("start runs the Subject and the workers with the V8 flags the README names (their memory at peak load)", async () => {
  await using dep = await startDeployment({ workers: 1 });
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  for (const [role, flags] of [["subject", SUBJECT_V8_FLAGS], ["worker", WORKER_V8_FLAGS]]) {
    const [pid] = await rolePids(dep.dir, role);
    assert.ok(pid !== undefined, `a ${role}`);
    const args = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    assert.ok(args.includes(`--v8-flags=${flags}`), `the ${role}'s command line: ${args.join(" ")}`);
    assert.ok(readme.includes(`\`--v8-flags=${flags}\``), `README names the ${role}'s flags`);
  }
});

Deno.test("a second start on a runtime directory exits 1 naming it and the holder; the first keeps serving", async () => {
  await using dep = await startDeployment({ workers: 1 });
  const r = await runWithin(
    ["start", "--workers", "1", "--runtime-dir", dep.dir, ...RUNTIME_FIXTURE],
    60_000,
  );
  assert.equal(r.killed, false);
  assert.equal(r.code, 1);
  assert.doesNotMatch(r.stdout, /ready/);
  assert.match(r.stderr, new RegExp(`runtime directory ${dep.dir} is in use .*pid ${dep.process.pid}\\b`));
  await using c = await dep.connect();
  const p = await c.request("Three", {}, { timeout: 20_000 });
  assert.equal(p.action, "done");
});

/** Whether `start` printed `ready` before its output ended; its output is read on to the end. */
async function ready(p: Deno.ChildProcess): Promise<boolean> {
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const out = await readUntil(reader, "ready\n");
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return out !== undefined;
}

Deno.test("the lock of a SIGKILLed start is taken over", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  try {
    const first = spawnStart(dir);
    assert.ok(await ready(first));
    first.kill("SIGKILL"); // its roles stop when their standard input closes
    await first.status;
    const second = spawnStart(dir);
    assert.ok(await ready(second), "the second start did not take the stale lock over");
    second.kill("SIGINT");
    assert.equal((await second.status).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Subject waits for async_store's lock while another holds it (a draining Subject), and starts once it is let go", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-store-wait-" });
  const store = `${dir}/paused.sqlite`;
  // The lock as a Subject of another start holds it (`FILE.lock`, flock, its pid inside).
  const held = await Deno.open(`${store}.lock`, { read: true, write: true, create: true });
  await held.lock(true);
  await held.write(new TextEncoder().encode(`${Deno.pid}\n`));
  // It waits up to handler_timeout + 10 s: 11 s here.
  const p = spawnStart(`${dir}/rt`, { args: ["--async-store", store, "--handler-timeout", "1000"] });
  let letGo = 0;
  try {
    const isReady = ready(p).then((ok) => ({ ok, at: performance.now() }));
    await new Promise((r) => setTimeout(r, 4000));
    letGo = performance.now();
    held.close(); // lets go of the lock
    // Before: start failed at once ("in use by another Subject").
    const r = await isReady;
    assert.ok(r.ok, "start did not become ready once the lock was let go");
    assert.ok(r.at >= letGo, "ready while the lock was held");
    p.kill("SIGINT");
    assert.equal((await p.status).code, 0);
  } finally {
    try {
      held.close();
    } catch { /* closed */ }
    try {
      p.kill("SIGKILL");
    } catch { /* exited */ }
    await p.status;
    await Deno.remove(dir, { recursive: true });
  }
});

/** A python3 process holding SQLite's write lock on `file` (BEGIN EXCLUSIVE) until it is killed. */
async function sqliteLocker(file: string): Promise<Deno.ChildProcess> {
  const locker = new Deno.Command("python3", {
    args: [
      "-c",
      "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)",
      file,
    ],
    stdout: "piped",
  }).spawn();
  const out = locker.stdout.pipeThrough(new TextDecoderStream()).getReader();
  assert.equal((await out.read()).value?.trim(), "locked");
  void (async () => {
    while (!(await out.read()).done) { /* drain: closed early, the lock did not hold */ }
  })();
  return locker;
}

Deno.test("a Subject waits for a lock another program holds on a new async_store (a sqlite3 shell), starts once it is let go; held past the wait, start exits 1 naming it and the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-sqlite-lock-" });
  const store = `${dir}/paused.sqlite`;
  try {
    let locker = await sqliteLocker(store);
    // It waits up to handler_timeout + 10 s: 11 s here.
    const args = ["--async-store", store, "--handler-timeout", "1000"];
    let p = spawnStart(`${dir}/rt`, { args });
    try {
      const isReady = ready(p).then((ok) => ({ ok, at: performance.now() }));
      await new Promise((r) => setTimeout(r, 3000));
      const letGo = performance.now();
      locker.kill("SIGKILL");
      await locker.status;
      // Before: start failed at once ("database is locked; move the file away").
      const r = await isReady;
      assert.ok(r.ok, "start did not become ready once the lock was let go");
      assert.ok(r.at >= letGo, "ready while the lock was held");
      p.kill("SIGINT");
      assert.equal((await p.status).code, 0);
      // Held past the wait, on a new file (a store that has its tables opens, and waits for the
      // lock at each write: see final_replay_test).
      const fresh = `${dir}/fresh.sqlite`;
      locker = await sqliteLocker(fresh);
      p = spawnStart(`${dir}/rt2`, {
        args: ["--async-store", fresh, "--handler-timeout", "1000"],
        stderr: "piped",
      });
      const out = await p.output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 1, err);
      assert.doesNotMatch(new TextDecoder().decode(out.stdout), /ready/);
      assert.match(
        err,
        new RegExp(
          `error: async_store ${fresh} stays locked by another program \\(a sqlite3 shell, a backup\\?\\), not a Subject \\(none holds ${fresh}\\.lock\\); let it go, then start again`,
        ),
      );
    } finally {
      for (const c of [p, locker]) {
        try {
          c.kill("SIGKILL");
        } catch { /* exited */ }
        await c.status;
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Subject that cannot write its reload key serves without one: requests are answered, reload is refused, nothing restarts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-nokey-" });
  // The key is written to reload.key.tmp and renamed: onto a directory that holds a file, the
  // rename fails (as writing it does on a full disk: liveness_test's filled tmpfs).
  await Deno.mkdir(`${dir}/reload.key`);
  await Deno.writeTextFile(`${dir}/reload.key/in-the-way`, "");
  const p = spawnStart(dir, { stderr: "piped" });
  let stderr = "";
  const errDone = (async () => {
    for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  try {
    // Before: the Subject exited writing its key, and start with it.
    assert.ok(await ready(p), stderr);
    const [subject] = await rolePids(dir, "subject");
    await using c = await Client.connect({
      subject: `ipc://${dir}/subject`,
      publisher: `ipc://${dir}/im-pub`,
    });
    assert.equal((await c.request("Three", {}, { timeout: 20_000 })).action, "done");
    const r = await runWithin(["reload", "--runtime-dir", dir], 60_000);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /cannot read the reload key \S+reload\.key/);
    assert.deepEqual(await rolePids(dir, "subject"), [subject], "the same Subject");
    assert.match(stderr, /Cannot write the reload key \(.*\): reload is refused until the Subject restarts/);
  } finally {
    p.kill("SIGINT");
    await p.status;
    await errDone;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("send without --wait and no deployment exits 3 within its timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  try {
    const r = await runWithin(["send", "Three", "--runtime-dir", dir, "--timeout", "2000"], 30_000);
    assert.equal(r.killed, false, "send hung");
    assert.equal(r.code, 3);
    assert.match(r.stderr, /did not acknowledge the request within 2000 ms; is the deployment running/);
    // 2 s of timeout, plus Deno's start-up on a busy machine.
    assert.ok(r.elapsed < 2000 + 8000, `took ${r.elapsed} ms`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`tap with no deployment stops on ${signal} with exit 0`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmd" });
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "tap", "--runtime-dir", dir],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const guard = setTimeout(() => p.kill("SIGKILL"), 30_000);
    try {
      const reader = p.stderr.pipeThrough(new TextDecoderStream()).getReader();
      assert.ok(await readUntil(reader, "tap: subscribing"), "tap did not start");
      p.kill(signal);
      const rest = readUntil(reader, "\u0000"); // to the end
      const s = await p.status;
      await rest;
      assert.equal(s.signal, null, `tap was killed by ${s.signal}`);
      assert.equal(s.code, 0);
    } finally {
      clearTimeout(guard);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("restart backoff: 200 ms doubling to 5 s, reset after a healthy minute (injected clock)", () => {
  let now = 0;
  const b = new RestartBackoff({ now: () => now });
  const deaths = (n: number, ranFor: number) =>
    Array.from({ length: n }, () => {
      b.started();
      now += ranFor;
      return b.exited();
    });
  assert.deepEqual(deaths(7, 10), [200, 400, 800, 1600, 3200, 5000, 5000]);
  assert.deepEqual(deaths(1, 59_999), [5000], "not yet a healthy minute");
  assert.deepEqual(deaths(1, 60_000), [200], "a healthy minute resets it");
  assert.deepEqual(deaths(2, 1), [400, 800]);
  const custom = new RestartBackoff({ initial: 10, max: 30, healthyAfter: 5, now: () => now });
  custom.started();
  assert.equal(custom.exited(), 10);
  custom.started();
  assert.equal(custom.exited(), 20);
  custom.started();
  now += 5;
  assert.equal(custom.exited(), 10);
});

Deno.test("an Integration Manager SIGKILL: start restarts it, logs it, and answers requests again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmd" });
  const p = spawnStart(dir, { stderr: "piped" });
  const out = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  const errDone = (async () => {
    for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  try {
    assert.ok(await readUntil(out, "ready\n"));
    await until("the IM's counters", async () => (await rolePids(dir, "integration-manager")).length === 1);
    const killed = await killRole(dir, "integration-manager");
    assert.ok(killed);
    await until("a new IM", async () => {
      const pids = await rolePids(dir, "integration-manager");
      return pids.length === 1 && pids[0] !== killed;
    });
    await using c = await Client.connect({
      subject: `ipc://${dir}/subject`,
      publisher: `ipc://${dir}/im-pub`,
    });
    const pub = await c.request("Three", {}, { timeout: 20_000 });
    assert.equal(pub.action, "done");
    assert.deepEqual(pub.values.trace, ["one", "two", "three"]);
    assert.equal(await Promise.race([p.status.then(() => "exited"), Promise.resolve("running")]), "running");
    assert.match(
      stderr,
      /WRN.*The Integration Manager \(pid \d+\) exited with "SIGKILL"; restarting in 200 ms/,
    );
  } finally {
    try {
      p.kill("SIGINT");
    } catch { /* exited */ }
    const s = await p.status;
    await errDone;
    while (!(await out.read()).done) { /* drain */ }
    await Deno.remove(dir, { recursive: true });
    assert.equal(s.code, 0, stderr);
  }
});

Deno.test("SIGTERM stops start within 20 s although a worker is SIGSTOPped (it is killed)", async () => {
  const dep = await startDeployment({ workers: 2, args: ["--handler-timeout", "1000"] });
  let stopped: number | undefined;
  try {
    await until("two workers", async () => (await rolePids(dep.dir, "worker")).length === 2);
    stopped = (await rolePids(dep.dir, "worker"))[0];
    Deno.kill(stopped, "SIGSTOP");
    const t0 = performance.now();
    dep.process.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      dep.process.status,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), 40_000))),
    ]);
    clearTimeout(timer);
    const elapsed = performance.now() - t0;
    assert.ok(status, "start did not stop within 40 s");
    assert.equal(status.code, 0);
    assert.ok(elapsed < 20_000, `start took ${Math.round(elapsed)} ms to stop`);
    assert.throws(() => Deno.kill(stopped!, "SIGCONT"), "the stopped worker is still alive");
  } finally {
    try {
      if (stopped) Deno.kill(stopped, "SIGKILL");
    } catch { /* killed by start */ }
    try {
      dep.process.kill("SIGKILL");
    } catch { /* exited */ }
    await dep.stop();
  }
});
