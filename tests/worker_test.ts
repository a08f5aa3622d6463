// A worker's async handlers: what their abort signal says when a step runs past its timeout or the
// worker closes. Real Subject, Integration Manager and worker (one shared reactor, ipc in a temp
// directory) and the bundled client.
import assert from "node:assert/strict";
import { Client } from "../src/client/client.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { type HandlerContext, HandlerRegistry } from "../src/handler.ts";
import { IntegrationManager } from "../src/roles/integration_manager.ts";
import { Subject } from "../src/roles/subject.ts";
import { Worker } from "../src/roles/worker.ts";
import { Reactor, ROLE_SYNC_WAIT_MS } from "../src/zmq/reactor.ts";

/** Resolves with the reason of the handler's signal once it aborts. */
function untilAborted(ctx: HandlerContext): Promise<unknown> {
  return new Promise((resolve) => {
    if (ctx.signal.aborted) return resolve(ctx.signal.reason);
    ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason), { once: true });
  });
}

async function withRoles(
  handler: (values: Record<string, unknown>, ctx: HandlerContext) => Promise<Record<string, unknown>>,
  fn: (client: Client, worker: Worker) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "zmw" });
  const flows = new Map(
    parseFlowFile("[T]\n?T?Push\nS?T?Wait\n??done\n", "t.ini").flows.map((f) => [f.name, f]),
  );
  const reactor = new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
  const im = await IntegrationManager.start({
    reactor,
    pullAddress: `ipc://${dir}/im-pull`,
    pubAddress: `ipc://${dir}/im-pub`,
  });
  const subject = await Subject.start({
    reactor,
    flows,
    pullAddress: `ipc://${dir}/subject`,
    workerAddress: `ipc://${dir}/workers`,
    integrationManagerAddress: `ipc://${dir}/im-pull`,
  });
  const worker = await Worker.start({
    reactor,
    flows,
    handlers: new HandlerRegistry().register("??Wait", handler),
    subjectAddress: `ipc://${dir}/workers`,
    handlerTimeout: 100,
  });
  const client = await Client.connect({ subject: `ipc://${dir}/subject`, publisher: `ipc://${dir}/im-pub` });
  try {
    await fn(client, worker);
  } finally {
    await client.close();
    await worker.close();
    await subject.close();
    await im.close();
    await reactor.close();
    await Deno.remove(dir, { recursive: true });
  }
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
