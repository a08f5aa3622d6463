// `liveness_timeout`: `start` kills a role that stops rewriting its counters (SIGSTOPped, or its
// event loop blocked) so that it is started again. The rule alone (injected clock), the supervisor
// with real child processes, and a deployment whose handler stops its own worker process.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { LivenessClock, processStopped, stopChild, SupervisedProcess } from "../src/cli/supervisor.ts";
import { killRole, rolePids } from "../testing/deployment.ts";
import { CLI, RUNTIME_FIXTURE, spawnStart, startDeployment } from "./helpers.ts";

Deno.test("LivenessClock: stopped at every look for the bound, from the spawn on; silent only once it has written; not judged while the folder cannot be written, nor across a gap in the looks; a step of the wall clock does not count", () => {
  const wall = 1_800_000_000_000;
  const look = (stopped: boolean, mtime?: number, writable = true) => ({ stopped, mtime, writable });
  type L = ReturnType<typeof look>;
  /** Looks every 500 ms from `from` to `to` (both included) finding `l`; the last look's answer. */
  const during = (c: LivenessClock, from: number, to: number, l: L) => {
    let r;
    for (let t = from; t <= to; t += 500) r = c.look(l, t, 3000);
    return r;
  };
  // Stopped before it ever wrote (still loading): overdue once stopped for the bound.
  const a = new LivenessClock();
  assert.equal(during(a, 0, 500, look(false)), undefined);
  assert.equal(during(a, 1000, 4000, look(true)), undefined);
  assert.deepEqual(a.look(look(true), 4500, 3000), { why: "stopped", ms: 3500 });
  // Stopped, then continued: counted again from the next stop.
  const b = new LivenessClock();
  during(b, 0, 1500, look(true));
  during(b, 2000, 2500, look(false));
  assert.equal(during(b, 3000, 6000, look(true)), undefined);
  // Running and never written (loading its modules for long): never overdue.
  const c = new LivenessClock();
  assert.equal(during(c, 0, 60_000, look(false)), undefined);
  // Written, then not rewritten: overdue from the last look that saw it change.
  assert.equal(during(c, 60_500, 61_500, look(false, wall)), undefined);
  assert.equal(during(c, 62_000, 65_000, look(false, wall + 1000)), undefined);
  assert.deepEqual(c.look(look(false, wall + 1000), 65_250, 3000), { why: "silent", ms: 3250 });
  // The wall clock stepped back an hour (the file's times with it): a change is a change.
  const d = new LivenessClock();
  during(d, 0, 2000, look(false, wall));
  assert.equal(during(d, 2500, 5000, look(false, wall - 3_600_000)), undefined);
  // A folder that cannot be written: no file is judged, and the count starts again after.
  const e = new LivenessClock();
  during(e, 0, 500, look(false, wall));
  assert.equal(during(e, 1000, 10_000, look(false, wall, false)), undefined);
  assert.equal(during(e, 10_500, 13_000, look(false, wall)), undefined);
  assert.deepEqual(e.look(look(false, wall), 13_500, 3000), { why: "silent", ms: 3500 });
  // Looks 5 s apart (start itself was stopped with its process group, then continued): nothing
  // is overdue at the first look after; counted from it, for the file and for a stop.
  const g = new LivenessClock();
  during(g, 0, 3000, look(false, wall));
  assert.equal(g.look(look(false, wall), 8000, 3000), undefined);
  assert.equal(during(g, 8500, 11_000, look(false, wall)), undefined);
  assert.deepEqual(g.look(look(false, wall), 11_500, 3000), { why: "silent", ms: 3500 });
  const h = new LivenessClock();
  during(h, 0, 2000, look(true));
  assert.equal(during(h, 7000, 10_000, look(true)), undefined);
  assert.deepEqual(h.look(look(true), 10_500, 3000), { why: "stopped", ms: 3500 });
  // A stopped process is found stopped whatever its file says.
  const f = new LivenessClock();
  during(f, 0, 3000, look(true, wall, false));
  assert.deepEqual(f.look(look(true, wall + 5, false), 3100, 3000), { why: "stopped", ms: 3100 });
});

Deno.test("processStopped: a SIGSTOPped process is, a running or gone one is not", async () => {
  const p = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    assert.equal(processStopped(p.pid), false);
    Deno.kill(p.pid, "SIGSTOP");
    await until("the stop", () => processStopped(p.pid), 2000);
    Deno.kill(p.pid, "SIGCONT");
    await until("the continue", () => !processStopped(p.pid), 2000);
  } finally {
    p.kill("SIGKILL");
    await p.status;
  }
  assert.equal(processStopped(p.pid), false);
});

