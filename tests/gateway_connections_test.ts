// The HTTP gateway's connection limits: what it admits (src/gateway/connections.ts), and real
// gateway processes under connections that never finish their headers, bodies that never finish,
// and idle keep-alive connections. Under `Deno.serve` the first attack ended the gateway.
import assert from "node:assert/strict";
import {
  connectionCap,
  ConnectionGuard,
  FOLLOW_UP_TRIMS,
  RESERVED_FILES,
  softFileLimit,
  TRIM_AFTER,
  TrimPolicy,
} from "../src/gateway/connections.ts";
import { connectionLimitsAvailable } from "../src/gateway/http_server.ts";
import { collectGarbage } from "../src/roles/_gc.ts";
import { Gateway } from "../src/gateway/gateway.ts";
import { freePort } from "../testing/deployment.ts";
import { startDeployment } from "./helpers.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const GUARDED_SERVER = new URL("./testdata/guarded_server.ts", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("connections: a cap in all and per address; refusals counted by why; release gives the place back", () => {
  const g = new ConnectionGuard(3, 2);
  assert.equal(g.admit("a"), "ok");
  assert.equal(g.admit("a"), "ok");
  assert.equal(g.admit("a"), "address");
  assert.equal(g.admit("b"), "ok");
  assert.equal(g.admit("c"), "full");
  assert.deepEqual([g.counters.open, g.counters.refusedAddress, g.counters.refusedFull], [3, 1, 1]);
  g.release("a");
  assert.equal(g.admit("a"), "ok", "the address's place given back");
  g.release("b");
  assert.equal(g.admit("a"), "address", "still two from it");
  assert.equal(g.admit("c"), "ok");
  g.release("nobody"); // never admitted: changes nothing
  assert.equal(g.counters.open, 3);
  const unlimited = new ConnectionGuard(2, 0);
  assert.equal(unlimited.admit("a"), "ok");
  assert.equal(unlimited.admit("a"), "ok");
  assert.equal(unlimited.admit("a"), "full");
});

Deno.test("connections: the cap fits the open-file limit, with room kept for libzmq's sockets", () => {
  assert.equal(
    softFileLimit("Max open files            1024                 4096                 files     \n"),
    1024,
  );
  assert.equal(
    softFileLimit("Max open files            unlimited            unlimited            files\n"),
    undefined,
  );
  assert.equal(softFileLimit("nothing here"), undefined);
  assert.deepEqual(connectionCap(10_000, undefined), { cap: 10_000, clamped: false });
  assert.deepEqual(connectionCap(10_000, 1_048_576), { cap: 10_000, clamped: false });
  assert.deepEqual(connectionCap(10_000, 1200), { cap: 1200 - RESERVED_FILES, clamped: true });
  assert.deepEqual(connectionCap(10_000, 100), { cap: 1, clamped: true });
});

Deno.test("connections: memory is trimmed after 1,000 closes or answers, once quiet for a second; every 10 s while connections keep closing, never while requests keep coming", () => {
  const p = new TrimPolicy(0);
  for (let i = 1; i < TRIM_AFTER; i++) assert.equal(p.closed(i), false);
  assert.equal(p.due(5000), false, "fewer than 1,000: no trim however quiet");
  assert.equal(p.closed(5000), true);
  assert.equal(p.due(5500), false, "a close 0.5 s ago");
  assert.equal(p.due(6000), "quiet", "quiet for a second");
  p.trimmed(6000);
  assert.equal(p.wanted, false);
  // A flood that never pauses: every 10 s after the last trim.
  let t = 6000;
  for (let i = 0; i < TRIM_AFTER; i++) p.closed(t += 1);
  for (; t < 15_990; t += 10) {
    p.closed(t);
    assert.equal(p.due(t), false, `at ${t}`);
  }
  p.closed(16_000);
  assert.equal(p.due(16_000), "flood", "10 s after the last trim, closes still coming");
  p.trimmed(16_000);
  // Requests that never pause: no trim while they come, one once they stop.
  for (t = 16_000; t < 60_000; t += 1) {
    p.answered(t);
    if (p.due(t)) assert.fail(`trimmed at ${t} while requests came`);
  }
  const last = t - 1;
  assert.equal(p.due(last + 999), false);
  assert.equal(p.due(last + 1000), "quiet", "a second after the last answer");
});

