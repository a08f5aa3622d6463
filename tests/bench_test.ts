import assert from "node:assert/strict";
import { benchId } from "../bench/generator.ts";
import { httpClosedLoop } from "../bench/http_load.ts";
import { moleculerRun } from "../bench/moleculer.ts";
import { goal } from "../bench/report.ts";
import type { BareRun } from "../bench/bare.ts";
import {
  bareFigures,
  goals,
  latencyFigures,
  type LatencyMeasures,
  type MeasuredRun,
} from "../bench/figures.ts";
import { transportRound } from "../bench/transport.ts";
import { type FloorRun, goalRatios } from "../bench/tools/floor.ts";
import { ACK, FLOOR_PREFIX, REQUEST, RESULT, STATUS } from "../bench/tools/floor_steps.ts";
import { ZmtpConnection } from "../src/zmtp/connection.ts";
import { encodeHeader } from "../src/wire/protocol.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

Deno.test("bench: the generator reads the epoch and index of its request ids from header bytes", () => {
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b3_42", n: 3 })), [3, 42]);
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b12_0" })), [12, 0]);
  assert.deepEqual(benchId(encodeHeader({ v: 1, id: "b7_123456789", pos: 2, n: 1 })), [7, 123456789]);
  for (const id of ["ping", "b3", "b_4", "b3_", "b3_4x", "bx_4", "a3_4"]) {
    assert.equal(benchId(encodeHeader({ v: 1, id })), undefined, id);
  }
  assert.equal(benchId(new Uint8Array(0)), undefined);
});