/** Whether process `pid` exists (its `/proc` entry). */
function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** The pids of a deployment's Subject, Integration Manager and workers. */
async function rolesOf(dir: string): Promise<number[]> {
  return [
    ...await rolePids(dir, "subject"),
    ...await rolePids(dir, "integration-manager"),
    ...await rolePids(dir, "worker"),
  ];
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("SupervisedProcess: a child that wrote once and then not, or is stopped, is killed after the timeout and started again; one that keeps writing, or runs without writing, is left alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-live-" });
  const log = getLogger(["zmanager", "test"]);
  const spawn = (script: string) => () =>
    new Deno.Command("sh", { args: ["-c", script], stdin: "piped", stdout: "null", stderr: "null" }).spawn();
  const file = (pid: number) => `${dir}/c-${pid}`;
  const liveness = { file, timeoutMs: 2000 };
  // `exec sleep` keeps the pid the supervisor knows.
  const silent = new SupervisedProcess(
    "silent",
    spawn(`touch ${dir}/c-$$; exec sleep 60`),
    log,
    { liveness },
  )
    .supervise();
  const stopped = new SupervisedProcess("stopped", spawn("exec sleep 60"), log, { liveness })
    .supervise();
  const writing = new SupervisedProcess(
    "writing",
    spawn(`while :; do touch ${dir}/c-$$; sleep 0.3; done`),
    log,
    { liveness },
  ).supervise();
  const loading = new SupervisedProcess("loading", spawn("exec sleep 60"), log, { liveness })
    .supervise();
  try {
    const firstSilent = silent.child.pid;
    const firstStopped = stopped.child.pid;
    Deno.kill(firstStopped, "SIGSTOP");
    const t0 = performance.now();
    await until("the silent child killed and started again", () => silent.restarts === 1, 10_000);
    await until("the stopped child killed and started again", () => stopped.restarts === 1, 10_000);
    const took = performance.now() - t0;
    assert.equal(silent.silentKills, 1);
    assert.equal(stopped.silentKills, 1);
    assert.notEqual(silent.child.pid, firstSilent);
    assert.notEqual(stopped.child.pid, firstStopped);
    assert.ok(took >= 1900, `killed after ${Math.round(took)} ms, before its 2,000`);
    for (const pid of [firstSilent, firstStopped]) {
      assert.equal(
        alive(pid),
        false,
      );
    }
    // Meanwhile the writing one and the one that never wrote (still "loading") lived on.
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual([writing.restarts, writing.silentKills, loading.restarts], [0, 0, 0]);
  } finally {
    await Promise.all([silent, stopped, writing, loading].map((p) => p.stop(1000)));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stopChild: a child stopped (SIGSTOP) is killed about a second after it is asked to stop, not after its grace period", async () => {
  const p = new Deno.Command("sleep", { args: ["60"], stdin: "piped" }).spawn();
  Deno.kill(p.pid, "SIGSTOP");
  const t0 = performance.now();
  await stopChild(p, 30_000);
  const took = performance.now() - t0;
  assert.ok(took < 5000, `took ${Math.round(took)} ms`);
  assert.equal((await p.status).signal, "SIGKILL");
});

const HALT_FLOWS = "[Halt]\n?Halt?Push\nX?Halt?halt\n??done\n";
// Stops its own worker process (no `run` permission needed to signal oneself) if it is the one
// the test names (the step, given again to the worker `start` runs in its place, ends), or any.
const HALT_HANDLER = `export function halt(values) {
  if (values.victim === "any" || Deno.pid === values.victim) Deno.kill(Deno.pid, "SIGSTOP");
  return { ...values, ranIn: Deno.pid };
}
`;

