/**
 * The ZMTP connection against a peer driven by hand over TCP loopback (from an outside review):
 * close() while reading, ERROR, handshakes trickled or stalled, oversize READYs, kept frames,
 * flush() and send() around close(), messages of very many frames, PING contexts.
 */
import assert from "node:assert/strict";
import { ZmtpConnection } from "../src/zmtp/connection.ts";
import {
  concat,
  decodeCommand,
  encodeCommand,
  encodeGreeting,
  encodeProperties,
  FLAG_COMMAND,
  FLAG_LONG,
  FLAG_MORE,
  FrameReader,
  FrameWriter,
  GREETING_SIZE,
  ZmtpError,
} from "../src/zmtp/codec.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Greeting + READY of a ROUTER peer. */
function hello(type = "ROUTER"): Uint8Array {
  return concat(encodeGreeting(), encodeCommand("READY", encodeProperties({ "Socket-Type": type })));
}

function messages(list: Uint8Array[][]): Uint8Array {
  const w = new FrameWriter();
  for (const m of list) w.add(m);
  return w.take();
}

async function writeAll(c: Deno.Conn, b: Uint8Array) {
  for (let at = 0; at < b.length;) at += await c.write(b.subarray(at));
}

/**
 * Reads what the other side sends until it closes the connection (5 s at most), so that closing
 * this side never resets a connection the other still reads (nor waits on a guess of how long).
 */
async function untilClosed(c: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  const drained = (async () => {
    while ((await c.read(buf).catch(() => null)) !== null) { /* discard */ }
  })();
  await withTimeout(drained, 5000);
}

/** The commands `c` receives after the other side's greeting, as "NAME data,octets", until `done` says so or it closes. */
async function commandsFrom(c: Deno.Conn, done: (got: string[]) => boolean): Promise<string[]> {
  const reader = new FrameReader(1 << 20);
  const buf = new Uint8Array(4096);
  let skip = GREETING_SIZE;
  const got: string[] = [];
  while (!done(got)) {
    const n = await c.read(buf);
    if (n === null) break;
    const piece = buf.slice(Math.min(skip, n), n);
    skip = Math.max(0, skip - n);
    reader.push(piece, (d) => {
      if (d.command) {
        const { name, data } = decodeCommand(d.body);
        got.push(`${name} ${[...data].join(",")}`.trim());
      }
    });
  }
  return got;
}

/** A TCP connection over loopback: `raw`, accepted, and `c`, the side that connected. */
async function tcpPair(): Promise<{ raw: Deno.Conn; c: Deno.Conn }> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = l.accept();
  const c = await Deno.connect({ hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port });
  const raw = await accepted;
  l.close();
  return { raw, c };
}

/**
 * A raw TCP peer: `script` drives the accepted connection, which is then held until the ZMTP side
 * (a DEALER client by default) closes it; `server` settles after that.
 */
async function rawPeer<T>(
  script: (c: Deno.Conn) => Promise<T>,
  open: (port: number) => Promise<ZmtpConnection | unknown>,
) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const server = (async () => {
    const c = await l.accept();
    try {
      const result = await script(c);
      await untilClosed(c);
      return result;
    } finally {
      try {
        c.close();
      } catch { /* closed */ }
    }
  })();
  try {
    const client = await open(port).then(
      (v) => ({ ok: true as const, v }),
      (e) => ({ ok: false as const, e }),
    );
    return { client, server };
  } finally {
    l.close();
  }
}

const dealer = (port: number, extra: Partial<Parameters<typeof ZmtpConnection.open>[1]> = {}) =>
  Deno.connect({ hostname: "127.0.0.1", port }).then((c) =>
    ZmtpConnection.open(c, { socketType: "DEALER", ...extra })
  );

Deno.test("close() inside onMessage stops delivery (messages later in the same read)", async () => {
  let release = () => {};
  const go = new Promise<void>((r) => (release = r));
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await go; // the client is listening now
    await writeAll(c, messages([[enc.encode("a")], [enc.encode("b")], [enc.encode("c")]]));
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const got: string[] = [];
  const listening = z.listen((f) => {
    got.push(dec.decode(f[0]));
    z.close();
  });
  release();
  await listening;
  await server;
  assert.deepEqual(got, ["a"], "messages were delivered after close()");
});

