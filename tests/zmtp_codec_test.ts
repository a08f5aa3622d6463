import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compatible,
  decodeCommand,
  type Decoded,
  decodeGreeting,
  decodeProperties,
  encodeCommand,
  encodeGreeting,
  encodeProperties,
  FLAG_COMMAND,
  FLAG_LONG,
  FLAG_MORE,
  FrameReader,
  FrameWriter,
  GREETING_SIZE,
  isSocketType,
  ZmtpError,
  type ZmtpSocketType,
} from "../src/zmtp/codec.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const frames = (...sizes: number[]) => sizes.map((n) => new Uint8Array(n).fill(n & 0xff));

/** Everything `reader` decodes from `pieces`, in order. */
function decodeAll(reader: FrameReader, pieces: Uint8Array[]): Decoded[] {
  const got: Decoded[] = [];
  for (const p of pieces) reader.push(p, (d) => got.push(d));
  return got;
}

Deno.test("a greeting is 64 octets, version 3.1, and reads back", () => {
  const g = encodeGreeting();
  assert.equal(g.length, GREETING_SIZE);
  assert.deepEqual([g[0], g[9], g[10], g[11]], [0xff, 0x7f, 3, 1]);
  assert.deepEqual(decodeGreeting(g), { version: [3, 1], mechanism: "NULL", asServer: false });
  assert.deepEqual(decodeGreeting(encodeGreeting("CURVE", true)), {
    version: [3, 1],
    mechanism: "CURVE",
    asServer: true,
  });
});

Deno.test("a greeting with a bad signature or a version before 3 is refused", () => {
  const g = encodeGreeting();
  g[9] = 0;
  assert.throws(() => decodeGreeting(g), ZmtpError);
  const old = encodeGreeting();
  old[10] = 2;
  assert.throws(() => decodeGreeting(old), /ZMTP before 3\.0 \(revision octet 2\)/);
  const later = encodeGreeting();
  later[11] = 7; // a later minor version is accepted (RFC 37)
  assert.deepEqual(decodeGreeting(later).version, [3, 7]);
});

Deno.test("READY's metadata reads back, names without case, values of any size", () => {
  const big = new Uint8Array(70_000).fill(9);
  const data = encodeProperties({
    "Socket-Type": "DEALER",
    Identity: enc.encode("w1"),
    "X-Big": big,
    "X-Empty": "",
  });
  const frame = encodeCommand("READY", data);
  assert.equal(frame[0], FLAG_COMMAND | FLAG_LONG);
  const [got] = decodeAll(new FrameReader(1 << 20), [frame]);
  assert.ok(got.command);
  const { name, data: back } = decodeCommand(got.body);
  assert.equal(name, "READY");
  const props = decodeProperties(back);
  assert.equal(dec.decode(props.get("socket-type")), "DEALER");
  assert.equal(dec.decode(props.get("identity")), "w1");
  assert.deepEqual(props.get("x-big"), big);
  assert.equal(props.get("x-empty")?.length, 0);
});

Deno.test("malformed metadata is a ZmtpError, not a read past the end", () => {
  const good = encodeProperties({ "Socket-Type": "PUSH" });
  for (let cut = 1; cut < good.length; cut++) {
    assert.throws(() => decodeProperties(good.subarray(0, cut)), ZmtpError, `cut at ${cut}`);
  }
  assert.throws(() => decodeProperties(new Uint8Array([0, 0, 0, 0, 0])), /a name/);
});

Deno.test("the socket-type table is RFC 37's: every pair of the 11 types, both ways", () => {
  // RFC 37's table, row by row: the peers each type may talk to.
  const rfc: Record<ZmtpSocketType, ZmtpSocketType[]> = {
    REQ: ["REP", "ROUTER"],
    REP: ["REQ", "DEALER"],
    DEALER: ["REP", "DEALER", "ROUTER"],
    ROUTER: ["REQ", "DEALER", "ROUTER"],
    PUB: ["SUB", "XSUB"],
    XPUB: ["SUB", "XSUB"],
    SUB: ["PUB", "XPUB"],
    XSUB: ["PUB", "XPUB"],
    PUSH: ["PULL"],
    PULL: ["PUSH"],
    PAIR: ["PAIR"],
  };
  const types = Object.keys(rfc) as ZmtpSocketType[];
  for (const a of types) {
    assert.ok(isSocketType(a));
    for (const b of types) {
      assert.equal(compatible(a, b), rfc[a].includes(b), `${a} with ${b}`);
      assert.equal(compatible(a, b), compatible(b, a), `${a} and ${b} agree`);
    }
  }
  assert.ok(!isSocketType("STREAM") && !isSocketType("dealer"));
});

const frameArb = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.integer({ min: 250, max: 70_000 }).map((n) => new Uint8Array(n).fill(n & 0xff)),
);
const itemArb = fc.oneof(
  { weight: 4, arbitrary: fc.array(frameArb, { minLength: 1, maxLength: 4 }).map((frames) => ({ frames })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 20 }).map((data) => ({ command: data })) },
);

