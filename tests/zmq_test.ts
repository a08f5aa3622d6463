import assert from "node:assert/strict";
import { capabilities, libzmq } from "../src/zmq/ffi.ts";
import { Reactor, type ReactorOptions, type ReactorSocket } from "../src/zmq/reactor.ts";
import { checkEndpoint } from "../src/zmq/socket.ts";
import { readUntil, TIMED_OUT, withTimeout } from "../src/_async.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const PEER = new URL("./peers/zmq_peer.ts", import.meta.url).pathname;

type Transport = "ipc" | "tcp" | "inproc";
let counter = 0;

/** A fresh bind endpoint for a transport; tcp binds to a random loopback port. */
function endpointFor(t: Transport, dir: string): string {
  counter++;
  if (t === "ipc") return `ipc://${dir}/s${counter}`;
  if (t === "tcp") return "tcp://127.0.0.1:*";
  return `inproc://test-${Deno.pid}-${counter}`;
}

async function withReactor(
  fn: (r: Reactor, dir: string) => Promise<void>,
  options: ReactorOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "zmt" });
  const r = new Reactor(options);
  try {
    await fn(r, dir);
  } finally {
    await r.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function bound(s: ReactorSocket, ep: string): Promise<string> {
  await s.bind(ep);
  return await s.lastEndpoint();
}

function spawnPeer(...args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PEER, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

async function finish(p: Deno.ChildProcess): Promise<void> {
  await p.stdin.close();
  await p.stdout.cancel().catch(() => {});
  const s = await p.status;
  assert.equal(s.code, 0, "peer process exited cleanly");
}

Deno.test("libzmq loads from the npm:zeromq package and reports its capabilities", () => {
  const lib = libzmq();
  assert.match(lib.version, /^4\.\d+\.\d+$/);
  assert.ok(lib.path.length > 0);
  assert.equal(capabilities().ipc, true);
});

Deno.test("ipc paths over 107 bytes are refused with a clear error", () => {
  assert.throws(() => checkEndpoint(`ipc:///tmp/${"x".repeat(120)}`), /over the 107-byte limit/);
  checkEndpoint(`ipc:///tmp/${"x".repeat(90)}`);
});

for (const t of ["ipc", "tcp", "inproc"] as Transport[]) {
  Deno.test(`PUSH/PULL in one process over ${t}`, () =>
    withReactor(async (r, dir) => {
      const pull = r.socket("PULL");
      const ep = await bound(pull, endpointFor(t, dir));
      const push = r.socket("PUSH");
      await push.connect(ep);
      const n = 5000;
      const got: number[] = [];
      const all = new Promise<void>((res) =>
        pull.onMessage(([m]) => {
          got.push(new DataView(m.buffer, m.byteOffset, m.byteLength).getUint32(0));
          if (got.length === n) res();
        })
      );
      for (let i = 0; i < n; i++) {
        const m = new Uint8Array(8);
        new DataView(m.buffer).setUint32(0, i);
        await push.send([m]);
      }
      await all;
      assert.deepEqual(got, Array.from({ length: n }, (_, i) => i), "all messages, in order");
    }));

  Deno.test(`PUB/SUB with prefix filters over ${t}`, () =>
    withReactor(async (r, dir) => {
      const pub = r.socket("PUB");
      const ep = await bound(pub, endpointFor(t, dir));
      const sub = r.socket("SUB");
      await sub.subscribe("Flow~");
      await sub.subscribe("ping");
      await sub.connect(ep);
      const it = sub.messages();
      // Slow joiner: publish pings until one arrives, so the subscription is known to be active.
      // One receive stays pending across tries, so no message is lost to an abandoned promise.
      const first = it.next();
      for (let i = 0; i < 500; i++) {
        await pub.send([enc.encode("ping")]);
        if (await Promise.race([first, delay(20)])) break;
      }
      for (const topic of ["FlowX~~~~done", "Flow~~~~done", "Other~~~~done", "Flow~PUBLISH~s~c~a"]) {
        await pub.send([enc.encode(topic), enc.encode("{}")]);
      }
      await pub.send([enc.encode("ping"), enc.encode("end")]);
      const seen: string[] = [];
      for await (const [topic, body] of it) {
        const name = dec.decode(topic);
        if (name !== "ping") seen.push(name);
        else if (body && dec.decode(body) === "end") break;
      }
      assert.deepEqual(seen, ["Flow~~~~done", "Flow~PUBLISH~s~c~a"], "FlowX~ does not match Flow~");
    }));

  Deno.test(`ROUTER/DEALER routing by identity over ${t}`, () =>
    withReactor(async (r, dir) => {
      const router = r.socket("ROUTER", { routerMandatory: true });
      const ep = await bound(router, endpointFor(t, dir));
      const a = r.socket("DEALER", { routingId: "alice" });
      const b = r.socket("DEALER", { routingId: "bob" });
      await a.connect(ep);
      await b.connect(ep);
      await a.send([enc.encode("from alice")]);
      await b.send([enc.encode("from bob")]);
      const ids = new Set<string>();
      for (let i = 0; i < 2; i++) {
        const [id, body] = await router.receive();
        assert.equal(dec.decode(body), `from ${dec.decode(id)}`);
        ids.add(dec.decode(id));
      }
      assert.deepEqual([...ids].sort(), ["alice", "bob"]);
      await router.send([enc.encode("bob"), enc.encode("for bob")]);
      await router.send([enc.encode("alice"), enc.encode("for alice")]);
      assert.equal(dec.decode((await a.receive())[0]), "for alice");
      assert.equal(dec.decode((await b.receive())[0]), "for bob");
      await assert.rejects(router.send([enc.encode("nobody"), enc.encode("x")]), /EHOSTUNREACH/);
    }));
}

for (const t of ["ipc", "tcp"] as Transport[]) {
  Deno.test(`PUSH/PULL across processes over ${t}: every message arrives`, () =>
    withReactor(async (r, dir) => {
      const pull = r.socket("PULL");
      const ep = await bound(pull, endpointFor(t, dir));
      const n = 20000;
      const peer = spawnPeer("push", ep, String(n), "100");
      let count = 0;
      let sum = 0;
      await new Promise<void>((res) =>
        pull.onMessage(([m]) => {
          assert.equal(m.length, 100);
          sum += new DataView(m.buffer, m.byteOffset, m.byteLength).getUint32(0);
          if (++count === n) res();
        })
      );
      assert.equal(sum, (n * (n - 1)) / 2, "each index once");
      await finish(peer);
    }));
}

Deno.test("ping-pong across processes: 2,000 round trips, 20 runs in a row, no hang", async (t) => {
  for (const transport of ["ipc", "tcp"] as Transport[]) {
    await t.step(transport, () =>
      withReactor(async (r, dir) => {
        const router = r.socket("ROUTER");
        const ep = await bound(router, endpointFor(transport, dir));
        const it = router.messages();
        const runs = transport === "ipc" ? 20 : 5;
        for (let run = 0; run < runs; run++) {
          const peer = spawnPeer("echo", ep);
          const hello = (await it.next()).value!;
          assert.equal(dec.decode(hello[1]), "hello");
          const id = hello[0];
          const started = performance.now();
          for (let i = 0; i < 2000; i++) {
            const body = enc.encode(`ping ${run}/${i}`);
            await router.send([id, body]);
            const [rid, reply] = (await it.next()).value!;
            assert.deepEqual(rid, id);
            assert.equal(dec.decode(reply), `ping ${run}/${i}`);
          }
          const ms = performance.now() - started;
          assert.ok(ms < 20000, `2,000 round trips took ${ms.toFixed(0)} ms`);
          await finish(peer);
        }
      }));
  }
});

Deno.test("signals interrupting libzmq calls (EINTR) lose no message and split none", async () => {
  // V8's sampling profiler sends SIGPROF to the JavaScript thread about every millisecond,
  // which makes libzmq calls on that thread fail with EINTR: the receiver runs under it.
  const dir = await Deno.makeTempDir({ prefix: "zmt" });
  const ep = `ipc://${dir}/eintr`;
  const n = 200_000;
  const receiver = new Deno.Command(Deno.execPath(), {
    args: ["run", "--v8-flags=--prof,--logfile=/dev/null", "-A", PEER, "pull3", ep, String(n)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = receiver.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const ready = await readUntil(lines, "ready");
  if (ready === undefined) {
    const err = new TextDecoder().decode(await new Response(receiver.stderr).arrayBuffer());
    throw new Error(`the receiver exited (${(await receiver.status).code}) before it was ready: ${err}`);
  }
  const sender = spawnPeer("push3", ep, String(n));
  const result = await withTimeout(readUntil(lines, "}", ready), 60_000);
  if (result === TIMED_OUT) receiver.kill("SIGKILL");
  const status = await receiver.status;
  const stderr = new TextDecoder().decode(await new Response(receiver.stderr).arrayBuffer());
  await finish(sender);
  await Deno.remove(dir, { recursive: true });
  assert.notEqual(result, TIMED_OUT, "the receiver got every message within 60 s");
  assert.equal(status.code, 0, stderr.slice(0, 2000));
  assert.ok(typeof result === "string", "the receiver reported before it exited");
  assert.deepEqual(JSON.parse(result.slice(result.indexOf("{"))), { count: n, malformed: 0, unique: n });
});

Deno.test("a peer that reconnects 50 times is served every time", () =>
  withReactor(async (r, dir) => {
    const router = r.socket("ROUTER");
    const ep = await bound(router, endpointFor("ipc", dir));
    router.onMessage(([id, body]) => void router.send([id, body]));
    const peer = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", PEER, "reconnect", ep, "50"],
      stdout: "piped",
      stderr: "inherit",
    });
    const out = await peer.output();
    assert.equal(out.code, 0);
    assert.equal(dec.decode(out.stdout).trim(), "reconnected 50");
  }));

Deno.test("closing a socket ends a pending receive; closing the reactor ends the rest", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmt" });
  const r = new Reactor();
  const a = r.socket("PULL");
  await a.bind(`ipc://${dir}/a`);
  const b = r.socket("SUB");
  await b.connect(`ipc://${dir}/a-missing`);
  const pendingA = a.receive();
  const pendingB = b.messages().next();
  await a.close();
  await assert.rejects(pendingA, /closed while receiving/);
  await a.close(); // twice is fine
  await r.close();
  assert.deepEqual(await pendingB, { value: undefined, done: true });
  await r.close(); // twice is fine
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a message over maxMessageSize is dropped and counted; over 16 times it, libzmq refuses it; later messages arrive", () =>
  withReactor(async (r, dir) => {
    const pull = r.socket("PULL", { maxMessageSize: 1000 });
    const ep = await bound(pull, endpointFor("ipc", dir));
    const push = r.socket("PUSH", { reconnectInterval: 10 });
    await push.connect(ep);
    await push.send([new Uint8Array(5000).fill(1)]); // read and counted
    await push.send([new Uint8Array(20_000).fill(2)]); // over 16 × 1000: libzmq drops the connection
    const it = pull.messages();
    let next = it.next();
    // The pusher reconnects and resends whatever it still holds. Keep sending small messages
    // until one arrives.
    let got: Uint8Array[] | undefined;
    for (let i = 0; i < 200 && !got; i++) {
      await push.send([enc.encode(`small ${i}`)]);
      got = await Promise.race([next, delay(25)]).then((x) => (x ? x.value : undefined));
    }
    assert.ok(got, "a small message arrived after the oversize one");
    assert.match(dec.decode(got[0]), /^small \d+$/, "the oversize messages were never delivered");
    assert.equal(pull.oversizeDrops, 1, "the one read was counted");
    next = it.next();
    void next;
  }));

Deno.test("high-water mark backpressure: send waits for room instead of queueing without bound", () =>
  withReactor(async (r, dir) => {
    const pull = r.socket("PULL", { receiveHighWaterMark: 10 });
    const ep = await bound(pull, endpointFor("inproc", dir));
    const push = r.socket("PUSH", { sendHighWaterMark: 10 });
    await push.connect(ep);
    // On the reactor's turn, where sendNow reaches libzmq (between turns it may be polling).
    const accepted = await r.exec(() => {
      let n = 0;
      while (push.sendNow([enc.encode(`m${n}`)])) n++;
      return n;
    });
    assert.ok(accepted >= 10 && accepted <= 40, `accepted ${accepted} before the mark`);
    let sent = false;
    const waiting = push.send([enc.encode("late")]).then(() => (sent = true));
    await delay(50);
    assert.equal(sent, false, "the send waits while the pipe is full");
    const received: string[] = [];
    pull.onMessage(([m]) => received.push(dec.decode(m)));
    await waiting;
    assert.equal(sent, true);
    while (received.length < accepted + 1) await delay(5);
    assert.equal(received.at(-1), "late");
  }));

function delay(ms: number): Promise<undefined> {
  return new Promise((res) => setTimeout(() => res(undefined), ms));
}

Deno.test("afterReceive runs once a pass has delivered its messages; onIdle when a pass finds none", () =>
  withReactor(async (r, dir) => {
    const pull = r.socket("PULL");
    const ep = await bound(pull, endpointFor("ipc", dir));
    const events: string[] = [];
    let received = 0;
    pull.onMessage(() => received++);
    r.afterReceive(() => events.push(`after ${received}`));
    // The signal to wait for: the reactor going idle once every message has been handled.
    const idleAfterAll = new Promise<void>((resolve) =>
      r.onIdle(() => {
        events.push("idle");
        if (received === 50) resolve();
      })
    );
    const push = r.socket("PUSH");
    await push.connect(ep);
    for (let i = 0; i < 50; i++) await push.send([enc.encode(`m${i}`)]);
    await Promise.race([idleAfterAll, delay(5000)]);
    assert.equal(received, 50);
    const afters = events.filter((e) => e.startsWith("after")).map((e) => Number(e.slice(6)));
    assert.ok(afters.length > 0 && afters.at(-1) === 50, `a pass ended after the last message: ${afters}`);
    assert.deepEqual(afters, [...afters].sort((a, b) => a - b), "in order");
    assert.ok(afters.every((n) => n > 0), "only after passes that delivered messages");
    assert.equal(events.at(-1), "idle", "idle once the messages are handled");
  }));

Deno.test("now(): one reading for a whole pass (its callbacks and afterReceive), the time now outside passes", () =>
  withReactor(async (r, dir) => {
    const pull = r.socket("PULL");
    const ep = await bound(pull, endpointFor("ipc", dir));
    // Each message's handler busies the thread for 2 ms: a clock read per message would move.
    const seen: { pass: number; at: number; real: number }[] = [];
    let pass = 0;
    pull.onMessage(() => {
      seen.push({ pass, at: r.now(), real: performance.now() });
      const until = performance.now() + 2;
      while (performance.now() < until) { /* busy */ }
    });
    const afters: { pass: number; at: number }[] = [];
    const all = Promise.withResolvers<void>();
    r.afterReceive(() => {
      afters.push({ pass: pass++, at: r.now() });
      if (seen.length === 20) all.resolve(); // the pass of the last message ended
    });
    const push = r.socket("PUSH");
    await push.connect(ep);
    // Queued together, so that passes take several at once.
    for (let i = 0; i < 20; i++) {
      push.sendNow([enc.encode(`m${i}`)]) || await push.send([enc.encode(`m${i}`)]);
    }
    await withTimeout(all.promise, 5000);
    assert.equal(seen.length, 20);
    const shared = seen.filter((m, i) => i > 0 && seen[i - 1].pass === m.pass);
    assert.ok(shared.length > 0, "some pass took several messages");
    for (const m of seen) {
      const first = seen.find((x) => x.pass === m.pass)!;
      assert.equal(m.at, first.at, "the same reading for every message of a pass");
      assert.ok(m.at <= m.real, "the pass's start, never later than the message");
      assert.equal(afters.find((a) => a.pass === m.pass)?.at, m.at, "afterReceive reads it too");
    }
    for (const m of shared) {
      assert.ok(m.real - m.at >= 2, "read once: a later message of a pass sees its start");
    }
    const outside = r.now();
    await delay(5);
    assert.ok(r.now() - outside >= 4, "outside a pass it is the time now");
  }));

/** Two PAIR sockets connected over inproc, on a reactor that waits in-thread for `syncWaitMs`. */
function withInThreadPair(
  syncWaitMs: number,
  fn: (r: Reactor, a: ReactorSocket, b: ReactorSocket) => Promise<void>,
  more: ReactorOptions = {},
): Promise<void> {
  return withReactor(async (r, dir) => {
    const a = r.socket("PAIR");
    const ep = await bound(a, endpointFor("inproc", dir));
    const b = r.socket("PAIR");
    await b.connect(ep);
    await fn(r, a, b);
  }, { ...more, syncWaitMs });
}

Deno.test("in-thread wait: a send that a promise continuation defers to a microtask leaves before the reactor waits", () =>
  // A long in-thread wait: a send held back by it would take half a second.
  withInThreadPair(500, async (_r, a, b) => {
    const inbox = b.messages();
    const asked = a.messages();
    await b.send([enc.encode("ping")]);
    await asked.next(); // a consumer awaiting a message: resumed by a promise continuation
    const t = performance.now();
    queueMicrotask(() => void a.send([enc.encode("pong")])); // a flush deferred to a microtask
    const [reply] = (await inbox.next()).value!;
    const waited = performance.now() - t;
    assert.equal(dec.decode(reply), "pong");
    assert.ok(waited < 250, `the reply waited ${waited.toFixed(0)} ms (the in-thread wait is 500 ms)`);
  }));

Deno.test("in-thread wait: while async work is held, its promise chains run before the reactor waits", () =>
  withInThreadPair(50, async (r, a, b) => {
    const inbox = b.messages();
    const events: string[] = [];
    let armed = false;
    r.onIdle(() => armed && events.push("idle"));
    const release = r.holdSyncWait(); // as a worker does while an async handler runs
    a.onMessage(async () => {
      armed = true;
      for (let i = 0; i < 20; i++) await null; // a chain longer than a few microtask turns
      events.push("sent");
      await a.send([enc.encode("pong")]);
    });
    await b.send([enc.encode("ping")]);
    assert.equal(dec.decode((await inbox.next()).value![0]), "pong");
    release();
    assert.equal(events[0], "sent", `the reactor went idle before the chain finished: ${events}`);
  }));

Deno.test("in-thread wait: holdForEvents waits off-thread, so another thread's message is handled as it comes; released, in-thread again at once", () =>
  // A long in-thread wait (500 ms): a Web Worker's message would wait for its end.
  withInThreadPair(500, async (r, a, b) => {
    const inbox = a.messages();
    await b.send([enc.encode("one")]);
    await inbox.next(); // a message came: in-thread waits
    const thread = new Worker("data:application/javascript,setTimeout(()=>postMessage(1),50)", {
      type: "module",
    });
    try {
      const release = r.holdForEvents();
      const t = performance.now();
      await new Promise((resolve) => (thread.onmessage = resolve));
      const waited = performance.now() - t;
      assert.ok(
        waited < 250,
        `the thread's message waited ${waited.toFixed(0)} ms (the in-thread wait is 500 ms)`,
      );
      assert.equal(r.polling, true, "held, yet not waiting off-thread");
      // Released with no message coming: the off-thread wait is woken, and the reactor waits
      // in-thread again (a timer then sees `polling` false: no JavaScript runs during that wait).
      release();
      for (let i = 0; i < 100 && r.polling; i++) await delay(5);
      assert.equal(r.polling, false, "released, yet still waiting off-thread for a message");
      await b.send([enc.encode("two")]);
      assert.equal(dec.decode((await inbox.next()).value![0]), "two");
    } finally {
      thread.terminate();
    }
  }));

Deno.test("in-thread wait: a hold's events waited for on this thread (waitForEventsWith) are taken as they come; timers still run and messages are still read while they keep coming", () =>
  withInThreadPair(500, async (r, a, b) => {
    const inbox = a.messages();
    await b.send([enc.encode("one")]);
    await inbox.next();
    // Events that keep coming: each wait takes 0.2 ms and finds one, for 3 s at most (a loop that
    // never let the event loop run would hold the timer below that long, not for ever).
    let waits = 0;
    const until = performance.now() + 3000;
    r.waitForEventsWith(() => {
      waits++;
      const t = performance.now() + 0.2;
      while (performance.now() < t) { /* an event comes */ }
      return performance.now() < until;
    });
    const release = r.holdForEvents();
    try {
      const t = performance.now();
      await delay(20);
      const waited = performance.now() - t;
      assert.ok(waited < 500, `a 20 ms timer took ${waited.toFixed(0)} ms`);
      assert.ok(waits >= 5, `${waits} waits for events`);
      assert.equal(r.polling, false, "waiting off-thread while the events came here");
      // A message that comes while they keep coming is read between two waits (not once they stop).
      const sent = performance.now();
      await b.send([enc.encode("mid")]);
      assert.equal(dec.decode((await inbox.next()).value![0]), "mid");
      const read = performance.now();
      assert.ok(read < until, `read only once the events stopped (${(read - sent).toFixed(0)} ms)`);
    } finally {
      release();
      r.waitForEventsWith(() => false);
    }
    await b.send([enc.encode("two")]);
    assert.equal(dec.decode((await inbox.next()).value![0]), "two");
  }));

Deno.test("in-thread wait: a waitForEventsWith hook that throws is reported, and the reactor goes on (it stopped for good)", () => {
  const errors: unknown[] = [];
  return withInThreadPair(10, async (r, a, b) => {
    const inbox = a.messages();
    let thrown = 0;
    const called = Promise.withResolvers<void>();
    r.waitForEventsWith(() => {
      called.resolve();
      if (thrown++ === 0) throw new Error("a hook that fails once");
      return false;
    });
    const release = r.holdForEvents();
    await withTimeout(called.promise, 2000);
    release();
    assert.ok(thrown >= 1, "the hook was called");
    await b.send([enc.encode("after")]);
    const got = await withTimeout(inbox.next(), 2000);
    assert.notEqual(got, TIMED_OUT, "no message after the hook threw: the reactor stopped");
    assert.equal(dec.decode((got as IteratorResult<Uint8Array[]>).value![0]), "after");
    assert.deepEqual(errors.map((e) => (e as Error).message), ["a hook that fails once"]);
  }, { onError: (e) => errors.push(e) });
});

Deno.test("in-thread wait: after 1 s without a message the reactor sleeps off-thread; the next message still arrives", () =>
  withInThreadPair(10, async (r, a, b) => {
    const inbox = a.messages();
    await b.send([enc.encode("one")]);
    assert.equal(dec.decode((await inbox.next()).value![0]), "one");
    // During an in-thread wait no JavaScript runs, so a timer sees `polling` false; once the
    // wait is handed to another thread, the timer runs while it waits.
    await delay(300);
    assert.equal(r.polling, false, "idle for 300 ms: still waiting in-thread");
    await delay(1000);
    assert.equal(r.polling, true, "idle for 1.3 s, yet still waking every 10 ms in-thread");
    await b.send([enc.encode("two")]);
    assert.equal(dec.decode((await inbox.next()).value![0]), "two");
    assert.equal(r.polling, false, "a message came: back to in-thread waits");
  }));

Deno.test("in-thread wait: with a second reactor running on the thread, neither blocks it, so neither's messages wait for the other's waits", () =>
  // The role's in-thread wait is 300 ms: while it blocked the thread, every reply to the client
  // (on a reactor of its own) waited for its end, about 300 ms a round trip (checked).
  withInThreadPair(300, async (r, a, b) => {
    a.onMessage((f) => void a.send(f)); // the role answers from its callback
    const inbox = b.messages();
    await b.send([enc.encode("warm")]);
    await inbox.next();
    await using client = new Reactor();
    const c = client.socket("PAIR");
    const dir = await Deno.makeTempDir({ prefix: "zmt" });
    try {
      const echo = r.socket("PAIR");
      echo.onMessage((f) => void echo.send(f));
      await c.connect(await bound(echo, endpointFor("ipc", dir)));
      const replies = c.messages();
      const trips: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        await c.send([enc.encode(String(i))]);
        assert.equal(dec.decode((await replies.next()).value![0]), String(i));
        trips.push(performance.now() - t);
      }
      trips.sort((x, y) => x - y);
      assert.ok(
        trips[10] < 100,
        `round trips ${trips.map((x) => x.toFixed(0))} ms: the role's waits held the client`,
      );
      // A timer runs during an off-thread wait, and only between in-thread waits (`polling` false).
      await delay(20);
      assert.equal(r.polling, true, "with a second reactor running, the role still waits in-thread");
      // The client closed: alone again, the role's reactor waits in-thread from its next message.
      await client.close();
      await b.send([enc.encode("again")]);
      assert.equal(dec.decode((await inbox.next()).value![0]), "again");
      await delay(20);
      assert.equal(r.polling, false, "alone again, yet still waiting off-thread");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

for (const syncWaitMs of [10, 0]) {
  Deno.test(
    `the reactor waits on the sockets' descriptors: sockets that send right after they receive miss no message (${
      syncWaitMs ? "in-thread" : "off-thread"
    } waits, 5,000 round trips)`,
    () =>
      withReactor(async (r, dir) => {
        // One message in flight, each end sending from its message callback as the roles do: a
        // send that processes libzmq's commands (taking in "a pipe became readable") leaves the
        // descriptor quiet with a message waiting; a reactor that then waited on the descriptor
        // without asking the socket would stall here with off-thread waits (checked: it stalls at
        // 0 of 5,000 with that check removed). In-thread waits end every 10 ms and receive again,
        // so that run checks delivery and order only.
        const router = r.socket("ROUTER");
        const ep = await bound(router, endpointFor("ipc", dir));
        const peer = spawnPeer("echo", ep);
        const n = 5000;
        let got = 0;
        let id: Uint8Array | undefined;
        const done = Promise.withResolvers<void>();
        const next = (i: number) => {
          const frames = [id!, enc.encode(String(i))];
          if (!router.sendNow(frames)) void router.send(frames);
        };
        router.onMessage((f) => {
          if (!id) {
            assert.equal(dec.decode(f[1]), "hello");
            id = f[0];
            return next(0);
          }
          assert.equal(dec.decode(f[1]), String(got));
          if (++got === n) done.resolve();
          else next(got);
        });
        const res = await withTimeout(done.promise, 30_000);
        assert.notEqual(res, TIMED_OUT, `stalled after ${got} of ${n} round trips`);
        await finish(peer);
      }, { syncWaitMs }),
  );
}

Deno.test(
  "a send made while the reactor waits off-thread on the descriptors goes at once and misses no message (two in flight, 3,000 round trips)",
  () =>
    withReactor(async (r, dir) => {
      // Each next message is sent from a timer, so while the reactor waits on another thread:
      // the send goes straight to libzmq (no wake-up of that wait), with the other message in
      // flight arriving meanwhile. A send can also take in libzmq's "a pipe became readable"
      // command and leave the descriptor quiet with a message waiting (the reactor then asks
      // the socket: `sentDuringWait`); that window, between the descriptor firing and the
      // waiting thread running, is too narrow for this test to hit on purpose (it passed 3 of 3
      // with the check removed): it checks delivery, order of arrival and that sends went at once.
      const router = r.socket("ROUTER");
      const ep = await bound(router, endpointFor("ipc", dir));
      const peer = spawnPeer("echo", ep);
      const n = 3000;
      let sent = 0;
      let got = 0;
      let direct = 0;
      let id: Uint8Array | undefined;
      const done = Promise.withResolvers<void>();
      const next = () => {
        const frames = [id!, enc.encode(String(sent++))];
        const waiting = r.polling;
        if (router.sendNow(frames)) direct += waiting ? 1 : 0;
        else void router.send(frames);
      };
      router.onMessage((f) => {
        if (!id) {
          id = f[0];
          next();
          next();
          return;
        }
        assert.equal(dec.decode(f[1]), String(got));
        got++;
        if (got === n) done.resolve();
        else if (sent < n) setTimeout(next, 0);
      });
      const res = await withTimeout(done.promise, 30_000);
      assert.notEqual(res, TIMED_OUT, `stalled after ${got} of ${n} round trips`);
      assert.ok(direct > n / 2, `only ${direct} of ${n} sends went at once during a wait`);
      await finish(peer);
    }),
);

/**
 * `a` on a reactor with `coalesceSendsMs`, `b` on a plain reactor of its own (its sends are not
 * held), connected over ipc.
 */
async function withCoalescingPair(
  coalesceSendsMs: number,
  fn: (r: Reactor, a: ReactorSocket, b: ReactorSocket) => Promise<void>,
): Promise<void> {
  const peer = new Reactor();
  try {
    await withReactor(async (r, dir) => {
      const a = r.socket("PAIR", { linger: 0 });
      const ep = await bound(a, endpointFor("ipc", dir));
      const b = peer.socket("PAIR", { linger: 0 });
      await b.connect(ep);
      await fn(r, a, b);
    }, { coalesceSendsMs });
  } finally {
    await peer.close();
  }
}

/** Waits (up to 5 s) until the reactor waits on its off-thread poll. */
async function untilPolling(r: Reactor): Promise<void> {
  for (let i = 0; i < 500 && !r.polling; i++) await delay(10);
  assert.ok(r.polling, "the reactor never waited off-thread");
}

Deno.test("coalesceSendsMs: while messages keep coming, a send queued during the off-thread wait (execSend) leaves with the next message's pass", () =>
  withCoalescingPair(3000, async (r, a, b) => {
    const fromA = b.messages();
    const toA = a.messages();
    await b.send([enc.encode("one")]);
    await toA.next();
    await untilPolling(r);
    r.execSend(() => void a.send([enc.encode("held")]));
    assert.equal(await withTimeout(fromA.next(), 300), TIMED_OUT, "the send woke the poll at once");
    await b.send([enc.encode("two")]); // a message: the poll returns, the held send leaves
    const got = await withTimeout(fromA.next(), 2000);
    assert.notEqual(got, TIMED_OUT, "the held send waited for its timer (3 s), not for the message");
    assert.equal(dec.decode((got as IteratorResult<Uint8Array[]>).value[0]), "held");
    assert.equal(dec.decode((await toA.next()).value![0]), "two");
  }));

Deno.test("coalesceSendsMs: a held send leaves after that long at most; after that long without a message, sends leave at once", () =>
  withCoalescingPair(800, async (r, a, b) => {
    const fromA = b.messages();
    const toA = a.messages();
    await b.send([enc.encode("one")]);
    await toA.next();
    await untilPolling(r);
    let t = performance.now();
    r.execSend(() => void a.send([enc.encode("held")]));
    const held = await withTimeout(fromA.next(), 5000);
    const waited = performance.now() - t;
    assert.notEqual(held, TIMED_OUT, "a held send never left with no message coming");
    assert.ok(waited >= 600, `the send was not held: it left after ${waited.toFixed(0)} ms`);
    await delay(1000); // now over 800 ms since the last message: no more holding
    await untilPolling(r);
    t = performance.now();
    r.execSend(() => void a.send([enc.encode("prompt")]));
    const prompt = await withTimeout(fromA.next(), 5000);
    const took = performance.now() - t;
    assert.equal(dec.decode((prompt as IteratorResult<Uint8Array[]>).value[0]), "prompt");
    assert.ok(took < 400, `an idle reactor held a send for ${took.toFixed(0)} ms`);
  }));