Deno.test("a handler that SIGSTOPs its own worker: start kills the stopped process after liveness_timeout and starts another; the step runs there; one that stops every worker ends poisoned", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-halt-" });
  await Deno.writeTextFile(`${dir}/flows.ini`, HALT_FLOWS);
  await Deno.writeTextFile(`${dir}/halt.ts`, HALT_HANDLER);
  await Deno.writeTextFile(`${dir}/mapping.ini`, "[actionmapping]\n??halt = ./halt.ts#halt\n");
  let victim: number | undefined;
  try {
    await using d = await startDeployment({
      files: [`${dir}/flows.ini`, `${dir}/mapping.ini`],
      workers: 1,
      args: ["--liveness-timeout", "3000"],
    });
    await using client = await d.connect();
    [victim] = await rolePids(d.dir, "worker");
    assert.ok(victim);
    const t0 = performance.now();
    const p = await client.request("Halt", { victim }, { timeout: 30_000 });
    const took = performance.now() - t0;
    // Before (no liveness check): the only worker stayed stopped and the request timed out.
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.notEqual(p.values.ranIn, victim);
    assert.ok(took < 20_000, `the step ended after ${Math.round(took)} ms`);
    // The stopped process is gone, not left behind.
    await until(
      "the stopped worker to be gone",
      () => !alive(victim!),
    );
    const again = await client.request("Halt", { victim }, { timeout: 10_000 });
    assert.equal(again.action, "done");
    // A step that stops every worker it runs on stops each in turn until it is poisoned (a
    // silent worker's steps count as failed deliveries: max_deliveries, 2), then the worker
    // started in the last one's place serves.
    const poison = await client.request("Halt", { victim: "any" }, { timeout: 40_000 });
    assert.equal(poison.error?.code, "poisoned", JSON.stringify(poison));
    const after = await client.request("Halt", { victim }, { timeout: 20_000 });
    assert.equal(after.action, "done");
  } finally {
    try {
      if (victim) Deno.kill(victim, "SIGKILL");
    } catch { /* killed by start */ }
    await Deno.remove(dir, { recursive: true });
  }
});

/** The pids of `pid`'s children whose command line holds `word` as an argument. */
function childrenRunning(pid: number, word: string): number[] {
  const out: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const kids = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim();
      for (const k of kids ? kids.split(/\s+/).map(Number) : []) {
        try {
          if (Deno.readTextFileSync(`/proc/${k}/cmdline`).split("\0").includes(word)) out.push(k);
        } catch { /* gone */ }
      }
    }
  } catch { /* gone */ }
  return out;
}

Deno.test("a Subject SIGSTOPped before start is ready: start kills it and exits 1 instead of waiting forever", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-live-start-" });
  const p = spawnStart(dir, { args: ["--liveness-timeout", "2000"], stderr: "piped" });
  const out = p.stdout.pipeThrough(new TextDecoderStream());
  const err = p.stderr.pipeThrough(new TextDecoderStream());
  const [printed, logged] = [
    (async () => (await Array.fromAsync(out)).join(""))(),
    (async () => (await Array.fromAsync(err)).join(""))(),
  ];
  let stopped: number | undefined;
  try {
    await until(
      "the Subject's process",
      () => (stopped = childrenRunning(p.pid, "subject")[0]) !== undefined,
      20_000,
    );
    Deno.kill(stopped!, "SIGSTOP");
    const t0 = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      p.status,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 30_000)),
    ]);
    clearTimeout(timer);
    assert.ok(status, "start still waits 30 s after its Subject was stopped");
    assert.equal(status.code, 1);
    assert.ok(performance.now() - t0 < 15_000);
    assert.equal(await printed, "", "it never said ready");
    assert.match(await logged, /The Subject \(pid \d+\) has been stopped \(SIGSTOP\) for \d+ ms; killing it/);
  } finally {
    try {
      p.kill("SIGKILL");
    } catch { /* exited */ }
    await p.status;
    try {
      if (stopped) Deno.kill(stopped, "SIGKILL");
    } catch { /* killed by start */ }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stats folder that cannot be written (replaced by a file) gets no healthy role killed; requests are answered", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--liveness-timeout", "2000"] });
  await using client = await d.connect();
  const pids = await rolesOf(d.dir);
  assert.equal(pids.length, 3);
  await Deno.remove(`${d.dir}/stats`, { recursive: true });
  await Deno.writeTextFile(`${d.dir}/stats`, "not a folder");
  try {
    await new Promise((r) => setTimeout(r, 6000)); // three times the bound
    for (const pid of pids) {
      assert.ok(
        alive(pid),
        `pid ${pid} was killed`,
      );
    }
    assert.equal((await client.request("Three", {}, { timeout: 10_000 })).action, "done");
  } finally {
    await Deno.remove(`${d.dir}/stats`);
  }
});

Deno.test("start and its roles stopped together for longer than the bound (Ctrl-Z, a frozen container), then continued, start first: no role is killed", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--liveness-timeout", "2000"] });
  await using client = await d.connect();
  const roles = await rolesOf(d.dir);
  assert.equal(roles.length, 3);
  for (const pid of [d.process.pid, ...roles]) Deno.kill(pid, "SIGSTOP");
  await new Promise((r) => setTimeout(r, 5000));
  // start first: it looks before any role has rewritten its counters.
  Deno.kill(d.process.pid, "SIGCONT");
  await new Promise((r) => setTimeout(r, 300));
  for (const pid of roles) Deno.kill(pid, "SIGCONT");
  await new Promise((r) => setTimeout(r, 3000));
  for (const pid of roles) {
    assert.ok(alive(pid), `pid ${pid} was killed`);
  }
  assert.equal((await client.request("Three", {}, { timeout: 10_000 })).action, "done");
});