Deno.test("connections: after a trim come follow-up trims, every 5 s for a minute, each once quiet for a second; a new wave starts them again", () => {
  const p = new TrimPolicy(0);
  for (let i = 1; i <= TRIM_AFTER; i++) p.answered(i);
  assert.equal(p.due(2000), "quiet");
  p.trimmed(2000);
  assert.equal(p.wanted, false);
  assert.equal(p.pending, true, "follow-ups to come");
  assert.equal(FOLLOW_UP_TRIMS.length, 12);
  assert.equal(p.due(6999), false);
  assert.equal(p.due(7000), "quiet", "5 s after the trim");
  p.trimmed(7000);
  // An answer 0.5 s before the next follow-up puts it off until a second after the answer.
  p.answered(11_500);
  assert.equal(p.due(12_000), false, "an answer 0.5 s ago");
  assert.equal(p.due(12_500), "quiet", "quiet for a second, past 10 s");
  p.trimmed(12_500);
  assert.equal(p.due(16_999), false);
  assert.equal(p.due(17_000), "quiet");
  p.trimmed(17_000);
  // Requests every 0.5 s from 20 to 33 s: the follow-ups of 22, 27 and 32 s wait, then one trim
  // takes them all.
  for (let t = 20_000; t <= 33_000; t += 500) {
    p.answered(t);
    assert.equal(p.due(t), false, `at ${t}`);
  }
  assert.equal(p.due(34_000), "quiet");
  p.trimmed(34_000);
  assert.equal(p.due(34_500), false, "the overdue follow-ups went with that trim");
  assert.equal(p.due(37_000), "quiet", "the next one, 37 s");
  p.trimmed(37_000);
  // A new wave before the last follow-up: its own trim, and follow-ups from that trim.
  for (let i = 0; i < TRIM_AFTER; i++) p.answered(40_000 + i);
  assert.equal(p.due(41_500), false, "an answer 0.5 s ago");
  assert.equal(p.due(42_000), "quiet");
  p.trimmed(42_000);
  assert.equal(p.due(46_999), false, "the old follow-ups (at 42, 47 ... 62 s) are replaced");
  for (let t = 47_000; t <= 102_000; t += 5000) {
    assert.equal(p.due(t), "quiet", `follow-up at ${t}`);
    p.trimmed(t);
  }
  assert.equal(p.pending, false, "twelve follow-ups, then nothing");
  assert.equal(p.due(1e9), false);
});

Deno.test("connections: a trim in a quiet second in the middle of a wave: what the rest of the wave leaves (fewer than 1,000 closes) is trimmed by a follow-up once quiet", () => {
  const p = new TrimPolicy(0);
  for (let i = 1; i <= 1500; i++) p.closed(i); // a wave's first 1,500 closes, then a pause
  assert.equal(p.due(2500), "quiet");
  p.trimmed(2500);
  for (let t = 3000; t < 3500; t++) p.closed(t); // the rest of the wave: 500 closes
  assert.equal(p.wanted, false, "fewer than 1,000 since the trim");
  assert.equal(p.due(4500), false, "no follow-up due yet");
  assert.equal(p.due(7500), "quiet", "the follow-up 5 s after the trim, a second into the quiet");
});

Deno.test("a role has V8's collector without --expose-gc (taken at run time for the trims)", async () => {
  assert.equal((globalThis as { gc?: unknown }).gc, undefined, "this test runs without the flag");
  assert.equal(await collectGarbage(), true);
});

Deno.test("connections: this Deno can apply the limits (Deno.serveHttp is there)", () => {
  // The pinned Deno has it; on one without it the gateway falls back to Deno.serve, unguarded.
  assert.ok(connectionLimitsAvailable());
});

/**
 * Opens `n` connections that each send half a request header; returns them, and for each whether
 * the gateway closed it within 500 ms of its own opening (the watch starts as each one opens, so
 * a slow machine opening them all does not age the first ones past a header timeout).
 */
