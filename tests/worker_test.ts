// A worker's async handlers: what their abort signal says when a step runs past its timeout or the
// worker closes. Real Subject, Integration Manager and worker (one shared reactor, ipc in a temp
// directory: tests/in_process.ts) and the bundled client.
import assert from "node:assert/strict";
import type { Client } from "../src/client/client.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import { type HandlerContext, HandlerRegistry } from "../src/handler.ts";
import type { Worker } from "../src/roles/worker.ts";
import { withInProcess } from "./in_process.ts";

/** Resolves with the reason of the handler's signal once it aborts. */
function untilAborted(ctx: HandlerContext): Promise<unknown> {
  return new Promise((resolve) => {
    if (ctx.signal.aborted) return resolve(ctx.signal.reason);
    ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason), { once: true });
  });
}

function withRoles(
  handler: (values: Record<string, unknown>, ctx: HandlerContext) => Promise<Record<string, unknown>>,
  fn: (client: Client, worker: Worker) => Promise<void>,
): Promise<void> {
  return withInProcess({
    flows: "[T]\n?T?Push\nS?T?Wait\n??done\n",
    handlers: new HandlerRegistry().register("??Wait", handler),
    worker: { handlerTimeout: 100 },
  }, ({ client, worker }) => fn(client, worker));
}

Deno.test("worker: an async step past its timeout ends in a timeout error, and its handler's signal aborts with it", async () => {
  const aborted = Promise.withResolvers<unknown>();
  let calls = 0;
  await withRoles(async (v, ctx) => {
    calls++;
    aborted.resolve(await untilAborted(ctx));
    return v;
  }, async (client) => {
    const t0 = performance.now();
    const r = await client.request("T", { a: 1 });
    const took = performance.now() - t0;
    assert.equal(r.error?.code, "timeout");
    assert.match(r.error!.message, /ran past 100 ms/);
    assert.ok(took >= 100 && took < 2000, `the timeout error came after ${Math.round(took)} ms`);
    const reason = await withTimeout(aborted.promise, 1000);
    assert.notEqual(reason, TIMED_OUT, "the handler's signal aborted");
    assert.match(String((reason as Error).message), /ran past 100 ms/);
    assert.equal(calls, 1);
  });
});

Deno.test("worker: closing it aborts the signal of the async steps still running", async () => {
  const started = Promise.withResolvers<void>();
  const aborted = Promise.withResolvers<unknown>();
  await withRoles(async (v, ctx) => {
    started.resolve();
    aborted.resolve(await untilAborted(ctx));
    return v;
  }, async (client, worker) => {
    void client.request("T", {}).catch(() => {});
    await started.promise;
    await worker.close();
    const reason = await withTimeout(aborted.promise, 1000);
    assert.notEqual(reason, TIMED_OUT, "the handler's signal aborted");
    assert.match(String((reason as Error).message), /worker closing/);
  });
});
