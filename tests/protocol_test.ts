import assert from "node:assert/strict";
import fc from "fast-check";
import { parseActionKey } from "../src/topic/action_key.ts";
import {
  decodeHeader,
  decodeValues,
  doneTopic,
  encodeHeader,
  errorTopic,
  flatHeader,
  formatTopic,
  isFinal,
  isUtf8,
  parseTopic,
  publicationJson,
  routingKey,
  stepHeader,
  subscriptionPrefix,
  TopicMemo,
  toPublication,
  utf8,
} from "../src/wire/protocol.ts";

/** The header `stepHeader` is to write, as JSON.stringify and TextEncoder write it. */
function headerBytes(id: string, pos: number | undefined, n: number): number[] {
  return [
    ...new TextEncoder().encode(JSON.stringify(pos === undefined ? { v: 1, id, n } : { v: 1, id, pos, n })),
  ];
}

/** Runs `f` with JSON.stringify throwing: what it encodes must have been written by hand. */
function withoutStringify<T>(f: () => T): T {
  const stringify = JSON.stringify;
  JSON.stringify = () => {
    throw new Error("JSON.stringify was called");
  };
  try {
    return f();
  } finally {
    JSON.stringify = stringify;
  }
}

Deno.test("stepHeader writes the bytes encodeHeader writes, for every id and count, and never changes a view it handed out", () => {
  const ids = fc.oneof(
    fc.string({ unit: "binary", maxLength: 80 }), // any code points: quotes, backslashes, controls, U+FEFF, non-ASCII
    fc.string({
      unit: fc.constantFrom("a", "-", "_", "0", '"', "\\", " ", "~", "\u007f", "\u001f", "\n", "é"),
      maxLength: 40,
    }),
    fc.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/),
    fc.nat({ max: 6000 }).map((k) => "x".repeat(k)), // past what is written by hand (then encodeHeader)
  );
  const counts = fc.oneof(fc.nat({ max: 12 }), fc.constantFrom(9, 10, 99, 100, 1e15, 2 ** 53 - 1), fc.nat());
  const handedOut: [Uint8Array, number[]][] = [];
  let byHand = 0;
  fc.assert(
    fc.property(ids, fc.option(counts, { nil: undefined }), counts, (id, pos, n) => {
      const plain = /^[\x20-\x7e]*$/.test(id) && !/["\\]/.test(id) && id.length < 4000;
      // A plain id is written by hand (JSON.stringify is not called); any other goes through encodeHeader.
      const got = plain ? withoutStringify(() => stepHeader(id, pos, n)) : stepHeader(id, pos, n);
      if (plain) byHand++;
      const want = headerBytes(id, pos, n);
      assert.deepEqual([...got], want);
      assert.deepEqual([...encodeHeader(pos === undefined ? { v: 1, id, n } : { v: 1, id, pos, n })], want);
      handedOut.push([got, want]);
    }),
    { numRuns: 5_000, seed: 21 },
  );
  // Enough headers went the hand-written way for the comparison to test it, and past the slab's
  // end (64 KiB) several times: none of the views handed out was written over.
  assert.ok(byHand > 1_500, `${byHand} of 5000 by hand`);
  for (const [view, want] of handedOut) assert.deepEqual([...view], want);
  // Numbers JSON writes as they are; -0 as 0, like JSON.stringify.
  assert.deepEqual([...stepHeader("a", -0, 0)], [...utf8('{"v":1,"id":"a","pos":0,"n":0}')]);
  // What is not a safe whole number goes through JSON.stringify, as before.
  for (const n of [-1, 1.5, 2 ** 53, Number.NaN, Infinity]) {
    assert.deepEqual([...stepHeader("a", undefined, n)], headerBytes("a", undefined, n));
    assert.deepEqual([...stepHeader("a", n, 1)], headerBytes("a", n, 1));
  }
});

