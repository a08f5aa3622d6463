// The worker pool's steps in flight by dispatch number (src/roles/dispatch_table.ts): pure.
import assert from "node:assert/strict";
import { DispatchTable } from "../src/roles/dispatch_table.ts";

type V = { readonly d: number };

Deno.test("DispatchTable: agrees with a Map over 300,000 random operations: stragglers, growth and shrinking, numbers past 2³²", () => {
  let seed = 4242;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (const base of [0, 2 ** 32 - 100, Date.now() * 1000]) {
    const t = new DispatchTable<V>();
    const model = new Map<number, V>();
    let next = base;
    let most = 0;
    let sawStraggler = false;
    /** One value in 500 is held until the table drains: a slow handler's step. */
    const slow = new Set<number>();
    // Phases: a burst in flight, steady traffic with a few held long, then draining.
    for (let op = 0; op < 100_000; op++) {
      const phase = op < 20_000 ? 0.8 : op < 80_000 ? 0.5 : 0.1;
      if (rand() < phase) {
        const v = { d: next++ };
        t.set(v);
        model.set(v.d, v);
        if (rand() < 1 / 500) slow.add(v.d);
      } else if (model.size) {
        // Mostly the oldest few (steps come back about in order), sometimes any; the slow ones last.
        const keys: number[] = [];
        const few = rand() < 0.9;
        for (const d of model.keys()) {
          if (op < 80_000 && slow.has(d)) continue;
          keys.push(d);
          if (few && keys.length === 8) break;
        }
        if (!keys.length) continue;
        const d = keys[Math.floor(rand() * keys.length)];
        assert.equal(t.get(d), model.get(d), `get ${d}`);
        assert.equal(t.delete(d), true);
        model.delete(d);
        assert.equal(t.get(d), undefined, "gone once deleted");
        assert.equal(t.delete(d), false, "deleted once only");
      }
      assert.equal(t.size, model.size);
      most = Math.max(most, model.size);
      sawStraggler ||= t.stragglers > 0;
      if (op % 5_000 === 0) {
        for (const [d, v] of model) assert.equal(t.get(d), v);
        assert.deepEqual([...t.values()].map((v) => v.d).sort((a, b) => a - b), [...model.keys()]);
        assert.equal(t.get(next), undefined, "a number not given out yet");
      }
    }
    assert.ok(sawStraggler, "some values lost their slot to later numbers");
    assert.ok(most > 1000, `the table grew (${most} held at most)`);
    assert.ok(t.slots < 1024, `and shrank once drained (${t.slots} slots for ${t.size})`);
  }
});

Deno.test("DispatchTable: a value held while the array's worth of later numbers passes is still found, and its slot serves the newer one", () => {
  const t = new DispatchTable<V>();
  const old = { d: 7 };
  t.set(old);
  // Keep 20 in flight while 10,000 more numbers go by: each of old's slot's later numbers finds it there.
  for (let d = 8; d < 10_008; d++) {
    t.set({ d });
    if (d - 20 > 7) assert.equal(t.delete(d - 20), true);
  }
  assert.equal(t.get(7), old);
  assert.equal(t.stragglers, 1);
  assert.equal(t.size, 21);
  // The array grows (5,000 more held) and shrinks (all of them back) around it.
  const slots = t.slots;
  for (let d = 10_008; d < 15_008; d++) t.set({ d });
  assert.ok(t.slots > slots, "grown");
  assert.equal(t.get(7), old, "found after the array grew");
  for (let d = 10_008; d < 15_008; d++) assert.equal(t.delete(d), true);
  assert.ok(t.slots <= 8 * 21, `shrunk (${t.slots} slots)`);
  assert.equal(t.get(7), old, "found after it shrank");
  assert.equal(t.size, 21);
  assert.equal(t.delete(7), true);
  assert.equal(t.get(7), undefined);
  assert.equal(t.size, 20);
  for (let d = 9_988; d < 10_008; d++) assert.equal(t.get(d)?.d, d);
});

Deno.test("DispatchTable: only whole numbers from 0 to 2⁵³ − 1 are dispatch numbers", () => {
  const t = new DispatchTable<V>();
  for (const d of [-1, 1.5, 2 ** 53, NaN, Infinity]) assert.throws(() => t.set({ d }), RangeError, String(d));
  t.set({ d: 2 ** 53 - 1 });
  assert.equal(t.get(2 ** 53 - 1)?.d, 2 ** 53 - 1);
  assert.equal(t.get(2 ** 53 - 1 - 64), undefined, "another number of the same slot");
  assert.equal(t.size, 1);
  assert.throws(() => t.set({ d: 2 ** 53 - 1 }), /held already/, "a number held already");
  // Numbers a worker may send back that no step has: found nowhere, and nothing deleted.
  for (let d = 0; d < 100; d++) t.set({ d });
  for (const d of [-1, -64, 1.5, 0.5, NaN, Infinity, -Infinity, 2 ** 53, 2 ** 53 + 64, 2 ** 64, 1e300]) {
    assert.equal(t.get(d), undefined, String(d));
    assert.equal(t.delete(d), false, String(d));
  }
  assert.equal(t.size, 101);
  for (let d = 0; d < 100; d++) assert.equal(t.get(d)?.d, d);
});