async function halfHeaders(
  port: number,
  n: number,
): Promise<{ conns: Deno.TcpConn[]; closedAtOnce: Promise<boolean[]>; openMs: number }> {
  const conns: Deno.TcpConn[] = [];
  const watches: Promise<boolean>[] = [];
  const part = enc.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n");
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    // Refused: the gateway is gone (the caller's checks say so).
    const c = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => undefined);
    if (!c) continue;
    conns.push(c);
    await c.write(part).catch(() => {}); // closed at accept: the write may fail
    watches.push(closedWithin(c, 500));
  }
  return { conns, closedAtOnce: Promise.all(watches), openMs: performance.now() - t0 };
}

/** Whether `c` is closed by its peer within `ms` (a read that ends or fails). */
async function closedWithin(c: Deno.Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  const read = c.read(new Uint8Array(64)).then((n) => n === null, () => true);
  const closed = await Promise.race([read, late]);
  clearTimeout(timer);
  return closed;
}

/** POST from another loopback address (127.0.0.2), through Python's sockets; the status line. */
async function postFrom(source: string, port: number, path: string): Promise<string> {
  const script = `
import socket, sys
s = socket.socket()
s.settimeout(10)
s.bind((sys.argv[1], 0))
s.connect(("127.0.0.1", int(sys.argv[2])))
s.sendall(b"POST " + sys.argv[3].encode() + b" HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\n{}")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split(b"\\r\\n")[0].decode())
`;
  const out = await new Deno.Command("python3", { args: ["-c", script, source, String(port), path] })
    .output();
  return dec.decode(out.stdout).trim() || dec.decode(out.stderr).trim();
}

/**
 * A gateway process on a free port for the deployment `flags` point at, with a `files` limit
 * (1,200) and `more` flags; resolves once it listens; disposing of it stops it.
 */
async function limitedGateway(flags: readonly string[], more: string[], files = 1200) {
  const port = freePort();
  const p = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n ${files} && exec "$0" "$@"`,
      Deno.execPath(),
      "run",
      "-A",
      CLI,
      "gateway",
      "--listen",
      `127.0.0.1:${port}`,
      ...flags,
      ...more,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { ZMANAGER_LOG: "warning" },
  }).spawn();
  let stderr = "";
  void (async () => {
    for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("listening on")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the gateway ended before it listened: ${stderr}`);
    out += value;
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  let exited: Deno.CommandStatus | undefined;
  void p.status.then((s) => exited = s);
  return {
    port,
    /** (`sh` execs the gateway: the same process.) */
    pid: p.pid,
    stderr: () => stderr,
    exited: () => exited,
    async [Symbol.asyncDispose]() {
      if (!exited) p.kill("SIGTERM");
      await p.status;
    },
  };
}

