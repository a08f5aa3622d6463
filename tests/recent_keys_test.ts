import assert from "node:assert/strict";
import { RecentKeys } from "../src/roles/recent_keys.ts";

Deno.test("RecentKeys: a key repeated within the window is seen; position, step count and resume token tell keys apart", () => {
  const r = new RecentKeys(100);
  assert.equal(r.seen("a"), false);
  assert.equal(r.seen("a"), true);
  assert.equal(r.seen("a", 0), false, "pos 0 is not an absent pos");
  assert.equal(r.seen("a", 1, 2), false);
  assert.equal(r.seen("a", 2, 1), false);
  assert.equal(r.seen("a", 1, 2), true);
  assert.equal(r.seen("a", undefined, undefined, "F~tok~a"), false);
  assert.equal(r.seen("a", undefined, undefined, "F~tok~a"), true);
  assert.equal(r.seen("a", undefined, undefined, ""), false, "an empty token is not an absent one");
  assert.equal(r.seen("a1"), false);
  assert.equal(r.seen("a", 1), false, '"a" then 1 is not "a1"');
  assert.equal(r.size, 8);
});

Deno.test("RecentKeys: the oldest key is forgotten once the window is full, the others are kept", () => {
  const r = new RecentKeys(3);
  for (const k of ["a", "b", "c"]) assert.equal(r.seen(k), false);
  assert.equal(r.seen("d"), false); // forgets "a"
  assert.equal(r.size, 3);
  assert.equal(r.seen("b"), true);
  assert.equal(r.seen("c"), true);
  assert.equal(r.seen("d"), true);
  assert.equal(r.seen("a"), false, "a left the window");
});

Deno.test("RecentKeys: agrees with a Set and a ring over 200,000 random keys (probe runs, wrap-around, back-shifts)", () => {
  // A small window in a small table, keys drawn from a small range: long probe runs and many
  // deletions that shift entries back, across the table's end.
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (const window of [1, 7, 50, 300]) {
    const r = new RecentKeys(window);
    const set = new Set<string>();
    const ring: string[] = [];
    for (let op = 0; op < 50_000; op++) {
      const id = `k${Math.floor(rand() * window * 3)}`;
      const expected = set.has(id);
      assert.equal(r.seen(id), expected, `window ${window}, op ${op}, ${id}`);
      if (!expected) {
        if (ring.length === window) set.delete(ring.shift()!);
        ring.push(id);
        set.add(id);
      }
    }
    assert.equal(r.size, set.size);
  }
});

Deno.test("RecentKeys: 1,000,000 distinct ids through a window of 100,000 are never taken for duplicates", () => {
  const r = new RecentKeys(100_000);
  let seen = 0;
  for (let i = 0; i < 1_000_000; i++) if (r.seen(`b1_${i}`, 1, 0)) seen++;
  assert.equal(seen, 0);
  assert.equal(r.seen("b1_999999", 1, 0), true);
  assert.equal(r.seen("b1_899999", 1, 0), false, "out of the window by now");
});

Deno.test("RecentKeys: forgetLast forgets the key the last seen() remembered, and nothing else; agrees with a model over 200,000 random operations", () => {
  const r = new RecentKeys(3);
  r.seen("a");
  r.forgetLast();
  assert.equal(r.size, 0);
  assert.equal(r.seen("a"), false, "forgotten: not a duplicate");
  assert.equal(r.seen("a"), true);
  r.forgetLast(); // the last seen() found its key: nothing to forget
  assert.equal(r.seen("a"), true);
  r.seen("b");
  r.forgetLast();
  r.forgetLast(); // once only
  assert.equal(r.seen("a"), true, "an earlier key stays");
  // A key pushed out by the one forgotten stays out.
  r.seen("b");
  r.seen("c");
  r.seen("d"); // pushes "a" out
  r.forgetLast();
  assert.equal(r.size, 2);
  assert.equal(r.seen("a"), false);
  assert.deepEqual([r.seen("b"), r.seen("c"), r.seen("d")], [true, true, false]);

  let seed = 777;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (const window of [1, 7, 50, 300]) {
    const k = new RecentKeys(window);
    const ring: string[] = [];
    let lastNew = false;
    for (let op = 0; op < 50_000; op++) {
      if (rand() < 0.3) {
        k.forgetLast();
        if (lastNew) ring.pop();
        lastNew = false;
        continue;
      }
      const id = `k${Math.floor(rand() * window * 3)}`;
      const expected = ring.includes(id);
      assert.equal(k.seen(id), expected, `window ${window}, op ${op}, ${id}`);
      lastNew = !expected;
      if (!expected) {
        if (ring.length === window) ring.shift();
        ring.push(id);
      }
    }
    assert.equal(k.size, ring.length);
  }
});
