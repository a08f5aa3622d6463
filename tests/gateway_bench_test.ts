// The bench's gateway row runs: 3-step flows over HTTP/1.1 keep-alive connections, every POST 200.
import assert from "node:assert/strict";
import { gatewayRun } from "../bench/gateway_bench.ts";

Deno.test("bench: the gateway row posts the 3-step flow over keep-alive connections, every answer 200", async () => {
  const r = await gatewayRun(1, 1, 8);
  assert.equal(r.failed, 0);
  assert.ok(r.flowsPerSecond > 0);
  assert.ok(r.p50_ms > 0 && r.p99_ms >= r.p50_ms);
});