/** The gateway's `/metrics` lines about connections. */
async function connectionMetrics(port: number): Promise<Record<string, number>> {
  let text = "";
  // Right after an attack from this address closed, the gateway may not have counted every close.
  for (let i = 0; !text; i++) {
    try {
      text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    } catch (e) {
      if (i >= 40) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const out: Record<string, number> = {};
  for (
    const m of text.matchAll(/^zmanager_gateway_connections(?:_closed_total\{reason="(\w+)"\})? (\d+)$/gm)
  ) {
    out[m[1] ?? "open"] = Number(m[2]);
  }
  return out;
}

Deno.test("gateway: WebSockets count against the connection cap until they close (past the idle timeout too): 1,200 of them leave the descriptors kept for libzmq, and it accepts again once they go", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using gw = await limitedGateway(d.flags, [
    "--http-max-streams",
    "5000",
    "--http-idle-timeout",
    "300",
  ]);
  const port = gw.port;
  const sockets: WebSocket[] = [];
  const wave = (n: number) =>
    Promise.all(Array.from({ length: n }, () =>
      new Promise<boolean>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws`);
        sockets.push(ws);
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
        ws.onclose = () => resolve(false);
      }))).then((opened) => opened.filter(Boolean).length);
  try {
    const first = await wave(900);
    // Past the idle timeout, an open WebSocket still holds its place: a second wave finds none.
    await new Promise((r) => setTimeout(r, 1000));
    const second = await wave(300);
    assert.ok(first > 600 && first + second <= 688, `${first} + ${second} WebSockets open`);
    const files = [...Deno.readDirSync(`/proc/${gw.pid}/fd`)].length;
    assert.ok(files <= 1200 - 400, `${files} descriptors in use`);
    for (const ws of sockets) ws.close();
    let status = "";
    for (let i = 0; i < 50 && status !== "HTTP/1.1 200 OK"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await postFrom("127.0.0.1", port, "/v1/flows/Three");
    }
    assert.equal(status, "HTTP/1.1 200 OK");
    const m = await connectionMetrics(port);
    assert.equal(m.accept_error, 0, JSON.stringify(m));
    assert.equal(gw.exited(), undefined, `the gateway ended: ${gw.stderr()}`);
  } finally {
    for (const ws of sockets) ws.close();
  }
});

Deno.test("the HTTP server out of file descriptors (its cap set past its limit) warns and keeps accepting; it serves again once connections go", async () => {
  // 150 files, a cap of 10,000: accepts fail with "Too many open files" (Deno.serve exits then).
  const p = new Deno.Command("sh", {
    args: ["-c", 'ulimit -n 150 && exec "$0" "$@"', Deno.execPath(), "run", "-A", GUARDED_SERVER, "10000"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const until = async (what: RegExp) => {
    while (!what.test(out)) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`the server ended: ${out}`);
      out += value;
    }
  };
  let attack: Deno.TcpConn[] = [];
  try {
    await until(/listening (\d+)/);
    const port = Number(/listening (\d+)/.exec(out)![1]);
    attack = (await halfHeaders(port, 300)).conns;
    await until(/warn the HTTP server cannot accept a connection \(.*[Tt]oo many open files/);
    for (const c of attack) c.close();
    attack = [];
    let answered = "";
    for (let i = 0; i < 50 && answered !== "ok"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      answered = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text(), () => "");
    }
    assert.equal(answered, "ok");
  } finally {
    for (const c of attack) c.close();
    try {
      p.kill("SIGKILL");
    } catch { /* it ended: the checks above say why */ }
    await p.status;
    await lines.cancel().catch(() => {});
  }
});

Deno.test("the HTTP server goes on at once past connections its clients reset before it accepted them (it waited 50 ms for each: 40 a second held every client back)", async () => {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", GUARDED_SERVER, "10000"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/listening (\d+)/.test(out)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`the server ended: ${out}`);
    out += value;
  }
  const port = Number(/listening (\d+)/.exec(out)![1]);
  // 3 s of connections reset right after their handshake (SO_LINGER 0), as fast as one process goes.
  const flood = new Deno.Command("python3", {
    args: [
      "-c",
      `
import socket, struct, sys, time
stop = time.time() + 3
n = 0
while time.time() < stop:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        pass
    s.close()
    n += 1
print(n)
`,
      String(port),
    ],
    stdout: "piped",
  }).output();
  try {
    // Meanwhile, a client on a new connection every 50 ms: each answered, and at once.
    const took: number[] = [];
    const until = performance.now() + 2500;
    while (performance.now() < until) {
      const t = performance.now();
      const answer = await fetch(`http://127.0.0.1:${port}/`, {
        headers: { Connection: "close" },
        signal: AbortSignal.timeout(5000),
      }).then((r) => r.text());
      assert.equal(answer, "ok");
      took.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 50));
    }
    const resets = Number(new TextDecoder().decode((await flood).stdout).trim());
    took.sort((a, b) => a - b);
    const counters = await (await fetch(`http://127.0.0.1:${port}/counters`)).json();
    const median = took[Math.floor(took.length / 2)];
    console.log(
      `${resets} reset connections; ${took.length} requests, p50 ${median.toFixed(1)} ms, max ${
        took.at(-1)!.toFixed(1)
      } ms; ${JSON.stringify(counters)}`,
    );
    assert.ok(counters.resetBeforeAccept > 100, JSON.stringify(counters));
    assert.equal(counters.acceptErrors, 0);
    assert.ok(median < 100, `p50 ${median} ms`);
  } finally {
    p.kill("SIGKILL");
    await p.status;
    await lines.cancel().catch(() => {});
  }
});