Deno.test("stepHeader at the end of the shared slab: the longest header it writes by hand fits, a byte short goes to a new slab", () => {
  // The slab is 64 KiB; utf8 writes a string of at most 4,096 / 3 characters into it, a short
  // ASCII one taking its length, and starts a new slab when 3 bytes a character would not fit.
  const SLAB = 64 * 1024;
  const fresh = () => {
    for (let i = 0; i < 100; i++) if (utf8("f".repeat(1365)).byteOffset === 0) return 1365;
    throw new Error("no new slab");
  };
  const fillTo = (offset: number) => {
    let at = fresh();
    while (at < offset) {
      const k = Math.min(32, offset - at);
      const v = utf8("f".repeat(k));
      assert.equal(v.byteOffset, at);
      at += k;
    }
  };
  const M = Number.MAX_SAFE_INTEGER;
  for (const length of [1, 300, 4_000]) {
    const id = "a".repeat(length);
    // The most a hand-written header takes: the id, two numbers of 16 digits, keys and braces.
    const longest = headerBytes(id, M, M).length;
    for (let slack = -3; slack <= 3; slack++) {
      for (const pos of [M, undefined]) {
        fillTo(SLAB - longest - slack - 1);
        const before = utf8("b"); // the last byte before the header: `longest + slack` bytes are left
        const got = withoutStringify(() => stepHeader(id, pos, M));
        assert.deepEqual([...got], headerBytes(id, pos, M), `length ${length}, slack ${slack}`);
        // In the same slab when the longest header fits in what is left, else at the start of a new one.
        assert.equal(got.buffer === before.buffer, slack >= 0, `length ${length}, slack ${slack}`);
        if (slack >= 0) assert.equal(got.byteOffset, before.byteOffset + 1);
        else assert.equal(got.byteOffset, 0);
        assert.equal(before[0], 0x62, "the view before it is unchanged");
        assert.ok(got.byteOffset + got.length <= got.buffer.byteLength);
      }
    }
  }
});

Deno.test("topics: five fields joined by ~", () => {
  assert.equal(formatTopic("F", parseActionKey("S?C@PUBLISH?A")), "F~PUBLISH~S~C~A");
  assert.equal(doneTopic("F"), "F~~~~done");
  assert.equal(errorTopic("F"), "F~~~~error");
  assert.deepEqual(parseTopic("F~PUBLISH~S~C~A"), {
    flow: "F",
    decorator: "PUBLISH",
    sender: "S",
    context: "C",
    action: "A",
  });
  assert.equal(parseTopic("F~~~done"), undefined);
  assert.equal(parseTopic("F~~~~~done"), undefined);
});

Deno.test("subscription prefixes end at a delimiter", () => {
  assert.equal(subscriptionPrefix("Flow"), "Flow~");
  assert.ok(!"FlowX~~~~done".startsWith(subscriptionPrefix("Flow")));
  assert.equal(subscriptionPrefix("Flow", "PUBLISH"), "Flow~PUBLISH~");
});

Deno.test("headers: version, id and integer positions are checked", () => {
  assert.deepEqual(decodeHeader(encodeHeader({ v: 1, id: "x", pos: 2, n: 1 })), {
    v: 1,
    id: "x",
    pos: 2,
    n: 1,
  });
  for (
    const bad of [
      "",
      "nope",
      "[]",
      "null",
      '{"id":"x"}',
      '{"v":2,"id":"x"}',
      '{"v":1}',
      '{"v":1,"id":""}',
      '{"v":1,"id":"x","pos":-1}',
      '{"v":1,"id":"x","pos":1.5}',
      `{"v":1,"id":"${"x".repeat(201)}"}`,
    ]
  ) {
    assert.equal(decodeHeader(utf8(bad)), "bad_header", bad);
  }
});

