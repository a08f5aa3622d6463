import assert from "node:assert/strict";
import { parseActionKey } from "../src/topic/action_key.ts";
import {
  decodeHeader,
  decodeValues,
  doneTopic,
  encodeHeader,
  errorTopic,
  formatTopic,
  isFinal,
  parseTopic,
  publicationJson,
  subscriptionPrefix,
  toPublication,
  utf8,
} from "../src/wire/protocol.ts";

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
