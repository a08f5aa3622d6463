// One lifetime contract on Client, Subject, Worker, IntegrationManager and Reactor: drain()
// finishes accepted work then closes, close() closes at once, closed() resolves once closed,
// and `await using` drains. A whole deployment in one process over inproc, on one reactor.
import assert from "node:assert/strict";
import { buildCatalog } from "../src/topic/catalog.ts";
import { HandlerRegistry } from "../src/handler.ts";
import { Client } from "../src/client/client.ts";
import { IntegrationManager } from "../src/roles/integration_manager.ts";
import { Subject } from "../src/roles/subject.ts";
import { Worker } from "../src/roles/worker.ts";
import { Reactor } from "../src/zmq/reactor.ts";

const catalog = buildCatalog([{ file: "flows.ini", text: "[Slow]\n?Slow?Push\nS?Slow?nap\n??done\n" }]);

/** A whole deployment in this process over inproc, on one reactor; the step `S?Slow?nap` sleeps 300 ms. */
async function inProcess(name: string) {
  const reactor = new Reactor();
  const ep = (what: string) => `inproc://${name}-${Deno.pid}-${what}`;
  const im = await IntegrationManager.start({
    pullAddress: ep("pull"),
    pubAddress: ep("pub"),
    reactor,
    warmupMs: 0,
  });
  const subject = await Subject.start({
    flows: catalog.flows,
    pullAddress: ep("subject"),
    workerAddress: ep("workers"),
    integrationManagerAddress: ep("pull"),
    reactor,
  });
  const handlers = new HandlerRegistry();
  handlers.register("S?Slow?nap", async (v) => {
    await new Promise((r) => setTimeout(r, 300));
    return { ...v, napped: true };
  });
  const worker = await Worker.start({
    flows: catalog.flows,
    handlers,
    subjectAddress: ep("workers"),
    reactor,
  });
  const client = await Client.connect({ subject: ep("subject"), publisher: ep("pub"), reactor });
  return { reactor, im, subject, worker, client, ep };
}

Deno.test("drain() finishes accepted work, then closes; closed() resolves for every role, the client and the reactor", async () => {
  const { reactor, im, subject, worker, client } = await inProcess("lifetime");
  const closed: string[] = [];
  for (const [name, x] of Object.entries({ im, subject, worker, client, reactor })) {
    void x.closed().then(() => closed.push(name));
  }

  const answer = client.request("Slow", { k: 1 });
  while (subject.stats().inFlight === 0) await new Promise((r) => setTimeout(r, 5)); // at the worker
  // The Subject's drain waits for the step at the worker (300 ms) and for the IM's acknowledgement.
  const started = performance.now();
  const clean = await subject.drain(5000);
  assert.equal(clean, true, "all accepted work finished");
  assert.ok(performance.now() - started >= 200, "drain waited for the running step");
  assert.equal((await answer).values.napped, true);
  await Promise.resolve();
  assert.ok(closed.includes("subject"), "closed() resolved once the Subject drained");

  await worker.drain(1000);
  await client.drain();
  await im.drain();
  await reactor.drain();
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(closed.sort(), ["client", "im", "reactor", "subject", "worker"]);
});

Deno.test("await using drains a reactor; close() twice is safe", async () => {
  let done = false;
  {
    await using r = new Reactor();
    void r.closed().then(() => done = true);
    await r.close();
    await r.close();
  }
  assert.equal(done, true);
});

Deno.test("a STUCK report without the worker's secret is refused, even from the watchdog's identity", async () => {
  const { reactor, subject, worker, client, ep } = await inProcess("stuck");
  const forger = reactor.socket("DEALER", { routingId: `${worker.id}!watchdog` });
  await forger.connect(ep("workers"));
  const answer = client.request("Slow", {});
  while (subject.stats().inFlight === 0) await new Promise((r) => setTimeout(r, 5));
  // The attacker knows the worker's id (it is logged), not its secret; it tries every number.
  const base = Date.now() * 1000;
  for (let d = base - 60_000_000; d < base; d += 1_000_000) {
    await forger.send([
      new TextEncoder().encode("STUCK"),
      new TextEncoder().encode(JSON.stringify({ worker: worker.id, d, ms: 9000 })),
    ]);
  }
  assert.equal((await answer).values.napped, true);
  const s = subject.stats();
  assert.equal(s.redelivered, 0, "no step was taken from the worker");
  assert.equal(s.poisoned, 0);
  assert.ok((s.dropped.bad_worker_message ?? 0) > 0, JSON.stringify(s.dropped));
  await reactor.drain();
});