Deno.test({
  name:
    "a full disk under the runtime directory (a tmpfs filled up) gets no healthy role killed; the roles say they cannot write their counters",
  // A private mount namespace needs root (as the netns tests do; CI runs as root).
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "zm-full-" });
    await Deno.mkdir(`${dir}/rt`);
    const start = [Deno.execPath(), "run", "-A", CLI, "start", "--workers", "1", "--liveness-timeout", "3000"]
      .concat(["--runtime-dir", `${dir}/rt`, ...RUNTIME_FIXTURE]).join(" ");
    const script = `set -e
mount --make-rprivate /
mount -t tmpfs -o size=8m,mode=700 tmpfs ${dir}/rt
ZMANAGER_LOG=warning ${start} > ${dir}/out.log 2> ${dir}/err.log &
pid=$!
for i in $(seq 1 300); do grep -q ready ${dir}/out.log && break; sleep 0.1; done
grep -q ready ${dir}/out.log
dd if=/dev/zero of=${dir}/rt/fill bs=4k 2>/dev/null || true
sleep 8
kill -0 $pid
kill -TERM $pid
wait $pid || true
umount -l ${dir}/rt
`;
    try {
      const r = await new Deno.Command("unshare", { args: ["-m", "sh", "-c", script], stderr: "piped" })
        .output();
      const log = await Deno.readTextFile(`${dir}/err.log`).catch(() => "");
      assert.ok(r.success, `${new TextDecoder().decode(r.stderr)}\n${log}`);
      assert.doesNotMatch(log, /killing it to restart it/, log);
      assert.match(log, /Cannot write its counters/, log);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a role SIGKILLed has its counters file removed by start (reload and stats would take it for a live one's)", async () => {
  await using d = await startDeployment({ workers: 1 });
  const old = await killRole(d.dir, "subject");
  assert.ok(old !== undefined);
  await until("a new Subject", async () => (await rolePids(d.dir, "subject")).some((p) => p !== old), 20_000);
  await until("the dead Subject's file removed", async () => {
    try {
      await Deno.stat(`${d.dir}/stats/subject-${old}.json`);
      return false;
    } catch {
      return true;
    }
  }, 5000);
});

Deno.test("SIGINT to start before it is ready stops its roles in order: start exits 0 and no role is left behind", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-early-int-" });
  const p = spawnStart(dir);
  const printed =
    (async () => (await Array.fromAsync(p.stdout.pipeThrough(new TextDecoderStream()))).join(""))();
  let kids: number[] = [];
  try {
    await until("the Subject's process", () => (kids = childrenRunning(p.pid, "subject")).length > 0, 20_000);
    kids = [...kids, ...childrenRunning(p.pid, "integration-manager"), ...childrenRunning(p.pid, "worker")];
    p.kill("SIGINT");
    const status = await p.status;
    // Before: start died of the signal (130) and its Subject drained for 35 s, holding its files.
    assert.equal(status.code, 0);
    assert.equal(await printed, "", "not ready");
    await until("every role gone", () => kids.every((k) => !alive(k)), 10_000);
  } finally {
    try {
      p.kill("SIGKILL");
    } catch { /* exited */ }
    await p.status;
    for (const k of kids) {
      try {
        Deno.kill(k, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a start whose Subject and IM endpoints another deployment serves exits 1 and never says ready (the other's Subject answered its ping)", async () => {
  await using d = await startDeployment({ workers: 1, transport: "tcp" });
  const endpoints: string[] = [];
  for (let i = 0; i < d.flags.length; i++) {
    if (d.flags[i] === "--runtime-dir") i++;
    else endpoints.push(d.flags[i]);
  }
  const dir = await Deno.makeTempDir({ prefix: "zm-taken-" });
  try {
    const p = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        CLI,
        "start",
        "--roles",
        "subject,integration-manager",
        "--runtime-dir",
        `${dir}/rt`,
        ...endpoints,
        ...RUNTIME_FIXTURE,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { ZMANAGER_LOG: "warning" },
    }).spawn();
    // Before: it said ready, then restarted its roles forever; killed here after 30 s.
    const timer = setTimeout(() => p.kill("SIGKILL"), 30_000);
    const r = await p.output();
    clearTimeout(timer);
    const [out, err] = [r.stdout, r.stderr].map((b) => new TextDecoder().decode(b));
    assert.equal(r.code, 1, err);
    assert.doesNotMatch(out, /ready/);
    assert.match(err, /"The (Subject|Integration Manager)" exited with 1 at start-up \(its error is above\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