Deno.test("gateway: 3,000 connections that never finish their headers (2.5 times its open-file limit) do not end it; past its cap they are closed at accept, the rest after http_header_timeout, and it serves again", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using gw = await limitedGateway(d.flags, ["--http-header-timeout", "6000"]);
  const port = gw.port;
  let attack: Deno.TcpConn[] = [];
  try {
    // 1,200 files − 512 kept.
    assert.match(gw.stderr(), /holds 688 HTTP connections, not 10000/);
    const opened = await halfHeaders(port, 3000);
    attack = opened.conns;
    // Every connection is watched for 500 ms from its own opening; none reaches the 6 s header
    // timeout in that time while the attack opens within 5 s (1.2–1.7 s seen, 2 cores busy).
    assert.ok(opened.openMs < 5000, `opening the attack took ${Math.round(opened.openMs)} ms`);
    const closedAtOnce = await opened.closedAtOnce;
    const held = closedAtOnce.filter((closed) => !closed).length;
    assert.equal(gw.exited(), undefined, `the gateway ended: ${gw.stderr()}`);
    assert.ok(held > 0 && held <= 688, `${held} held`);
    // Past the header timeout, every held connection is closed by the gateway.
    const heldConns = attack.filter((_, i) => !closedAtOnce[i]);
    const closedLater = await Promise.all(heldConns.map((c) => closedWithin(c, 8000)));
    assert.equal(closedLater.filter((c) => !c).length, 0, "connections still held after the header timeout");
    assert.equal(await postFrom("127.0.0.1", port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
    const m = await connectionMetrics(port);
    assert.ok(m.full >= 3000 - 688, JSON.stringify(m));
    assert.ok(m.header_timeout >= held, JSON.stringify(m));
    assert.equal(m.accept_error, 0, JSON.stringify(m));
    assert.equal(gw.exited(), undefined, `the gateway ended: ${gw.stderr()}`);
  } finally {
    for (const c of attack) c.close();
  }
});

/** Resident memory of process `pid`, MiB. */
function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]) / 1024;
}

/**
 * Checks that the load took memory (over 60 MiB past `before` at its `peak`) and that process `pid`
 * gives it back: under 40 MiB past `before` within 50 s (V8 gives its own heap back within about
 * 25 s, its memory reducer; glibc's comes back only through the gateway's trims).
 */
async function memoryBack(pid: number, before: number, peak: number): Promise<void> {
  let after = rssMiB(pid);
  // Within 15 s: the trim comes a second into the quiet, after a full collection (without that
  // collection, V8 let go only 20-30 s later).
  for (let i = 0; i < 150 && after > before + 40; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = rssMiB(pid);
  }
  console.log(
    `gateway RSS: ${before.toFixed(0)} MiB before, ${peak.toFixed(0)} at most, ${after.toFixed(0)} after`,
  );
  assert.ok(peak > before + 60, `the load should take memory: ${before} -> ${peak} MiB`);
  assert.ok(after <= before + 40, `${after.toFixed(0)} MiB after, ${before.toFixed(0)} before`);
}

