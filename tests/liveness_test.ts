// `liveness_timeout`: `start` kills a role that stops rewriting its counters (SIGSTOPped, or its
// event loop blocked) so that it is started again. The rule alone (injected clock), the supervisor
// with real child processes, and a deployment whose handler stops its own worker process.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { LivenessClock, SupervisedProcess } from "../src/cli/supervisor.ts";
import { rolePids } from "../testing/deployment.ts";
import { startDeployment } from "./helpers.ts";

Deno.test("LivenessClock: counts from the spawn until a file is seen, then from the last look that saw it change; a step of the wall clock does not count", () => {
  const c = new LivenessClock(1000); // spawned at 1 s (monotonic)
  assert.equal(c.look(undefined, 3999, 3000), 0, "no file yet, within 3 s of the spawn");
  assert.equal(c.look(undefined, 4500, 3000), 500, "no file 3.5 s after the spawn");
  const d = new LivenessClock(1000);
  const wall = 1_800_000_000_000;
  assert.equal(d.look(wall, 2000, 3000), 0);
  assert.equal(d.look(wall + 1000, 3000, 3000), 0, "rewritten");
  assert.equal(d.look(wall + 1000, 5999, 3000), 0, "not rewritten, within 3 s of the last change seen");
  assert.equal(d.look(wall + 1000, 6250, 3000), 250);
  // The wall clock stepped back an hour (the file's times with it): a change is a change.
  assert.equal(d.look(wall - 3_600_000, 6500, 3000), 0);
  // A file the same age for 3 s of the monotonic clock is overdue, whatever the wall clock says.
  const e = new LivenessClock(0);
  assert.equal(e.look(wall + 3_600_000, 100, 3000), 0);
  assert.equal(e.look(wall + 3_600_000, 3200, 3000), 100);
});

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("SupervisedProcess: a child that never writes its file is killed after the timeout and started again; one that keeps writing is left alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zm-live-" });
  const log = getLogger(["zmanager", "test"]);
  const spawn = (script: string) => () =>
    new Deno.Command("sh", { args: ["-c", script], stdin: "piped", stdout: "null", stderr: "null" }).spawn();
  const file = (pid: number) => `${dir}/c-${pid}`;
  // `exec sleep` keeps the pid the supervisor knows.
  const silent = new SupervisedProcess("silent", spawn("exec sleep 60"), log, undefined, {
    file,
    timeoutMs: 2000,
  })
    .supervise();
  const writing = new SupervisedProcess(
    "writing",
    spawn(`while :; do touch ${dir}/c-$$; sleep 0.3; done`),
    log,
    undefined,
    { file, timeoutMs: 2000 },
  ).supervise();
  try {
    const first = silent.child.pid;
    const t0 = performance.now();
    await until("the silent child killed and started again", () => silent.restarts === 1, 10_000);
    const took = performance.now() - t0;
    assert.equal(silent.silentKills, 1);
    assert.notEqual(silent.child.pid, first);
    assert.ok(took >= 1900, `killed after ${Math.round(took)} ms, before its 2,000`);
    assert.equal(
      (await new Deno.Command("kill", { args: ["-0", String(first)], stderr: "null" }).output()).success,
      false,
    );
    // Meanwhile the writing one lived on, untouched.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(writing.restarts, 0);
    assert.equal(writing.silentKills, 0);
  } finally {
    await silent.stop(1000);
    await writing.stop(1000);
    await Deno.remove(dir, { recursive: true });
  }
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
      async () =>
        !(await new Deno.Command("kill", { args: ["-0", String(victim)], stderr: "null" }).output()).success,
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