Deno.test("messages and commands come back whole and in order, however the stream is cut", () => {
  fc.assert(
    fc.property(fc.array(itemArb, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 8 }), (items, cuts) => {
      const w = new FrameWriter(16); // small, so that it grows
      for (const it of items) {
        if ("frames" in it) w.add(it.frames);
        else w.addRaw(encodeCommand("PING", it.command));
      }
      const stream = w.take();
      assert.equal(w.size, 0);
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const pieces: Uint8Array[] = [];
      let from = 0;
      for (const p of [...points, stream.length]) {
        // Each piece in memory of its own, as reads into fresh memory give them.
        pieces.push(stream.slice(from, p));
        from = p;
      }
      const reader = new FrameReader(1 << 20);
      const got = decodeAll(reader, pieces);
      assert.equal(reader.midMessage, false);
      assert.equal(got.length, items.length);
      items.forEach((it, i) => {
        const d = got[i];
        if ("frames" in it) {
          assert.ok(!d.command);
          assert.deepEqual(d.frames.map((f) => [...f]), it.frames.map((f) => [...f]));
        } else {
          assert.ok(d.command);
          assert.deepEqual([...decodeCommand(d.body).data], [...it.command]);
        }
      });
    }),
    { numRuns: 300 },
  );
});

Deno.test("a stream cut at every octet decodes the same", () => {
  const w = new FrameWriter();
  w.add([enc.encode("topic"), new Uint8Array(0), new Uint8Array(300).fill(3)]);
  w.addRaw(encodeCommand("PING", new Uint8Array([0, 10, 1, 2])));
  w.add([new Uint8Array(256).fill(4)]);
  const stream = w.take();
  for (let cut = 0; cut <= stream.length; cut++) {
    const got = decodeAll(new FrameReader(1000), [stream.slice(0, cut), stream.slice(cut)]);
    assert.equal(got.length, 3, `cut at ${cut}`);
    assert.ok(!got[0].command && got[0].frames.length === 3 && got[0].frames[2].length === 300);
    assert.ok(got[1].command && decodeCommand(got[1].body).name === "PING");
    assert.ok(!got[2].command && got[2].frames[0].length === 256 && got[2].frames[0][255] === 4);
  }
});

Deno.test("a frame within one piece is a view into it; one across pieces is copied together", () => {
  const w = new FrameWriter();
  w.add([enc.encode("abc")]);
  const stream = w.take();
  const [whole] = decodeAll(new FrameReader(100), [stream]);
  assert.ok(!whole.command && whole.frames[0].buffer === stream.buffer);
  const [split] = decodeAll(new FrameReader(100), [stream.slice(0, 3), stream.slice(3)]);
  assert.ok(!split.command && dec.decode(split.frames[0]) === "abc");
});

Deno.test("limits that are not whole numbers of 0 or more are refused", () => {
  for (const bad of [NaN, Infinity, -1, 1.5]) {
    assert.throws(() => new FrameReader(bad), RangeError, String(bad));
    assert.throws(() => new FrameReader(100, bad), RangeError, String(bad));
    assert.throws(() => (new FrameReader(100).maxMessageSize = bad), RangeError, String(bad));
  }
});

Deno.test("a message's frames count together against the size limit, and their number against maxFrames", () => {
  const w = new FrameWriter();
  w.add(frames(60, 40)); // 100: within
  w.add(frames(60, 41)); // 101: over
  const stream = w.take();
  const got: Decoded[] = [];
  assert.throws(
    () => new FrameReader(100).push(stream, (d) => got.push(d)),
    /a message of more than 100 bytes/,
  );
  assert.equal(got.length, 1);
  const many = new FrameWriter();
  many.add(frames(0, 0, 0));
  many.add(frames(0, 0, 0, 0));
  const seen: Decoded[] = [];
  assert.throws(() => new FrameReader(100, 3).push(many.take(), (d) => seen.push(d)), /more than 3 frames/);
  assert.equal(seen.length, 1);
  // Commands are not messages: their size alone is limited.
  const cmd = new FrameWriter();
  cmd.add(frames(90));
  cmd.addRaw(encodeCommand("PING", new Uint8Array(90)));
  cmd.add(frames(90));
  assert.equal(decodeAll(new FrameReader(100), [cmd.take()]).length, 3);
});

Deno.test("violations are ZmtpErrors: reserved bits, a command with MORE or inside a message, a frame over the limit", () => {
  const r = () => new FrameReader(100);
  assert.throws(() => decodeAll(r(), [new Uint8Array([0x08, 0])]), /reserved flag bits/);
  assert.throws(
    () => decodeAll(r(), [new Uint8Array([FLAG_COMMAND | FLAG_MORE, 1, 65])]),
    /command frame with MORE/,
  );
  assert.throws(
    () => decodeAll(r(), [new Uint8Array([FLAG_MORE, 1, 65, FLAG_COMMAND, 2, 1, 65])]),
    /in the middle of a message/,
  );
  assert.throws(() => decodeAll(r(), [new Uint8Array([0, 101])]), /101 bytes, over the limit of 100/);
  const long = new Uint8Array(9);
  long[0] = FLAG_LONG;
  new DataView(long.buffer).setBigUint64(1, 2n ** 62n);
  assert.throws(() => decodeAll(r(), [long]), /over the limit/);
  // The same, arriving an octet at a time.
  assert.throws(() => decodeAll(r(), [...long].map((b) => new Uint8Array([b]))), /over the limit/);
  assert.throws(() => decodeAll(r(), [new Uint8Array([0]), new Uint8Array([101])]), /over the limit/);
});

Deno.test("a long frame's size may be under 256 (peers may use the long form)", () => {
  const f = new Uint8Array(9 + 3);
  f[0] = FLAG_LONG;
  new DataView(f.buffer).setBigUint64(1, 3n);
  f.set([7, 8, 9], 9);
  const [got] = decodeAll(new FrameReader(10), [f]);
  assert.ok(!got.command);
  assert.deepEqual([...got.frames[0]], [7, 8, 9]);
});