Deno.test("gateway: the memory of 8,000 connections that never finished their headers goes back to the system once they are closed", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using gw = await limitedGateway(d.flags, ["--http-header-timeout", "1000"], 3000);
  assert.equal(await postFrom("127.0.0.1", gw.port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
  const before = rssMiB(gw.pid);
  let peak = before;
  // Four waves of 2,000, each held until the header timeout closes it.
  for (let wave = 0; wave < 4; wave++) {
    const opened = await halfHeaders(gw.port, 2000);
    await Promise.all(opened.conns.map((c) => closedWithin(c, 5000)));
    peak = Math.max(peak, rssMiB(gw.pid));
    for (const c of opened.conns) c.close();
  }
  // glibc's free memory is handed back once closes stop for a second (without that, 141 MiB here
  // against 77).
  await memoryBack(gw.pid, before, peak);
  assert.equal(await postFrom("127.0.0.1", gw.port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
});

Deno.test("gateway: the memory of 5,000 requests of 50 KB goes back to the system once they stop", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using gw = await limitedGateway(d.flags, [], 3000);
  assert.equal(await postFrom("127.0.0.1", gw.port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
  const before = rssMiB(gw.pid);
  const body = JSON.stringify({ blob: "x".repeat(50_000) });
  let ok = 0, peak = before;
  await Promise.all(Array.from({ length: 32 }, async (_, k) => {
    for (let i = 0; i < 5000 / 32; i++) {
      const r = await fetch(`http://127.0.0.1:${gw.port}/v1/flows/Three`, { method: "POST", body });
      if (r.status === 200) ok++;
      await r.body?.cancel();
      if (k === 0 && i % 20 === 0) peak = Math.max(peak, rssMiB(gw.pid));
    }
  }));
  assert.ok(ok >= 4990, `${ok} answered`);
  // glibc's free memory is handed back once answers stop for a second (without that, 125 MiB here
  // against 96).
  await memoryBack(gw.pid, before, peak);
});

Deno.test("gateway: with http_max_connections_per_ip, one address holding its share of half-headers does not keep another address out", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using gw = await limitedGateway(d.flags, ["--http-max-connections-per-ip", "200"]);
  const port = gw.port;
  let attack: Deno.TcpConn[] = [];
  try {
    const opened = await halfHeaders(port, 1000);
    attack = opened.conns;
    const held = (await opened.closedAtOnce).filter((closed) => !closed);
    assert.equal(held.length, 200);
    // The attack still holds its 200 (the header timeout is 10 s): another address is served.
    assert.equal(await postFrom("127.0.0.2", port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
    assert.equal(gw.exited(), undefined, `the gateway ended: ${gw.stderr()}`);
    for (const c of attack) c.close();
    attack = [];
    const m = await connectionMetrics(port);
    assert.ok(m.per_ip >= 800, JSON.stringify(m));
  } finally {
    for (const c of attack) c.close();
  }
});

/** Reads from `c` until it closes or `ms` pass; what arrived, and whether it closed. */
async function readAll(c: Deno.Conn, ms: number): Promise<{ text: string; closed: boolean }> {
  const buf = new Uint8Array(65536);
  let text = "";
  const until = performance.now() + ms;
  for (;;) {
    const left = until - performance.now();
    if (left <= 0) return { text, closed: false };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), left));
    const n = await Promise.race([c.read(buf).catch(() => null), late]);
    clearTimeout(timer);
    if (n === "late") return { text, closed: false };
    if (n === null) return { text, closed: true };
    text += dec.decode(buf.subarray(0, n));
  }
}

Deno.test("gateway: a body that does not arrive in http_body_timeout is answered 408 and its connection closed; an idle kept-alive connection is closed after http_idle_timeout, an event stream is not", async () => {
  await using d = await startDeployment({ workers: 1 });
  const g = await Gateway.start({
    subject: d.subject,
    publisher: d.publisher,
    flows: new Map(),
    port: 0,
    bodyTimeout: 500,
    idleTimeout: 800,
    heartbeat: 300,
  });
  const port = Number(new URL(g.url).port);
  try {
    // Headers promise 10 bytes; two come.
    const slow = await Deno.connect({ hostname: "127.0.0.1", port });
    await slow.write(enc.encode("POST /v1/flows/Three HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"));
    const t0 = performance.now();
    const answer = await readAll(slow, 5000);
    const took = performance.now() - t0;
    slow.close();
    assert.match(answer.text, /^HTTP\/1\.1 408 /);
    assert.match(answer.text, /"request_timeout"/);
    assert.ok(answer.closed, "the connection closed after the 408");
    assert.ok(took >= 450 && took < 3000, `answered after ${took} ms`);
    assert.equal(g.stats().connections?.bodyTimedOut, 1);

    // Kept alive after an answer, then idle: closed after about 800 ms.
    const idle = await Deno.connect({ hostname: "127.0.0.1", port });
    await idle.write(enc.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const t1 = performance.now();
    const kept = await readAll(idle, 5000);
    const idleFor = performance.now() - t1;
    idle.close();
    assert.match(kept.text, /^HTTP\/1\.1 200 /);
    assert.ok(kept.closed && idleFor >= 700, `closed after ${idleFor} ms`);

    // An event stream open three times as long as the idle timeout keeps flowing.
    const sse = await fetch(`${g.url}/v1/events?prefix=Three~`);
    const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
    let got = "";
    const until = performance.now() + 2400;
    while (performance.now() < until) got += (await reader.read()).value ?? "";
    await reader.cancel();
    assert.ok((got.match(/heartbeat/g) ?? []).length >= 5, got);
    assert.equal(g.stats().connections?.timedOut, 1, "only the idle connection timed out");
  } finally {
    await g.close();
  }
});

Deno.test("gateway: an event stream whose client left is ended at once; one whose client sent bytes behind it and left, within two heartbeats", async () => {
  await using d = await startDeployment({ workers: 1 });
  const start = (heartbeat: number) =>
    Gateway.start({
      subject: d.subject,
      publisher: d.publisher,
      flows: new Map(),
      port: 0,
      maxStreams: 1,
      heartbeat,
    });
  const sse = "GET /v1/events?prefix=Three~ HTTP/1.1\r\nHost: x\r\n\r\n";
  /** Opens a stream on a raw connection, sends `behind` after it, closes; ms until the place is free. */
  const leave = async (url: string, behind: string) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) });
    await c.write(enc.encode(sse));
    assert.match((await readAll(c, 300)).text, /^HTTP\/1\.1 200 /);
    if (behind) await c.write(enc.encode(behind));
    c.close();
    const t = performance.now();
    for (let i = 0; i < 100; i++) {
      const r = await fetch(`${url}/v1/events?prefix=Three~`);
      await r.body?.cancel();
      if (r.status === 200) return performance.now() - t;
      await new Promise((r) => setTimeout(r, 50));
    }
    return Infinity;
  };
  // Heartbeats a minute apart: a stream's write cannot be what sees the client go.
  const slow = await start(60_000);
  try {
    const took = await leave(slow.url, "");
    assert.ok(took < 1000, `the place came back after ${took} ms`);
  } finally {
    await slow.close();
  }
  // Bytes behind the stream (a pipelined request, or half of one): Deno's HTTP server reads no
  // further until the answer ends, so only a write sees the client gone: the second heartbeat.
  const fast = await start(500);
  try {
    for (const behind of ["GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", "GET /v1/sta"]) {
      const took = await leave(fast.url, behind);
      assert.ok(took < 2 * 500 + 1000, `the place came back after ${took} ms (${JSON.stringify(behind)})`);
    }
  } finally {
    await fast.close();
  }
});

