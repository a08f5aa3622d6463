// The Subject's reading of the finals it publishes (its request metrics, the connection cap's
// release, src/roles/request_metrics.ts and subject.ts `#finalSent`), through a real Subject, IM,
// worker and client in one process over ipc: a worker's plain done is named by the step it answers
// (`ImLink.publishDone`), a final the Subject makes itself is read from its bytes (`plainId`), and
// either way the request counted, timed and let go is the one every subscriber reads
// (tests/in_process.ts: the roles on one reactor, over ipc).
import assert from "node:assert/strict";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";
import { HandlerRegistry } from "../src/handler.ts";
import { withInProcess } from "./in_process.ts";

const FLOWS = "[Echo]\n?Echo?Push\nS?Echo?One\n??done\n" +
  // The Subject publishes the final itself: the service's continuation lands past the last step.
  "[Pub]\n?Pub?Push\nS?Pub?One\nS?Pub@PUBLISH?Mid\n??done\n" +
  "[Wait]\n?Wait?Push\nS?Wait?One\nS?Wait@ASYNC?Approve\nS?Wait?Three\n??done\n";

Deno.test("subject finals: each is counted and timed under its own flow and lets its request go, for new, resumed and Subject-made finals, with plain, non-ASCII, long and U+FEFF-led ids", async () => {
  const echo = (v: Record<string, unknown>) => Promise.resolve(v);
  await withInProcess({
    flows: FLOWS,
    handlers: new HandlerRegistry().register("??One", echo).register("??Three", echo),
    // One request in flight per connection: a final that lets go of another request than its own
    // leaves its connection's count behind, and the next request is answered `overloaded`.
    subject: { maxInFlightPerConnection: 1 },
  }, async ({ client, subject }) => {
    await client.handle("S?Pub?Mid", (v: Record<string, unknown>) => v, { flow: "Pub" });
    const run = async (flow: string, id: string) => {
      const r = await client.request(flow, { a: 1 }, { id, timeout: 5000 });
      assert.deepEqual([r.action, r.id], ["done", id], `${flow} ${JSON.stringify(id)}`);
    };
    const waitFor = async (id: string, meanwhile: () => Promise<void>) => {
      const pauses = await client.subscribe("Wait~ASYNC~");
      const done = client.request("Wait", { a: 1 }, { id, timeout: 5000 });
      const next = await withTimeout(
        Promise.race([
          pauses.next(),
          done.then((r) =>
            Promise.reject(new Error(`${JSON.stringify(id)} ended without a pause: ${r.action}`))
          ),
        ]),
        5000,
      );
      if (next === TIMED_OUT) assert.fail(`${JSON.stringify(id)}: no pause within 5 s`);
      const paused = next.value!;
      await pauses.return!();
      await meanwhile();
      await client.sendResume(paused.resume!, { b: 2 });
      const r = await done;
      assert.deepEqual([r.action, r.id], ["done", id]);
    };
    for (const id of ["plain-1", "\uFEFFplain-1", "é-日本", "x".repeat(180)]) await run("Echo", id);
    // While "X" waits paused (its acceptance time parked), requests named "\uFEFFX" and "\uFEFFX2"
    // end, through a worker and through a final the Subject makes. Read without their U+FEFF (a
    // decoder's byte-order mark), the first took X's time, and neither let its own count go.
    await waitFor("X", async () => {
      await run("Echo", "\uFEFFX");
      await run("Pub", "\uFEFFX2");
    });
    await waitFor("\uFEFFY", () => run("Pub", "Y"));
    await run("Echo", "last"); // no count was left behind
    // (The figures are taken as a batch leaves for the IM: before any final in it reaches the client.)
    const figures = subject.stats().requests.flows;
    assert.deepEqual(Object.keys(figures).sort(), ["Echo", "Pub", "Wait"]);
    assert.deepEqual([figures.Echo.outcomes, figures.Echo.count], [{ done: 6 }, 6]);
    assert.deepEqual([figures.Pub.outcomes, figures.Pub.count], [{ done: 2 }, 2]);
    assert.deepEqual(
      [figures.Wait.outcomes, figures.Wait.count],
      [{ done: 2 }, 2],
      "each timed by its own final",
    );
  });
});