Deno.test("close() before listen() delivers nothing (messages that came with READY)", async () => {
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, concat(hello(), messages([[enc.encode("early")]])));
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  z.close();
  const got: string[] = [];
  await z.listen((f) => got.push(dec.decode(f[0])));
  await server;
  assert.deepEqual(got, [], "a closed connection delivered a message");
});

Deno.test("the peer's ERROR during the handshake is a ZmtpError with its reason", async () => {
  const reason = enc.encode("go away");
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(
      c,
      concat(encodeGreeting(), encodeCommand("ERROR", concat(new Uint8Array([reason.length]), reason))),
    );
  }, (p) => dealer(p));
  await server;
  assert.ok(!client.ok);
  assert.ok(
    client.e instanceof ZmtpError && /refused the handshake: go away/.test(client.e.message),
    String(client.e),
  );
});

Deno.test("the peer's ERROR after the handshake rejects listen() and closes", async () => {
  const reason = enc.encode("bye");
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await writeAll(c, encodeCommand("ERROR", concat(new Uint8Array([reason.length]), reason)));
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  await assert.rejects(z.listen(() => {}), /the peer sent ERROR: bye/);
  assert.ok(z.closed);
  await server;
});

Deno.test("a handshake trickled one octet per write completes, and its message arrives", async () => {
  const all = concat(hello(), messages([[enc.encode("x"), new Uint8Array(300).fill(5)]]));
  const { client, server } = await rawPeer(async (c) => {
    for (let i = 0; i < all.length; i++) {
      await writeAll(c, all.subarray(i, i + 1));
      if (i % 8 === 0) await sleep(1);
    }
  }, (p) => dealer(p));
  assert.ok(client.ok, String((client as { e?: unknown }).e));
  const z = client.v as ZmtpConnection;
  const got: Uint8Array[][] = [];
  await z.listen((f) => {
    got.push(f);
    z.close();
  });
  await server;
  assert.equal(got.length, 1);
  assert.equal(got[0][1].length, 300);
});

Deno.test("a slow-loris handshake (one octet per 50 ms) is cut at handshakeTimeoutMs", async () => {
  const all = hello();
  const t = performance.now();
  const { client, server } = await rawPeer(async (c) => {
    for (let i = 0; i < all.length; i++) {
      try {
        await writeAll(c, all.subarray(i, i + 1));
      } catch {
        return;
      }
      await sleep(50);
    }
  }, (p) => dealer(p, { handshakeTimeoutMs: 400 }));
  assert.ok(!client.ok);
  assert.match(String(client.e), /no ZMTP handshake within 400 ms/);
  assert.ok(performance.now() - t < 1500);
  await server;
});

Deno.test("a READY that claims 32 MiB is refused at once: no more than 192 KiB is taken before a READY", async () => {
  const head = new Uint8Array(9);
  head[0] = FLAG_COMMAND | FLAG_LONG;
  new DataView(head.buffer).setBigUint64(1, 32n << 20n);
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, concat(encodeGreeting(), head));
    try {
      for (let i = 0; i < 64; i++) await writeAll(c, new Uint8Array(16 * 1024));
    } catch { /* refused */ }
  }, (p) => dealer(p));
  await server;
  assert.ok(!client.ok);
  assert.match(String(client.e), /over the limit of 196608/); // before the READY, at most 192 KiB
});

Deno.test("frames kept from onMessage stay intact after many later reads (slab aliasing)", async () => {
  const N = 3000, SIZE = 700;
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    for (let i = 0; i < N; i += 10) {
      const batch: Uint8Array[][] = [];
      for (let j = i; j < i + 10; j++) {
        batch.push([new Uint8Array(SIZE).fill(j & 0xff), enc.encode(String(j))]);
      }
      await writeAll(c, messages(batch));
      if (i % 100 === 0) await sleep(1);
    }
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const kept: Uint8Array[][] = [];
  await z.listen((f) => {
    kept.push(f); // kept as handed out, no copy
    if (kept.length === N) z.close();
  });
  await server;
  assert.equal(kept.length, N);
  for (let j = 0; j < N; j++) {
    assert.equal(dec.decode(kept[j][1]), String(j));
    assert.ok(kept[j][0].every((b) => b === (j & 0xff)), `frame ${j} was overwritten`);
  }
});

