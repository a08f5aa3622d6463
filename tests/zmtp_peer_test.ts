/**
 * The ZMTP connection against a peer driven by hand over TCP loopback (from an outside review):
 * close() while reading, ERROR, handshakes trickled or stalled, oversize READYs, kept frames,
 * flush() and send() around close(), messages of very many frames, PING contexts.
 */
import assert from "node:assert/strict";
import { ZmtpConnection } from "../src/zmtp/connection.ts";
import {
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

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Greeting + READY of a ROUTER peer. */
function hello(type = "ROUTER"): Uint8Array {
  return cat(encodeGreeting(), encodeCommand("READY", encodeProperties({ "Socket-Type": type })));
}

function messages(list: Uint8Array[][]): Uint8Array {
  const w = new FrameWriter();
  for (const m of list) w.add(m);
  return w.take();
}

async function writeAll(c: Deno.Conn, b: Uint8Array) {
  for (let at = 0; at < b.length;) at += await c.write(b.subarray(at));
}

/** A raw TCP peer: `script` drives the accepted connection; the ZMTP side is a DEALER client. */
async function rawPeer<T>(
  script: (c: Deno.Conn) => Promise<T>,
  open: (port: number) => Promise<ZmtpConnection | unknown>,
) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const server = (async () => {
    const c = await l.accept();
    try {
      return await script(c);
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
    await sleep(200);
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
    await writeAll(c, cat(hello(), messages([[enc.encode("early")]])));
    await sleep(100);
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
      cat(encodeGreeting(), encodeCommand("ERROR", cat(new Uint8Array([reason.length]), reason))),
    );
    await sleep(100);
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
    await sleep(50);
    await writeAll(c, encodeCommand("ERROR", cat(new Uint8Array([reason.length]), reason)));
    await sleep(100);
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  await assert.rejects(z.listen(() => {}), /the peer sent ERROR: bye/);
  assert.ok(z.closed);
  await server;
});

Deno.test("a handshake trickled one octet per write completes, and its message arrives", async () => {
  const all = cat(hello(), messages([[enc.encode("x"), new Uint8Array(300).fill(5)]]));
  const { client, server } = await rawPeer(async (c) => {
    for (let i = 0; i < all.length; i++) {
      await writeAll(c, all.subarray(i, i + 1));
      if (i % 8 === 0) await sleep(1);
    }
    await sleep(100);
  }, (p) => dealer(p));
  assert.ok(client.ok, String((client as { e?: unknown }).e));
  const z = client.v as ZmtpConnection;
  const got: Uint8Array[][] = [];
  await z.listen((f) => got.push(f));
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
    await writeAll(c, cat(encodeGreeting(), head));
    try {
      for (let i = 0; i < 64; i++) await writeAll(c, new Uint8Array(16 * 1024));
    } catch { /* refused */ }
    await sleep(50);
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
    await sleep(200);
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const kept: Uint8Array[][] = [];
  await z.listen((f) => kept.push(f)); // kept as handed out, no copy
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
    await sleep(100);
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
    await writeAll(c, cat(messages([[enc.encode("a")]]), encodeCommand("PING", new Uint8Array([0, 10, 1]))));
    await sleep(200);
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
    await sleep(100);
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
  const { client, server } = await rawPeer(async (c) => {
    await writeAll(c, hello());
    await writeAll(c, encodeCommand("PING", cat(new Uint8Array([0, 0]), new Uint8Array(20).fill(9))));
    const reader = new FrameReader(1 << 20);
    const buf = new Uint8Array(4096);
    let skip = GREETING_SIZE;
    const cmds: string[] = [];
    while (!cmds.some((x) => x.startsWith("PONG"))) {
      const n = await withTimeout(c.read(buf), 2000);
      if (n === TIMED_OUT || n === null) break;
      let piece = buf.slice(0, n);
      const d = Math.min(skip, piece.length);
      skip -= d;
      piece = piece.subarray(d);
      reader.push(piece, (x) => {
        if (x.command) {
          const { name, data } = decodeCommand(x.body);
          cmds.push(`${name} ${data.length}`);
        }
      });
    }
    return cmds;
  }, (p) => dealer(p));
  assert.ok(client.ok);
  const z = client.v as ZmtpConnection;
  const listening = z.listen(() => {});
  const cmds = await server;
  assert.ok(cmds.includes("PONG 16"), JSON.stringify(cmds));
  z.close();
  await listening;
});
