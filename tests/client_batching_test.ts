// The client's batches: requests pushed in separate turns while its reactor polls off-thread leave
// together, when the reactor holds sends (`coalesceSendsMs`, as the HTTP gateway's does).
import assert from "node:assert/strict";
import { Client } from "../src/client/client.ts";
import { readBatch } from "../src/wire/batch.ts";
import { encodeHeader, text, utf8 } from "../src/wire/protocol.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { delay, TIMED_OUT, withTimeout } from "../src/_async.ts";

Deno.test("client: requests pushed in separate turns while a coalescing reactor polls leave as one batch", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zmc" });
  // The test plays the Subject (a ROUTER) and the Integration Manager (a PUB), on a reactor of its own.
  const peer = new Reactor();
  const reactor = new Reactor({ coalesceSendsMs: 3000 });
  let client: Client | undefined;
  try {
    const subject = peer.socket("ROUTER", { linger: 0 });
    await subject.bind(`ipc://${dir}/subject`);
    const pub = peer.socket("PUB", { linger: 0 });
    await pub.bind(`ipc://${dir}/pub`);
    const received = subject.messages();
    client = await Client.connect({
      subject: `ipc://${dir}/subject`,
      publisher: `ipc://${dir}/pub`,
      reactor,
      resendAfter: 0,
    });
    // A Subject announcing a new incarnation after another: the client counts a restart, so it has
    // just received a message (the reactor holds sends from then on, for 3 s).
    let incarnation = 0;
    const hello = (id = `i${incarnation++}`) =>
      pub.send([utf8("~~~~hello"), encodeHeader({ v: 1, id, k: "hello" }), utf8("{}")]);
    for (let i = 0; i < 500 && client.subjectRestarts === 0; i++) {
      await hello();
      await delay(10);
    }
    assert.ok(client.subjectRestarts > 0, "the client never heard the test's announcements");
    for (let i = 0; i < 100 && !reactor.polling; i++) await delay(5);
    assert.ok(reactor.polling, "the client's reactor never waited off-thread");
    // Three requests, each in a turn of its own (as the gateway's HTTP requests come).
    for (let i = 0; i < 3; i++) {
      void client.send("Flow", { i }, { id: `r${i}` }).catch(() => {});
      await delay(5);
    }
    // A message (an incarnation already seen: nothing is sent again): the client's reactor runs a
    // pass, and the held batch leaves.
    await hello(`i${incarnation - 1}`);
    const first = await withTimeout(received.next(), 2500);
    assert.notEqual(first, TIMED_OUT, "the requests waited for the 3 s timer, not for the message");
    const frames = (first as IteratorResult<Uint8Array[]>).value;
    const records = readBatch(frames[1]);
    assert.ok(records, "a batch frame");
    assert.deepEqual(records.map((r) => JSON.parse(text(r.frames[1])).id), ["r0", "r1", "r2"]);
    assert.equal(await withTimeout(received.next(), 300), TIMED_OUT, "a second message came");
  } finally {
    await client?.close();
    await reactor.close();
    await peer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