Deno.test("send() after close throws; a flush pending at close rejects", async () => {
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  z.send([enc.encode("x")]);
  const f = z.flush();
  z.close();
  await assert.rejects(f);
  assert.throws(() => z.send([enc.encode("y")]), Deno.errors.BadResource);
  await server;
});

Deno.test("a PING that arrives after close() leaves nothing queued, and flush() then settles", async () => {
  let release = () => {};
  const go = new Promise<void>((r) => (release = r));
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await go;
    await writeAll(
      c,
      concat(messages([[enc.encode("a")]]), encodeCommand("PING", new Uint8Array([0, 10, 1]))),
    );
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const listening = z.listen(() => z.close());
  release();
  await listening;
  await server;
  const flushed = await withTimeout(z.flush().then(() => "resolved", () => "rejected"), 1000);
  assert.notEqual(flushed, TIMED_OUT, "flush() after close never settles");
  assert.equal(z.queuedBytes, 0, `queuedBytes ${z.queuedBytes} after close`);
});

Deno.test("a message of 2,000,000 empty frames is refused at maxFrames, before it costs memory", async () => {
  const FRAMES = 2_000_000;
  const chunk = new Uint8Array(2 * 100_000);
  for (let i = 0; i < chunk.length; i += 2) chunk[i] = FLAG_MORE; // [MORE, size 0]
  let release = () => {};
  const go = new Promise<void>((r) => (release = r));
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await go;
    try {
      for (let i = 0; i < FRAMES / 100_000; i++) await writeAll(c, chunk);
    } catch { /* refused */ }
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const before = Deno.memoryUsage().heapUsed;
  const listening = z.listen(() => {});
  release();
  await assert.rejects(listening, /a message of more than 1024 frames/);
  const grew = Deno.memoryUsage().heapUsed - before;
  await server;
  // Each empty frame is over 100 bytes of heap: without the limit this grew by over 200 MiB.
  assert.ok(grew < 32 * 2 ** 20, `the heap grew ${(grew / 2 ** 20).toFixed(0)} MiB`);
});

Deno.test("a PING with a 20-octet context gets a PONG with 16 (RFC 37's maximum)", async () => {
  let pong = (_: string[]) => {};
  const answered = new Promise<string[]>((r) => (pong = r));
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await writeAll(c, encodeCommand("PING", concat(new Uint8Array([0, 0]), new Uint8Array(20).fill(9))));
    pong(await commandsFrom(c, (got) => got.some((x) => x.startsWith("PONG"))));
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const listening = z.listen(() => {});
  const cmds = await withTimeout(answered, 5000);
  z.close();
  await listening;
  await server;
  assert.notEqual(cmds, TIMED_OUT, "no PONG within 5 s");
  assert.ok(
    cmds !== TIMED_OUT && cmds.includes(`PONG ${new Array(16).fill(9).join(",")}`),
    JSON.stringify(cmds),
  );
});

