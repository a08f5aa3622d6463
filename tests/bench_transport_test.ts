/** bench/transport.ts when its peer process dies (SIGKILL) at various points: the round ends with an error, never hangs (from an outside review). */
import assert from "node:assert/strict";
import { transportRound } from "../bench/transport.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** This test's sockets live here: its peers' command lines name it (other tests run peers too). */
const DIR = await Deno.makeTempDir({ prefix: "ztk" });

/** This process's children whose command line contains `mode` as a whole argument, and DIR. */
function children(mode: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== Deno.pid) continue;
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      if (argv.includes(mode) && argv.some((a) => a.includes(DIR))) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Kills the first child running `mode` once it appears (after `afterMs` more). */
async function killWhenSeen(mode: string, afterMs: number): Promise<number> {
  for (let i = 0; i < 2000; i++) {
    const [pid] = children(mode);
    if (pid) {
      if (afterMs) await sleep(afterMs);
      Deno.kill(pid, "SIGKILL");
      return pid;
    }
    await sleep(1);
  }
  throw new Error(`no ${mode} child`);
}

function cleanup() {
  for (const m of ["zmtp-echo", "echo", "zmtp-push", "push"]) {
    for (const pid of children(m)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}

async function outcome(p: Promise<unknown>, ms: number): Promise<string> {
  const r = await withTimeout(p.then(() => "resolved", (e) => `rejected: ${e?.message ?? e}`), ms);
  return r === TIMED_OUT ? "hung" : r as string;
}

const opts = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };

Deno.test({
  name: "transport: the ZMTP echo peer killed mid-trips ends the round with an error",
  ...opts,
  fn: async () => {
    const round = transportRound(5_000_000, 1000, true, DIR);
    await killWhenSeen("zmtp-echo", 1500);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected: .*ZMTP echo peer is gone/);
  },
});

Deno.test({
  name: "transport: the libzmq echo peer killed mid-trips ends the round with an error",
  ...opts,
  fn: async () => {
    const round = transportRound(5_000_000, 1000, false, DIR);
    await killWhenSeen("echo", 2500);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected: .*libzmq echo peer is gone/);
  },
});

Deno.test({
  name: "transport: the ZMTP echo peer killed before it connects ends the round (no hang)",
  ...opts,
  fn: async () => {
    const round = transportRound(1000, 1000, true, DIR);
    await killWhenSeen("zmtp-echo", 0);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected/);
  },
});

Deno.test({
  name: "transport: the libzmq push peer killed mid-push ends the round (no hang)",
  ...opts,
  fn: async () => {
    const round = transportRound(200, 100_000_000, false, DIR);
    await killWhenSeen("push", 1500);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected/);
  },
});

Deno.test({
  name: "transport: the ZMTP push peer killed mid-push ends the round (no hang)",
  ...opts,
  fn: async () => {
    const round = transportRound(200, 100_000_000, true, DIR);
    await killWhenSeen("zmtp-push", 1500);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected/);
  },
});

Deno.test({
  name: "transport: the libzmq echo peer killed before it connects ends the round (no hang)",
  ...opts,
  fn: async () => {
    const round = transportRound(1000, 1000, false, DIR);
    await killWhenSeen("echo", 0);
    const how = await outcome(round, 10_000);
    cleanup();
    assert.match(how, /rejected/);
  },
});

Deno.test("transport: clean up", () => Deno.removeSync(DIR, { recursive: true }));