Deno.test("headers: the byte-level reader gives what JSON.parse gives, or leaves the header to it", () => {
  const keys = fc.constantFrom(
    ...["v", "id", "pos", "n", "k", "resume", "r", "keep", "replay", "refused", "s", "t"],
    ...["", "x", "ID", "__proto__", "constructor", "error", 'i\\"d', "p\\u006fs", "é"],
  );
  const values = fc.oneof(
    fc.nat().map(String),
    fc.constantFrom("0", "01", "-1", "-0", "1.5", "1e3", "1E3", "123456789012345", "1234567890123456"),
    fc.constantFrom("true", "null", "{}", "[]", '{"code":"x"}', '"', '"\\"', '""'),
    fc.string({ unit: "binary", maxLength: 300 }).map((s) => JSON.stringify(s)), // escapes, non-ASCII
    fc.string({ maxLength: 300 }).map((s) => `"${s}"`), // raw: quotes and backslashes inside
  );
  const object = fc.array(fc.tuple(keys, values), { maxLength: 6 })
    .map((kvs) => `{${kvs.map(([k, v]) => `"${k}":${v}`).join(",")}}`);
  const text = fc.oneof(
    { weight: 6, arbitrary: object },
    object.map((h) => h.replace(",", ", ")), // whitespace
    object.map((h) => h.replace("}", ",}")), // a trailing comma
    object.map((h) => `${h} `),
    object.chain((h) => fc.nat(h.length).map((n) => h.slice(0, n))), // cut short
    fc.string(),
  );
  let read = 0;
  fc.assert(
    fc.property(text, (s) => {
      const bytes = new TextEncoder().encode(s);
      const flat = flatHeader(bytes);
      if (flat === undefined) return;
      read++;
      const parsed = JSON.parse(s); // a header read here is valid JSON
      assert.deepStrictEqual(flat, parsed);
      assert.equal(JSON.stringify(flat), JSON.stringify(parsed)); // the same key order
    }),
    { numRuns: 20_000, seed: 23 },
  );
  // The usual headers are read without JSON.parse (else the comparison above would prove nothing).
  assert.ok(read > 1_500, `read ${read} of 20000`);
  for (const h of ['{"v":1,"id":"b3_12"}', '{"v":1,"id":"c-1","pos":2,"n":1,"s":"0123abcd","t":7}']) {
    assert.deepStrictEqual(flatHeader(utf8(h)), JSON.parse(h));
  }
  for (const h of ['{"v":1,"id":"é"}', '{"v":1,"id":"a\\"b"}', '{"v":1,"__proto__":{"x":1}}', '{ "v":1}']) {
    assert.equal(flatHeader(utf8(h)), undefined, h);
  }
  // Over 512 bytes, a header is left to JSON.parse (which copies its strings: a short id sliced
  // from a padded header would keep the whole header alive).
  const padded = `{"v":1,"id":"${"p".repeat(600)}","id":"request-000000"}`;
  assert.equal(flatHeader(utf8(padded)), undefined);
  assert.deepEqual(decodeHeader(utf8(padded)), { v: 1, id: "request-000000" });
  // Left to JSON.parse, a header reads as before.
  assert.deepEqual(decodeHeader(utf8('{ "v": 1, "id": "é" }')), { v: 1, id: "é" });
});

Deno.test("values must be a JSON object", () => {
  assert.deepEqual(decodeValues(utf8('{"a":1}')), { a: 1 });
  for (const bad of ["", "1", "[1]", "null", "{"]) assert.equal(decodeValues(utf8(bad)), "bad_json", bad);
});

Deno.test("publications: the JSON shape of SPEC §5, error and resume when present", () => {
  const p = toPublication([
    utf8("F~~~~error"),
    encodeHeader({ v: 1, id: "r1", error: { code: "timeout", message: "slow" } }),
    utf8('{"a":1}'),
  ]);
  assert.ok(typeof p !== "string");
  assert.deepEqual(publicationJson(p), {
    topic: "F~~~~error",
    flow: "F",
    sender: "",
    context: "",
    decorator: "",
    action: "error",
    id: "r1",
    values: { a: 1 },
    error: { code: "timeout", message: "slow" },
  });
  assert.ok(isFinal(p));
  const step = toPublication([
    utf8("F~PUBLISH~S~C~done"),
    encodeHeader({ v: 1, id: "r1", pos: 2 }),
    utf8("{}"),
  ]);
  assert.ok(
    typeof step !== "string" && !isFinal(step),
    "an action named done on a decorated step is not final",
  );
  assert.equal(toPublication([utf8("F~~~~done"), utf8("{}")]), "frame_count");
  assert.equal(toPublication([utf8("F~done"), encodeHeader({ v: 1, id: "r" }), utf8("{}")]), "bad_topic");
});

