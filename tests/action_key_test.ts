import assert from "node:assert/strict";
import {
  ActionKeySyntaxError,
  DONE_KEY,
  flowNameErrorColumn,
  formatActionKey,
  isDone,
  keysMatch,
  lookupKey,
  parseActionKey,
  tryParseActionKey,
} from "../src/topic/action_key.ts";

Deno.test("parse: all four fields", () => {
  assert.deepEqual(parseActionKey("Subject?IAM@PUBLISH?Connect"), {
    sender: "Subject",
    context: "IAM",
    decorator: "PUBLISH",
    action: "Connect",
  });
});

Deno.test("parse: any field may be empty", () => {
  assert.deepEqual(parseActionKey("??"), { sender: "", context: "", decorator: "", action: "" });
  assert.deepEqual(parseActionKey("?C?"), { sender: "", context: "C", decorator: "", action: "" });
  assert.deepEqual(parseActionKey("S??"), { sender: "S", context: "", decorator: "", action: "" });
});

Deno.test("parse: decorator with an empty context", () => {
  assert.deepEqual(parseActionKey("?@ASYNC?go"), {
    sender: "",
    context: "",
    decorator: "ASYNC",
    action: "go",
  });
});

Deno.test("parse: the corpus's '^', '_' and '-' are field characters", () => {
  const k = parseActionKey("?^Component^RequiredAlfaVersion?POSTComponentRequiredAlfaVersion");
  assert.equal(k.context, "^Component^RequiredAlfaVersion");
  assert.equal(parseActionKey("a-b?c_d?e-9").action, "e-9");
});

Deno.test("parse errors name the character and its column", async (t) => {
  const cases: [string, number, RegExp][] = [
    ["", 1, /empty key/],
    ["Push", 5, /found none/],
    ["A?B", 4, /found one/],
    ["A?B?C?D", 6, /third '\?'/],
    ["A?B C?D", 4, /invalid character ' ' \(space\)/],
    ["A?B?C.D", 6, /invalid character '\.'/],
    ["A?B~x?D", 4, /invalid character '~'/],
    ["A@X?B?C", 2, /before the first '\?'/],
    ["A?B?C@X", 6, /after the second '\?'/],
    ["A?B@X@Y?C", 6, /second '@'/],
    ["A?B@?C", 4, /empty decorator/],
    ["A?B\t?C", 4, /tab/],
  ];
  for (const [text, column, reason] of cases) {
    await t.step(JSON.stringify(text), () => {
      const r = tryParseActionKey(text);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.column, column);
      assert.match(r.reason, reason);
      const e = assert.throws(() => parseActionKey(text), ActionKeySyntaxError);
      void e;
      assert.throws(() => parseActionKey(text), new RegExp(`column ${column}`));
    });
  }
});

Deno.test("format is the inverse of parse", () => {
  for (const text of ["S?C@D?A", "??done", "?C?", "S??A", "?@PUBLISH?x", "a^b?c-d@e_f?g"]) {
    assert.equal(formatActionKey(parseActionKey(text)), text);
  }
});

Deno.test("match: equal or at least one empty, field by field", () => {
  const k = parseActionKey;
  assert.ok(keysMatch(k("S?C@D?A"), k("S?C@D?A")));
  assert.ok(keysMatch(k("??A"), k("S?C@D?A")));
  assert.ok(keysMatch(k("S?C@D?A"), k("??")));
  assert.ok(keysMatch(k("S??A"), k("?C?A")));
  assert.ok(!keysMatch(k("S?C?A"), k("T?C?A")), "sender differs");
  assert.ok(!keysMatch(k("S?C?A"), k("S?X?A")), "context differs");
  assert.ok(!keysMatch(k("S?C@PUBLISH?A"), k("S?C@ASYNC?A")), "decorator differs");
  assert.ok(keysMatch(k("S?C@PUBLISH?A"), k("S?C?A")), "empty decorator is a wildcard");
  assert.ok(!keysMatch(k("S?C?A"), k("S?C?B")), "action differs");
});

Deno.test("done key", () => {
  assert.ok(isDone(parseActionKey("??done")));
  assert.deepEqual(parseActionKey("??done"), DONE_KEY);
  assert.ok(!isDone(parseActionKey("S??done")));
  assert.ok(!isDone(parseActionKey("?@ASYNC?done")));
});

Deno.test("lookup key drops the decorator", () => {
  assert.equal(lookupKey(parseActionKey("S?C@PUBLISH?A")), "S?C?A");
});

Deno.test("flow names: no '~' (topic separator), no spaces", () => {
  assert.equal(flowNameErrorColumn("ServiceManagement_GetServiceTopics"), 0);
  assert.equal(flowNameErrorColumn("a.b-c^d"), 0);
  assert.equal(flowNameErrorColumn("a~b"), 2);
  assert.equal(flowNameErrorColumn("my flow"), 3);
  assert.equal(flowNameErrorColumn(""), 1);
});
