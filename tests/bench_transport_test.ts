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

// [which peer, killed when, the round's arguments (trips, one-way messages, ZMTP first), the error it must end with]
const cases: [string, string, number, [number, number, boolean], RegExp][] = [
  ["the ZMTP echo peer", "mid-trips", 1500, [5_000_000, 1000, true], /ZMTP echo peer is gone/],
  ["the libzmq echo peer", "mid-trips", 2500, [5_000_000, 1000, false], /libzmq echo peer is gone/],
  ["the ZMTP echo peer", "before it connects", 0, [1000, 1000, true], /ZMTP peer exited before it connected/],
  ["the libzmq echo peer", "before it connects", 0, [1000, 1000, false], /libzmq echo peer is gone/],
  ["the libzmq push peer", "mid-push", 1500, [200, 100_000_000, false], /libzmq pusher died after/],
  ["the ZMTP push peer", "mid-push", 1500, [200, 100_000_000, true], /ZMTP pusher left after/],
];
const MODES: Record<string, string> = {
  "the ZMTP echo peer": "zmtp-echo",
  "the libzmq echo peer": "echo",
  "the libzmq push peer": "push",
  "the ZMTP push peer": "zmtp-push",
};

for (const [peer, when, afterMs, [trips, messages, zmtpFirst], error] of cases) {
  Deno.test({
    name: `transport: ${peer} killed ${when} ends the round with an error, not a hang`,
    // The killed peer's pipes and sockets are the round's to close; they may outlive the test.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const round = transportRound(trips, messages, zmtpFirst, DIR);
      await killWhenSeen(MODES[peer], afterMs);
      const how = await outcome(round, 10_000);
      cleanup();
      assert.match(how, /^rejected: /);
      assert.match(how, error);
    },
  });
}

Deno.test("transport: clean up", () => Deno.removeSync(DIR, { recursive: true }));