for (const kind of ["relay", "zmtp-relay"] as const) {
  Deno.test(`bench: a bare-pipeline ${kind} forwards every message in order and exits when stdin closes`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmt" });
    const r = new Reactor();
    // The libzmq relay binds ipc:// endpoints; the ZMTP one listens on the same Unix socket paths.
    const at = (name: string) => (kind === "relay" ? `@ipc://${dir}/${name}` : `@${dir}/${name}`);
    const relay = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../bench/bench_peer.ts", import.meta.url).href,
        kind,
        at("in"),
        at("out"),
        "PUSH",
      ],
      stdin: "piped",
    }).spawn();
    try {
      const push = r.socket("PUSH");
      const pull = r.socket("PULL");
      for (let i = 0; i < 100; i++) {
        // The ZMTP relay's sockets exist once it has started.
        if (kind === "relay" || (await Deno.stat(`${dir}/out`).catch(() => null))) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      await push.connect(`ipc://${dir}/in`);
      await pull.connect(`ipc://${dir}/out`);
      const it = pull.messages();
      // The ZMTP relay drops what comes before its PUSH side has a peer: probe until one passes.
      let through = false;
      for (let i = 0; i < 100 && !through; i++) {
        await push.send([new TextEncoder().encode("probe")]);
        through = (await withTimeout(it.next(), 50)) !== TIMED_OUT;
      }
      assert.ok(through, "nothing came through the relay");
      const n = 2000;
      for (let i = 0; i < n; i++) await push.send([new TextEncoder().encode(`m${i}`)]);
      for (let i = 0; i < n;) {
        const text = new TextDecoder().decode((await it.next()).value![0]);
        if (text === "probe") continue; // a probe that came after the first one through
        assert.equal(text, `m${i++}`);
      }
      await relay.stdin.close();
      const status = await withTimeout(relay.status, 5000);
      assert.notEqual(status, TIMED_OUT, "the relay did not exit within 5 s of stdin closing");
      assert.equal(status !== TIMED_OUT && status.code, 0);
    } finally {
      try {
        relay.kill();
      } catch { /* exited */ }
      await r.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

for (
  const [mode, im, keep] of [
    ["thread", "im", true],
    ["thread-sync", "im", true],
    ["json", "im", true],
    ["relay", "im", true],
    ["relay", "im", false],
    ["thread", "in the Subject", true],
  ] as const
) {
  Deno.test(`bench: the structure's floor (workers "${mode}", the IM ${im}${keep ? "" : ", nothing kept or acknowledged"}) answers every request through its steps, packs a light load on one worker, and exits when stdin closes`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmt" });
    const at = (name: string) => `ipc://${dir}/${name}`;
    const peer = new URL("../bench/tools/floor_peer.ts", import.meta.url).href;
    const stages = [
      [
        "subject",
        `@${at("in")}`,
        `@${at("work")}`,
        im === "im" ? at("im") : `pub:@${at("out")}`,
        keep ? "1" : "0",
      ],
      ["worker", "0", at("work"), at("in"), mode],
      ["worker", "1", at("work"), at("in"), mode],
      ...(im === "im" ? [["im", `@${at("im")}`, `@${at("out")}`, keep ? "1" : "0", at("in")]] : []),
    ];
    // The Subject says what it counted on stdout when it ends.
    const procs = stages.map((args, k) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", peer, ...args],
        stdin: "piped",
        stdout: k === 0 ? "piped" : "null",
      }).spawn()
    );
    const r = new Reactor();
    try {
      const push = r.socket("PUSH");
      const sub = r.socket("SUB");
      await sub.subscribe("");
      await push.connect(at("in"));
      await sub.connect(at("out"));
      const it = sub.messages();
      // Values as a client might write them: spaced, so that a result shows whether they were parsed
      // and stringified (the steps ran) or forwarded as they came.
      const request = (i: number, kind = REQUEST) => {
        const values = new TextEncoder().encode(`{ "i" : ${i}, "payload" : "${"x".repeat(40)}" }`);
        const m = new Uint8Array(FLOOR_PREFIX + values.length);
        new DataView(m.buffer).setFloat64(0, i, true);
        m[8] = kind;
        m.set(values, FLOOR_PREFIX);
        return m;
      };
      const read = async () => {
        const next = await withTimeout(it.next(), 5000);
        assert.notEqual(next, TIMED_OUT, "no result within 5 s");
        const f = (next as IteratorResult<Uint8Array[]>).value![0];
        return {
          i: new DataView(f.buffer, f.byteOffset, 8).getFloat64(0, true),
          kind: f[8],
          worker: f[9],
          values: new TextDecoder().decode(f.subarray(FLOOR_PREFIX)),
        };
      };
      // A PUB drops what it publishes before the SUB has joined: probe (index -1) until one comes.
      let through = false;
      for (let i = 0; i < 100 && !through; i++) {
        await push.send([request(-1)]);
        through = (await withTimeout(it.next(), 50)) !== TIMED_OUT;
      }
      assert.ok(through, "nothing came through the floor");
      // An acknowledgement sent to the Subject as a request would be is dropped, never published.
      await push.send([request(-2, ACK)]);
      const check = (m: Awaited<ReturnType<typeof read>>) => {
        assert.equal(m.kind, RESULT);
        const spaced = `{ "i" : ${m.i}, "payload" : "${"x".repeat(40)}" }`;
        assert.equal(m.values, mode === "relay" ? spaced : JSON.stringify(JSON.parse(spaced)));
      };
      // One at a time, a light load: all to worker 0, as the Subject packs it.
      for (let i = 0; i < 50; i++) {
        await push.send([request(10_000 + i)]);
        let m = await read();
        while (m.i === -1) m = await read(); // a probe that came after the first one through
        assert.equal(m.i, 10_000 + i);
        assert.equal(m.worker, 0, `request ${m.i} one at a time went to worker ${m.worker}`);
        check(m);
      }
      // Worker 0 stopped, 70 requests: it is given the first 64 (fewer than 64 held), worker 1 the
      // other six, which alone come back until worker 0 runs again.
      Deno.kill(procs[1].pid, "SIGSTOP");
      try {
        for (let i = 0; i < 70; i++) await push.send([request(20_000 + i)]);
        const early: number[] = [];
        // Up to 5 s for the first (worker 1's first steps, on a loaded machine), then until 1 s passes.
        for (let next; (next = await withTimeout(it.next(), early.length ? 1000 : 5000)) !== TIMED_OUT;) {
          const f = (next as IteratorResult<Uint8Array[]>).value![0];
          early.push(new DataView(f.buffer, f.byteOffset, 8).getFloat64(0, true));
        }
        assert.deepEqual(early, [20_064, 20_065, 20_066, 20_067, 20_068, 20_069]);
      } finally {
        Deno.kill(procs[1].pid, "SIGCONT");
      }
      for (const late = new Set<number>(); late.size < 64;) {
        const m = await read();
        assert.ok(m.i >= 20_000 && m.i < 20_064 && !late.has(m.i), `result ${m.i} after worker 0 ran again`);
        assert.equal(m.worker, 0);
        late.add(m.i);
        check(m);
      }
      // Both stopped, 140 requests: 64 to worker 0, then to the one holding fewer: 64 to worker 1,
      // then the last twelve in turn, 70 each.
      /** Requests the Subject has passed on so far (its answer to a status request). */
      const passed = async () => {
        await push.send([request(-3, STATUS)]);
        const next = await withTimeout(it.next(), 5000);
        assert.notEqual(next, TIMED_OUT, "no answer to a status request within 5 s");
        const f = (next as IteratorResult<Uint8Array[]>).value![0];
        assert.equal(f[8], STATUS, "nothing but the status answer comes while both workers are stopped");
        return JSON.parse(new TextDecoder().decode(f.subarray(FLOOR_PREFIX))).passed as number;
      };
      Deno.kill(procs[1].pid, "SIGSTOP");
      Deno.kill(procs[2].pid, "SIGSTOP");
      try {
        const before = await passed();
        for (let i = 0; i < 140; i++) await push.send([request(30_000 + i)]);
        // Until the Subject has passed all 140 on (else the split below would be off), or 10 s.
        let now = before;
        for (const end = Date.now() + 10_000; now < before + 140 && Date.now() < end;) now = await passed();
        assert.equal(now, before + 140, "the Subject passed the 140 on while both workers were stopped");
      } finally {
        Deno.kill(procs[1].pid, "SIGCONT");
        Deno.kill(procs[2].pid, "SIGCONT");
      }
      const byWorker = [0, 0];
      for (const both = new Set<number>(); both.size < 140;) {
        const m = await read();
        assert.ok(m.i >= 30_000 && m.i < 30_140 && !both.has(m.i), `result ${m.i} after both ran again`);
        both.add(m.i);
        byWorker[m.worker]++;
        check(m);
      }
      assert.deepEqual(byWorker, [70, 70]);
      const n = 2000;
      for (let i = 0; i < n; i++) await push.send([request(i)]);
      const seen = new Set<number>();
      while (seen.size < n) {
        const m = await read();
        assert.ok(m.i >= 0 && m.i < n && !seen.has(m.i), `result ${m.i}: unexpected or twice`);
        seen.add(m.i);
        check(m);
      }
      assert.equal(await withTimeout(it.next(), 200), TIMED_OUT, "more results than requests");
      for (const p of procs) await p.stdin.close();
      for (const [k, p] of procs.entries()) {
        const status = await withTimeout(p.status, 5000);
        assert.notEqual(status, TIMED_OUT, `${stages[k][0]} did not exit within 5 s of stdin closing`);
        assert.equal(status !== TIMED_OUT && status.code, 0, `${stages[k][0]}'s exit code`);
      }
      // The Subject kept each request until its result (140 at once while both workers were stopped), and
      // heard the IM's acknowledgements.
      const said = JSON.parse(new TextDecoder().decode((await procs[0].output()).stdout));
      assert.equal(said.kept, 0, "requests kept after their results");
      assert.ok(keep ? said.most >= 140 : said.most === 0, `at most ${said.most} kept at once`);
      if (im === "im" && keep) {
        assert.ok(said.acks > 1, `${said.acks} acknowledgements, the test's own among them`);
      } else assert.equal(said.acks, 1, "only the test's own acknowledgement");
    } finally {
      for (const p of procs) {
        try {
          p.kill("SIGKILL");
        } catch { /* exited */ }
        await p.status;
      }
      await r.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("bench: the structure's floor judges each variant against its own round's bare pipeline and Moleculer", () => {
  const run = (name: string, seq: number, peak: number, o10: number[], o55: number[]): FloorRun => ({
    name,
    seqP50: seq,
    seqP99: 2 * seq,
    peak,
    peakCores: 1.8,
    peakRolesUs: 8,
    peakGeneratorUs: 2,
    open: [{ rate: 10_000, p50: o10[0], p99: o10[1], cpuUs: o10[2] }, {
      rate: 55_000,
      p50: o55[0],
      p99: o55[1],
      cpuUs: o55[2],
    }],
  });
  const bare = run("bare4", 0.2, 400_000, [0.4, 2, 140], [0.5, 4, 30]);
  const floor = run("+sandbox", 0.4, 180_000, [0.9, 3, 168], [1.5, 8, 33]);
  const ratios = goalRatios(floor, bare, { peak: 60_000, seqP50: 0.16, seqP99: 0.2 });
  const near = (key: string, want: number) =>
    assert.ok(Math.abs(ratios[key] - want) < 1e-9, `${key}: ${ratios[key]}`);
  near("one at a time p50 ÷ bare", 2);
  near("10k/s p50 ÷ bare", 2.25);
  near("10k/s p99 ÷ bare", 1.5);
  near("55k/s p50 ÷ bare", 3);
  near("55k/s p99 ÷ bare", 2);
  near("CPU at 10k/s ÷ bare", 1.2);
  near("peak ÷ Moleculer", 3);
  near("one at a time p50 ÷ Moleculer", 2.5);
  near("one at a time p99 ÷ Moleculer", 4);
  // 1.8 cores at 180,000/s is 10 µs per message; at 3 × 60,000/s the same, less the generator's 2.
  near("roles' µs per message 3× Moleculer's peak allows", 8);
  near("of which left for the framework's work", 0); // the roles took 8
  assert.equal(
    goalRatios(floor, bare)["peak ÷ Moleculer"],
    undefined,
    "no Moleculer ratios without Moleculer",
  );
});

Deno.test("bench: a goal is met only when its measured ratio is on the right side of its limit", () => {
  assert.equal(goal("x", 3.2, "min", 3).met, true);
  assert.equal(goal("x", 2.9994, "min", 3).met, false);
  assert.equal(goal("x", 1.5, "max", 1.5).met, true);
  assert.equal(goal("x", 1.51, "max", 1.5).met, false);
  // A ratio that could not be measured (the peer failed: NaN) is never met.
  assert.equal(goal("x", Number.NaN, "max", 2).met, false);
  assert.equal(goal("x", Number.POSITIVE_INFINITY, "min", 3).met, false);
  assert.equal(goal("x", 1.23456, "max", 2).value, 1.235);
  // Decided on the ratio as measured, not as printed: just past the limit is not met though it
  // prints as the limit.
  assert.deepEqual([goal("x", 1.5004, "max", 1.5).met, goal("x", 1.5004, "max", 1.5).value], [false, 1.5]);
  assert.deepEqual([goal("x", 2.9996, "min", 3).met, goal("x", 2.9996, "min", 3).value], [false, 3]);
});

Deno.test("bench: the figures are rounded as printed, and the goals are judged on them unrounded", () => {
  // A run and a bare pipeline whose figures are round, but for the one a case changes.
  const run = (over: Partial<LatencyMeasures> = {}, flowsPerSecond = 100_000): MeasuredRun => ({
    flowsPerSecond,
    roles: { subject: { cpu: 0.5, rssMiB: 110 }, "load generator": { cpu: 0.3, rssMiB: 150 } },
    latency: {
      rate: 50_000,
      rtt: [0.1, 0.9, 5],
      busyCores: 1.5,
      monitorCores: null,
      sequential: [0.1, 0.3, 2],
      low: [0.1, 0.6, 3],
      lowRate: 10_000,
      lowBusyCores: 1.2,
      at10k: [0.7],
      at10kCores: 1.445,
      at10kRoleCores: 1.1,
      idleCpu: 0.02,
      idleSwitches: 100,
      ...over,
    },
  });
  const open = (rate: number, rtt: number[], busyCores: number) => ({
    rate,
    rtt,
    busyCores,
    processCores: [],
  });
  const bare = (seq = 0.2, at10kCores = 1.445): BareRun => ({
    sequential: [0.05, seq, 0.4],
    peak: 400_000,
    runs: [
      open(50_000, [0.1, 0.45, 1], 1.5),
      open(10_000, [0.1, 0.4, 1], 1.2),
      open(10_000, [0.4], at10kCores),
    ],
  });
  const verdict = (name: string, r: MeasuredRun, b: BareRun, rawHop: number, exact: boolean) =>
    goals(latencyFigures(r, rawHop, exact), bareFigures(b, exact), null).find((g) => g.name === name)!.met;
  // Each case puts one figure just past its goal's limit by less than the printed rounding: judged on the
  // exact figures it is missed, on the printed ones it would have been met.
  const cases: [string, string, MeasuredRun, BareRun, number][] = [
    [
      "our one-at-a-time p50",
      "one at a time p50 / bare pipeline's",
      run({ sequential: [0.1, 0.30049, 2] }),
      bare(),
      1e6,
    ],
    [
      "the bare pipeline's one-at-a-time p50",
      "one at a time p50 / bare pipeline's",
      run(),
      bare(0.19996),
      1e6,
    ],
    [
      "our p50 at 10% of peak",
      "10% of peak: p50 / bare pipeline's",
      run({ low: [0.1, 0.60049, 3] }),
      bare(),
      1e6,
    ],
    [
      "our p50 at 50% of peak",
      "50% of peak: p50 / bare pipeline's",
      run({ rtt: [0.1, 0.90049, 5] }),
      bare(),
      1e6,
    ],
    [
      "our CPU at 10,000/s",
      "CPU per flow at 10,000/s / bare pipeline's",
      run({ at10kCores: 1.44501 }),
      bare(),
      1e6,
    ],
    [
      "the bare pipeline's CPU",
      "CPU per flow at 10,000/s / bare pipeline's",
      run({ at10kCores: 1.44499 }),
      bare(0.2, 1.444985),
      1e6,
    ],
    ["the peak to the raw hop", "peak flows/s / raw one-hop msgs/s", run({}, 149_996), bare(), 1e6],
  ];
  for (const [what, name, r, b, hop] of cases) {
    assert.equal(verdict(name, r, b, hop, true), false, `${what}: judged on the exact figures`);
    assert.equal(verdict(name, r, b, hop, false), true, `${what}: the printed figures would have met it`);
  }
  // The printed rounding: ms to 1 µs, CPU to 0.01 (µs and cores), flows/s whole, and p50 apart from p99.
  const printed = latencyFigures(
    run({ sequential: [0.1, 0.12345, 2], at10kCores: 1.2345678 }, 100_000.4),
    1e6,
  );
  assert.deepEqual(printed.one_at_a_time, { p50_ms: 0.123, p99_ms: 2 });
  assert.equal(latencyFigures(run({ low: [0.1, 0.61234, 3] }), 1e6).open_loop_10pct_of_peak.p50_ms, 0.612);
  assert.equal(printed.open_loop_10000_per_s.cpu_us_per_flow, 123.46);
  assert.equal(printed.open_loop_10000_per_s.busy_cores, 1.23);
  assert.equal(printed.peak_flows_per_s, 100_000);
  assert.equal(bareFigures(bare(0.12345, 1.2345678)).open_loop_10000_per_s.cpu_us_per_flow, 123.46);
  assert.equal(bareFigures(bare(0.12345)).one_at_a_time.p50_ms, 0.123);
  // Without Moleculer's figures its goals are missed, the bounded-above ones too (never NaN taken for met).
  const noPeer = goals(latencyFigures(run(), 1e6, true), bareFigures(bare(), true), null);
  assert.equal(noPeer.find((g) => g.name === "one at a time p50 / Moleculer's")!.met, false);
});

Deno.test("bench: the Moleculer peer runs the 3-action chain over its TCP transporter and reports its figures", async () => {
  const r = await moleculerRun(0.5, 0.5, [500], 16);
  assert.ok(r.flows_per_s > 0, `peak ${r.flows_per_s}`);
  assert.ok(r.one_at_a_time_p50_ms > 0 && r.one_at_a_time_p99_ms >= r.one_at_a_time_p50_ms);
  assert.equal(r.open.length, 1);
  assert.equal(r.open[0].rate, 500);
  assert.ok(r.open[0].cpu_us_per_flow > 0, "the CPU of the three processes was read");
  assert.equal(r.rss_mib.length, 3);
  assert.ok(r.rss_mib.every((m) => m > 0));
  assert.equal(r.window, 16);
});

Deno.test("bench: the HTTP load generator keeps one request in flight per connection, times every answer, counts non-200 as failed", async () => {
  let served = 0;
  let inFlight = 0;
  let most = 0;
  const big = "x".repeat(40_000); // over the generator's first 16 KiB read buffer
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    inFlight++;
    most = Math.max(most, inFlight);
    const body = await req.text();
    const n = ++served;
    await new Promise((r) => setTimeout(r, 1));
    inFlight--;
    if (body !== '{"n":1}') return new Response("bad body", { status: 400 });
    if (n % 10 === 0) return new Response("nope", { status: 503 });
    return new Response(n % 7 === 0 ? big : '{"ok":true}', {
      headers: { "content-type": "application/json" },
    });
  });
  try {
    const r = await httpClosedLoop({
      hostname: "127.0.0.1",
      port: server.addr.port,
      path: "/v1/flows/Bench3",
      body: '{"n":1}',
      connections: 4,
      seconds: 0.5,
    });
    assert.ok(served > 20, `only ${served} requests`);
    assert.equal(r.times.length, served, "every request served was answered and timed");
    assert.equal(r.failed, Math.floor(served / 10), "the 503s, no more");
    assert.ok(most <= 4, `${most} requests in flight on 4 connections`);
    assert.ok(r.times.every((t, i) => t > 0 && (i === 0 || t >= r.times[i - 1])), "ascending times");
  } finally {
    await server.shutdown();
  }
});

Deno.test("bench: the transport comparison runs both transports' round trips and pushes to the end", async () => {
  const rows = await transportRound(200, 20_000, true);
  assert.deepEqual(rows.map((r) => r.transport), ["zmtp", "libzmq"]);
  for (const r of rows) {
    assert.ok(r.trip_p50_ms > 0 && r.trip_p99_ms >= r.trip_p50_ms, JSON.stringify(r));
    assert.ok(r.push_per_s > 0 && r.trip_cpu_us >= 0 && r.push_cpu_us >= 0, JSON.stringify(r));
  }
});

for (const [type, peerType] of [["PUB", "SUB"], ["PUSH", "PULL"]] as const) {
  Deno.test(`bench: the ZMTP ${type} relay goes on when a ${peerType} peer leaves while it writes to it (its upstream stays open)`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "zmr" });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const connect = async (path: string, socketType: "PUSH" | "SUB" | "PULL") => {
      for (let i = 0; i < 200; i++) {
        try {
          return await ZmtpConnection.open(await Deno.connect({ transport: "unix", path }), { socketType });
        } catch {
          await sleep(25); // not listening yet
        }
      }
      throw new Error(`no relay at ${path}`);
    };
    const relay = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../bench/bench_peer.ts", import.meta.url).href,
        "zmtp-relay",
        `@${dir}/in`,
        `@${dir}/out`,
        type,
      ],
      stdin: "piped",
    }).spawn();
    try {
      const push = await connect(`${dir}/in`, "PUSH");
      const keep = await connect(`${dir}/out`, peerType);
      let kept = 0;
      const keeping = keep.listen(() => kept++).catch(() => {});
      const pushLeft = push.listen(() => {}).catch(() => {});
      let pushing = true;
      const msg = [new Uint8Array(2000).fill(7)];
      const pumping = (async () => {
        while (pushing && !push.closed) {
          for (let i = 0; i < 50; i++) push.send(msg);
          await push.flush().catch(() => {});
          await sleep(0);
        }
      })();
      for (let round = 0; round < 20; round++) {
        // A peer that reads nothing, so that the relay's writes to it pile up, then leaves.
        const leaver = await connect(`${dir}/out`, peerType);
        await sleep(20);
        leaver.close();
        await sleep(20);
        const before = kept;
        await sleep(100);
        assert.ok(!push.closed, `round ${round}: the relay closed its upstream connection`);
        assert.ok(kept > before, `round ${round}: the peer that stayed got nothing after one left`);
      }
      pushing = false;
      await pumping;
      push.close();
      keep.close();
      await Promise.all([keeping, pushLeft]);
    } finally {
      await relay.stdin.close().catch(() => {});
      await relay.status;
      await Deno.remove(dir, { recursive: true });
    }
  });
}
