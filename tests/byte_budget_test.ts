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

Deno.test("SizeEstimate rises at once to a larger message and falls slowly", () => {
  const e = new SizeEstimate(256);
  assert.equal(e.add(100_000), 100_000, "a larger message: at once");
  for (let i = 0; i < 1000; i++) e.add(1000);
  // (1 - 1/1024)^1000 of the gap is left: about 38%.
  assert.ok(e.value > 0.3 * 100_000 && e.value < 0.45 * 100_000, String(e.value));
  for (let i = 0; i < 20_000; i++) e.add(1000);
  assert.ok(e.value < 1100, String(e.value));
  assert.equal(e.add(5000), 5000);
});
