import assert from "node:assert/strict";
import { parseActionKey } from "../src/topic/action_key.ts";
import { buildCatalog } from "../src/topic/catalog.ts";
import { candidates, explainKey, resolveKey } from "../src/topic/resolve.ts";

const KEY = parseActionKey("Snd?Ctx?Act");
// One mapping entry per rule; rule N's entry exists only when its lookup is present.
const ALL = ["Snd?Ctx?Act", "Snd??Act", "?Ctx?Act", "Snd?Ctx?", "Snd??", "??Act", "?Ctx?"];

Deno.test("candidates follow the seven rules in order", () => {
  assert.deepEqual(candidates(KEY).map((c) => c.lookup), ALL);
  assert.deepEqual(candidates(KEY).map((c) => c.pattern), [
    "s?c?a",
    "s??a",
    "?c?a",
    "s?c?",
    "s??",
    "??a",
    "?c?",
  ]);
});

Deno.test("each of the seven rules wins when it is the highest present", async (t) => {
  for (let rule = 1; rule <= 7; rule++) {
    await t.step(`rule ${rule}`, () => {
      // Present: this rule's lookup and every lower-precedence one.
      const mapping = new Map(ALL.slice(rule - 1).map((k) => [k, `target-${k}`]));
      const r = resolveKey(mapping, KEY);
      assert.equal(r?.rule, rule);
      assert.equal(r?.entry, `target-${ALL[rule - 1]}`);
    });
  }
});

Deno.test("decorators play no part in lookup", () => {
  const mapping = new Map([["Snd?Ctx?Act", "x"]]);
  assert.equal(resolveKey(mapping, parseActionKey("Snd?Ctx@PUBLISH?Act"))?.rule, 1);
});

Deno.test("nothing found is undefined, with every candidate listed by explain", () => {
  const e = explainKey(new Map([["Other??", 1]]), KEY);
  assert.equal(e.resolution, undefined);
  assert.equal(e.tried.length, 7);
  assert.ok(e.tried.every((t) => !t.found));
  assert.equal(resolveKey(new Map(), KEY), undefined);
});

Deno.test("explain marks every existing candidate and picks the first", () => {
  const e = explainKey(new Map([["??Act", "a"], ["?Ctx?", "b"]]), KEY);
  assert.equal(e.resolution?.rule, 6);
  assert.deepEqual(e.tried.filter((t) => t.found).map((t) => t.rule), [6, 7]);
});

Deno.test("resolution against a loaded catalog: the corpus's contexts", () => {
  const c = buildCatalog([{
    file: "m.ini",
    text: "[actionmapping]\n?MEMORY?Convert = mem\n?CACHING?Convert = cache\n??Convert = default\n",
  }]);
  assert.equal(resolveKey(c.mappings, parseActionKey("S?CACHING?Convert"))?.entry.target, "cache");
  assert.equal(resolveKey(c.mappings, parseActionKey("S?DATABASE?Convert"))?.entry.target, "default");
});