Deno.test("gateway: closing does not wait for a body still coming: it is answered 503 at once", async () => {
  await using d = await startDeployment({ workers: 1 });
  const g = await Gateway.start({ subject: d.subject, publisher: d.publisher, flows: new Map(), port: 0 });
  const port = Number(new URL(g.url).port);
  const slow = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await slow.write(enc.encode("POST /v1/flows/Three HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"));
    await new Promise((r) => setTimeout(r, 300));
    const t = performance.now();
    await g.close();
    const took = performance.now() - t;
    const answer = await readAll(slow, 3000);
    assert.ok(took < 2000, `closed after ${took} ms (http_body_timeout is 30 s)`);
    assert.match(answer.text, /^HTTP\/1\.1 503 /);
    assert.ok(answer.closed);
  } finally {
    slow.close();
    await g.close();
  }
});

Deno.test("gateway: http_connection_limits = off serves with Deno.serve: no header timeout, no connection gauge; requests still answered", async () => {
  await using d = await startDeployment({ workers: 1 });
  const g = await Gateway.start({
    subject: d.subject,
    publisher: d.publisher,
    flows: new Map(),
    port: 0,
    connectionLimits: false,
    headerTimeout: 200,
  });
  const port = Number(new URL(g.url).port);
  const [half] = (await halfHeaders(port, 1)).conns;
  try {
    assert.equal(await closedWithin(half, 1000), false, "held past the header timeout");
    assert.equal(await postFrom("127.0.0.1", port, "/v1/flows/Three"), "HTTP/1.1 200 OK");
    assert.equal(g.stats().connections?.limited, false);
    const text = await (await fetch(`${g.url}/metrics`)).text();
    assert.doesNotMatch(text, /^zmanager_gateway_connections /m);
    assert.match(text, /^zmanager_gateway_connections_closed_total\{reason="body_timeout"\} 0$/m);
  } finally {
    half.close();
    await g.close();
  }
});