Deno.test("what comes in the same read as the peer's READY is delivered, and its PING answered", async () => {
  let pong = (_: string[]) => {};
  const answered = new Promise<string[]>((r) => (pong = r));
  const w = new FrameWriter();
  w.add([enc.encode("first"), enc.encode("message")]);
  w.addRaw(encodeCommand("PING", new Uint8Array([0, 0, 7, 7])));
  const { client, server } = await rawPeer(async (c) => {
    // The greeting, READY, a message and a PING in one write.
    await writeAll(c, concat(hello(), w.take()));
    pong(await commandsFrom(c, (got) => got.includes("PONG 7,7")));
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const got: string[] = [];
  const listening = z.listen((f) => got.push(f.map((x) => dec.decode(x)).join(" ")));
  const cmds = await withTimeout(answered, 5000);
  z.close();
  await listening;
  await server;
  assert.notEqual(cmds, TIMED_OUT, "no PONG within 5 s");
  assert.ok(
    cmds !== TIMED_OUT && cmds[0].startsWith("READY") && cmds.includes("PONG 7,7"),
    JSON.stringify(cmds),
  );
  assert.deepEqual(got, ["first message"]);
});

/** A raw TCP server peer and a ZMTP DEALER client connected to it. */
async function pair(): Promise<{ raw: Deno.Conn; z: ZmtpConnection }> {
  const { raw, c } = await tcpPair();
  await writeAll(raw, hello());
  const z = await ZmtpConnection.open(c, { socketType: "DEALER" });
  return { raw, z };
}

Deno.test("close() inside onMessage, then a bad frame in the same read: listen() still resolves", async () => {
  const { raw, z } = await pair();
  const got: string[] = [];
  const listening = z.listen((f) => {
    got.push(dec.decode(f[0]));
    z.close();
  });
  // A message, then a frame with reserved flag bits, in one write.
  await writeAll(raw, concat(messages([[enc.encode("a")]]), new Uint8Array([0x80, 0])));
  const how = await withTimeout(listening.then(() => "resolved", (e) => `rejected: ${e}`), 2000);
  raw.close();
  assert.deepEqual(got, ["a"]);
  const flushed = await z.flush().then(() => "resolved", (e) => `rejected: ${e}`);
  assert.equal(how, "resolved", "listen() after close() from onMessage");
  assert.equal(flushed, "resolved", "flush() with nothing queued, after close()");
});

Deno.test("a peer that sends PINGs and reads nothing cannot grow the PONG queue", async () => {
  const { raw, z } = await pair();
  const listening = z.listen(() => {});
  const ping = encodeCommand("PING", concat(new Uint8Array([0, 0]), new Uint8Array(16).fill(7)));
  const burst = new Uint8Array(ping.length * 10_000);
  for (let i = 0; i < 10_000; i++) burst.set(ping, i * ping.length);
  let peak = 0;
  for (let i = 0; i < 300 && peak < 32 << 20; i++) {
    await writeAll(raw, burst); // ~250 KB of PINGs; the answers are never read
    peak = Math.max(peak, z.queuedBytes);
  }
  z.close();
  await listening;
  raw.close();
  assert.ok(peak < 8 << 20, `PONGs queued for a peer that reads nothing: ${(peak / 2 ** 20).toFixed(1)} MiB`);
});

Deno.test("a 1 MiB message in the same write as READY is taken (the handshake's 192 KiB limit is raised)", async () => {
  const { raw, c } = await tcpPair();
  const big = new Uint8Array(1 << 20).fill(3);
  const writing = writeAll(raw, concat(hello(), messages([[enc.encode("head"), big]])));
  const z = await ZmtpConnection.open(c, { socketType: "DEALER" });
  await writing;
  let size = -1;
  const listening = z.listen((f) => {
    size = f[1].length;
    z.close();
  });
  await withTimeout(listening, 3000);
  raw.close();
  assert.equal(size, 1 << 20);
});

Deno.test("the peer resetting the connection ends listen() (resolves); a flush() pending then rejects", async () => {
  const { raw, z } = await pair();
  const listening = z.listen(() => {});
  // Fill the peer's receive buffer (it reads nothing), then close it with data unread: a RST.
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < 8; i++) z.send([chunk]);
  const flushed = z.flush().then(() => "resolved", (e) => `rejected: ${e?.name}`);
  await raw.read(new Uint8Array(1)); // data has come: closing now leaves the rest unread, a reset
  raw.close();
  const how = await withTimeout(listening.then(() => "resolved", (e) => `rejected: ${e}`), 3000);
  assert.equal(how, "resolved");
  assert.match(String(await flushed), /rejected/);
  assert.ok(z.closed);
});

Deno.test("what onMessage throws rejects listen() with it, and closes; nothing is delivered after", async () => {
  const { raw, z } = await pair();
  const got: string[] = [];
  const oops = new Error("oops");
  const listening = z.listen((f) => {
    got.push(dec.decode(f[0]));
    throw oops;
  });
  await writeAll(raw, messages([[enc.encode("a")], [enc.encode("b")]]));
  await assert.rejects(withTimeout(listening, 2000), (e) => e === oops);
  assert.ok(z.closed);
  assert.deepEqual(got, ["a"]);
  raw.close();
});

Deno.test("a message in the same read as READY that breaks the limits fails open()", async () => {
  const { raw, c } = await tcpPair();
  // READY then a message of MORE frames that never ends and crosses maxFrames.
  const many = new Uint8Array(2 * 2000);
  for (let i = 0; i < many.length; i += 2) many[i] = FLAG_MORE;
  await writeAll(raw, concat(hello(), many));
  await assert.rejects(ZmtpConnection.open(c, { socketType: "DEALER" }), /more than 1024 frames/);
  raw.close();
});

// --- TCP_NODELAY on both sides, read back with getsockopt(2) -----------------------------------

const libc = Deno.dlopen("libc.so.6", {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
});

/** The fd of this process's TCP socket from local port `lp` to remote port `rp`. */
function fdOf(lp: number, rp: number): number {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, "0");
  let inode = "";
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (f[1].endsWith(`:${hex(lp)}`) && f[2].endsWith(`:${hex(rp)}`)) inode = f[9];
  }
  assert.ok(inode, `no socket ${lp}->${rp}`);
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`) === `socket:[${inode}]`) return Number(e.name);
    } catch { /* gone */ }
  }
  throw new Error(`no fd for inode ${inode}`);
}
function noDelay(fd: number): number {
  const v = new Int32Array(1), len = new Uint32Array([4]);
  assert.equal(libc.symbols.getsockopt(fd, 6, /* IPPROTO_TCP */ 1, /* TCP_NODELAY */ v, len), 0);
  return v[0];
}

Deno.test("TCP_NODELAY is set on the connecting and the accepting side (getsockopt)", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const accepted = l.accept();
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const s = await accepted;
  l.close();
  const cp = (c.localAddr as Deno.NetAddr).port;
  assert.equal(noDelay(fdOf(cp, port)), 0, "control: Deno leaves Nagle on by default");
  assert.equal(noDelay(fdOf(port, cp)), 0, "control: Deno leaves Nagle on by default");
  const [zc, zs] = await Promise.all([
    ZmtpConnection.open(c, { socketType: "DEALER" }),
    ZmtpConnection.open(s, { socketType: "ROUTER" }),
  ]);
  assert.equal(noDelay(fdOf(cp, port)), 1, "connecting side");
  assert.equal(noDelay(fdOf(port, cp)), 1, "accepting side");
  zc.close();
  zs.close();
});

/**
 * Opens ZMTP on both ends of a connection (`c` as `types[0]`, `s` as `types[1]`), sends `text` from
 * `c`, and returns what `s` got (its listen ended by the first message; 5 s at most).
 */
async function oneAcross(
  c: Deno.Conn,
  s: Deno.Conn,
  types: ["PUSH", "PULL"] | ["DEALER", "ROUTER"],
  text: string,
): Promise<string[]> {
  const [zc, zs] = await Promise.all([
    ZmtpConnection.open(c, { socketType: types[0] }),
    ZmtpConnection.open(s, { socketType: types[1] }),
  ]);
  const got: string[] = [];
  const listening = zs.listen((f) => {
    got.push(dec.decode(f[0]));
    zs.close();
  });
  zc.send([enc.encode(text)]);
  await zc.flush();
  const ended = await withTimeout(listening, 5000);
  zc.close();
  zs.close();
  assert.notEqual(ended, TIMED_OUT, `nothing came across (${types.join(" to ")})`);
  return got;
}

Deno.test("over a Unix socket open() does not touch setNoDelay on either side, and a message crosses", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/s`;
  const l = Deno.listen({ transport: "unix", path });
  const accepted = l.accept();
  const c = await Deno.connect({ transport: "unix", path });
  const s = await accepted;
  l.close();
  assert.deepEqual(await oneAcross(c, s, ["PUSH", "PULL"], "u"), ["u"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("queuedBytes is 0 after close() dropped what was queued", async () => {
  const { raw, z } = await pair();
  z.send([new Uint8Array(1000)]);
  z.close();
  raw.close();
  assert.equal(z.queuedBytes, 0, `queuedBytes ${z.queuedBytes} after close() dropped the queue`);
});

Deno.test("open() over TLS (a connection that says tcp and has no setNoDelay), both sides", async () => {
  const dir = new URL("./testdata/tls/", import.meta.url);
  const read = (f: string) => Deno.readTextFileSync(new URL(f, dir));
  const l = Deno.listenTls({ hostname: "localhost", port: 0, cert: read("cert.pem"), key: read("key.pem") });
  const port = (l.addr as Deno.NetAddr).port;
  const accepted = l.accept();
  const c = await Deno.connectTls({ hostname: "localhost", port, caCerts: [read("ca.pem")] });
  const s = await accepted;
  l.close();
  assert.deepEqual(await oneAcross(c, s, ["DEALER", "ROUTER"], "over tls"), ["over tls"]);
});
