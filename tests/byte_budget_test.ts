import assert from "node:assert/strict";
import {
  hwmForBytes,
  MAX_BUDGET_HWM,
  MIN_BUDGET_HWM,
  queueHwm,
  subscriberHwm,
} from "../src/roles/byte_budget.ts";

Deno.test("hwmForBytes: budget over message size, clamped to [16, 100,000]", () => {
  assert.equal(hwmForBytes(64 * 1024 * 1024, 100_256), 669);
  assert.equal(hwmForBytes(64 * 1024 * 1024, 10), MAX_BUDGET_HWM);
  assert.equal(hwmForBytes(1024 * 1024, 1024 * 1024), MIN_BUDGET_HWM);
  assert.equal(hwmForBytes(1024, 0), 1024);
  assert.equal(queueHwm(), 64, "64 MiB of 1 MiB messages");
  assert.equal(queueHwm(64 * 1024), 1024);
});

Deno.test("subscriberHwm: subscriber_buffer / 4 KiB publications, at least 16", () => {
  assert.equal(subscriberHwm(64 * 1024 * 1024), 16_384);
  assert.equal(subscriberHwm(32 * 1024), 16);
  assert.equal(subscriberHwm(256 * 1024 * 1024), 65_536);
});
