import assert from "node:assert/strict";
import {
  hwmForBytes,
  MAX_BUDGET_HWM,
  MIN_BUDGET_HWM,
  queueHwm,
  SizeEstimate,
} from "../src/roles/byte_budget.ts";

Deno.test("hwmForBytes: budget over message size, clamped to [16, 100,000]", () => {
  assert.equal(hwmForBytes(64 * 1024 * 1024, 100_256), 669);
  assert.equal(hwmForBytes(64 * 1024 * 1024, 10), MAX_BUDGET_HWM);
  assert.equal(hwmForBytes(1024 * 1024, 1024 * 1024), MIN_BUDGET_HWM);
  assert.equal(hwmForBytes(1024, 0), 1024);
  assert.equal(queueHwm(), 64, "64 MiB of 1 MiB messages");
  assert.equal(queueHwm(64 * 1024), 1024);
});

Deno.test("SizeEstimate rises at once to a larger message and falls by a quarter of the gap per smaller one", () => {
  const e = new SizeEstimate(256);
  assert.equal(e.add(100_000), 100_000, "a larger message: at once");
  e.add(1000);
  assert.equal(e.value, 100_000 - 99_000 / 4);
  for (let i = 0; i < 15; i++) e.add(1000);
  // (3/4)^16 of the gap is left: about 1%.
  assert.ok(e.value > 1000 && e.value < 2100, String(e.value));
  assert.equal(e.add(5000), 5000);
});
