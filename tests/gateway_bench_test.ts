// The bench's gateway rows run: 3-step flows over HTTP/1.1 keep-alive connections, every POST 200;
// the bare Deno.serve floor and the ZeroMQ generator at the same concurrency beside it.
import assert from "node:assert/strict";
import { gatewayRun } from "../bench/gateway_bench.ts";

Deno.test("bench: the gateway row posts the 3-step flow over keep-alive connections, every answer 200, beside its floor", async () => {
  const r = await gatewayRun(1, 1, 8, 1);
  assert.equal(r.failed, 0);
  assert.ok(r.flowsPerSecond > 0);
  assert.ok(r.p50_ms > 0 && r.p99_ms >= r.p50_ms);
  assert.equal(r.floor.failed, 0);
  assert.ok(r.floor.perSecond > 0 && r.floor.p99_ms >= r.floor.p50_ms);
  assert.ok(r.zeromqAtConnections > 0);
  assert.ok(
    r.gateway.serverMicrosPerRequest > 0 && r.floor.serverMicrosPerRequest > 0,
    "CPU per request measured",
  );
});