Deno.test("utf8: short strings are views that never overlap; long ones are their own buffers", () => {
  const dec = new TextDecoder();
  const made = Array.from({ length: 5000 }, (_, i) => [`s-${i}-é`, utf8(`s-${i}-é`)] as const);
  for (const [s, b] of made) assert.equal(dec.decode(b), s);
  const long = "x".repeat(20_000);
  assert.equal(utf8(long).byteLength, 20_000);
  assert.equal(utf8(long).byteOffset, 0);
});

Deno.test("utf8: the same bytes as TextEncoder, whether a string is ASCII, not, or turns non-ASCII late", () => {
  const enc = new TextEncoder();
  const alphabet = ["a", "~", "{", '"', "0", "\u007f", "é", "€", "😀"];
  let seed = 7;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; // a fixed LCG; its high bits are the random ones
    return (seed >>> 16) % n;
  };
  const made: [string, Uint8Array][] = [];
  for (let i = 0; i < 20_000; i++) {
    const len = rnd(100);
    let s = "";
    for (let j = 0; j < len; j++) s += alphabet[rnd(i % 3 === 0 ? alphabet.length : 6)];
    made.push([s, utf8(s)]);
  }
  // Checked after all were made: later strings must not have overwritten earlier ones.
  for (const [s, b] of made) assert.deepEqual([...b], [...enc.encode(s)], JSON.stringify(s));
});

Deno.test("TopicMemo.getBytes: the value of the topic's text; the same bytes again skip the decoding", () => {
  const made: string[] = [];
  const memo = new TopicMemo((t) => {
    made.push(t);
    return t.toUpperCase();
  });
  const a = new TextEncoder().encode("A~~~~x");
  assert.equal(memo.getBytes(a), "A~~~~X");
  assert.equal(memo.getBytes(a.slice()), "A~~~~X");
  a[0] = 0x42; // the caller's buffer reused (a socket's slab): the memo kept its own copy
  assert.equal(memo.getBytes(a), "B~~~~X", "same length, other bytes");
  assert.equal(memo.getBytes(utf8("é~~~~x")), "É~~~~X");
  assert.equal(memo.getBytes(utf8("A~~~~x")), "A~~~~X", "from the memo by text");
  assert.deepEqual(made, ["A~~~~x", "B~~~~x", "é~~~~x"]);
});

Deno.test("routing keys: two ids are one key only when they are the same bytes; UTF-8 ids read as their text", () => {
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 12 }),
    fc.string({ unit: "grapheme", maxLength: 6 }).map((t) => new TextEncoder().encode(t)),
    // libzmq's own ids: a 0 and a counter
    fc.integer({ min: 0, max: 0xffffffff }).map((n) =>
      new Uint8Array([0, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255])
    ),
  );
  fc.assert(
    fc.property(bytes, bytes, (a, b) => {
      let valid = true;
      try {
        strict.decode(a);
      } catch {
        valid = false;
      }
      assert.equal(isUtf8(a), valid, `isUtf8 of ${[...a]}`);
      if (valid) assert.equal(routingKey(a), strict.decode(a));
      const same = a.length === b.length && a.every((x, i) => x === b[i]);
      assert.equal(routingKey(a) === routingKey(b), same, `${[...a]} and ${[...b]}`);
    }),
    { numRuns: 5000 },
  );
  // Edge cases of UTF-8 that a loose check lets through: overlong, surrogate, past U+10FFFF, cut short.
  for (
    const bad of [[0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [
      0xe2,
      0x82,
    ]]
  ) {
    assert.equal(isUtf8(new Uint8Array(bad)), false, `${bad}`);
  }
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x61]);
  assert.notEqual(routingKey(bom), routingKey(new Uint8Array([0x61])), "a leading U+FEFF is kept");
  assert.equal(routingKey(new TextEncoder().encode("wörker-7")), "wörker-7");
  // An id that is not UTF-8, one character per byte, against the UTF-8 text of those characters:
  // [0xc3] would read "Ã", as [0xc3, 0x83] does.
  assert.notEqual(routingKey(new Uint8Array([0xc3])), routingKey(new Uint8Array([0xc3, 0x83])));
});
