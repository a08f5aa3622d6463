// The client's messages name the Subject incarnation last announced (header `s`, PROTOCOL.md,
// _Subject restarts_), and what it sends again follows the announcements. The test plays the
// Subject (a ROUTER) and the Integration Manager (a PUB), on a reactor of its own.
import assert from "node:assert/strict";
import { Client, RequestTimeoutError } from "../src/client/client.ts";
import { readBatch } from "../src/wire/batch.ts";
import { encodeHeader, text, utf8 } from "../src/wire/protocol.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

/** A request as the fake Subject received it: its connection, its id and the incarnation it names. */
interface Received {
  readonly identity: Uint8Array;
  readonly id: string;
  readonly s: string | undefined;
}

/**
 * A fake Subject and IM, and a client subscribed to `Flow~~~~` through them that has seen
 * incarnation `first` announced. Pings are answered as the Subject answers them: its
 * announcement first, then the ping, through the "IM".
 */
async function fakeHub(first: string) {
  const dir = await Deno.makeTempDir({ prefix: "zmc" });
  const peer = new Reactor();
  const subject = peer.socket("ROUTER", { linger: 0 });
  await subject.bind(`ipc://${dir}/subject`);
  const pub = peer.socket("PUB", { linger: 0 });
  await pub.bind(`ipc://${dir}/pub`);
  const messages = subject.messages();
  let pending: Promise<IteratorResult<Uint8Array[]>> | undefined;
  /** The next message within `ms`, or undefined; a read that times out is kept for the next call. */
  const read = async (ms: number) => {
    pending ??= messages.next();
    const m = await withTimeout(pending, ms);
    if (m === TIMED_OUT) return undefined;
    pending = undefined;
    return m.value as Uint8Array[];
  };
  let announced = first;
  const hello = (id: string) => {
    announced = id;
    return pub.send([utf8("~~~~hello"), encodeHeader({ v: 1, id, k: "hello" }), utf8("{}")]);
  };
  /** Answers a message's pings; returns its first request, if it holds one. */
  const handle = async (frames: Uint8Array[]): Promise<Received | undefined> => {
    const records = frames.length === 2 ? readBatch(frames[1])!.map((r) => r.frames) : [frames.slice(1)];
    let request: Received | undefined;
    for (const [topic, header, values] of records) {
      const h = JSON.parse(text(header));
      if (h.k !== "ping") request ??= { identity: frames[0], id: h.id, s: h.s };
      else {
        await hello(announced);
        await pub.send([topic, header, values]);
      }
    }
    return request;
  };
  // No resends for a late acknowledgement: every message the tests read is sent because of an
  // announcement.
  const client = await Client.connect({
    subject: `ipc://${dir}/subject`,
    publisher: `ipc://${dir}/pub`,
    resendAfter: 0,
  });
  let up = false;
  const subscribing = client.subscribe("Flow~~~~").then((s) => (up = true, s));
  while (!up) {
    const frames = await read(50);
    if (frames) await handle(frames);
  }
  const subscription = await subscribing;
  return {
    client,
    hello,
    /** Publishes on the "IM". */
    publish: (frames: Uint8Array[]) => pub.send(frames),
    /** Acknowledges `id` on the connection of `to`. */
    ack: (to: Received, id: string) => subject.send([to.identity, utf8("ACK"), utf8(JSON.stringify([id]))]),
    /** The next request the "Subject" receives, within 2 s. */
    async next(): Promise<Received> {
      for (;;) {
        const frames = await read(2000);
        assert.ok(frames, "no message came");
        const request = await handle(frames);
        if (request) return request;
      }
    },
    async close() {
      await subscription.return?.();
      await client.close();
      await peer.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const named = (r: Received) => [r.id, r.s];

Deno.test("client: messages name the incarnation announced last; a dead Subject's late announcement costs a resend, not a hang", async () => {
  const hub = await fakeHub("A");
  try {
    const sent = hub.client.send("Flow", { i: 1 }, { id: "r1" });
    assert.deepEqual(named(await hub.next()), ["r1", "A"]);
    await hub.hello("B"); // A died; B started: r1 is unacknowledged, so it goes to B
    assert.deepEqual(named(await hub.next()), ["r1", "B"]);
    assert.equal(hub.client.subjectRestarts, 1);
    await hub.hello("A"); // A's announcement, still queued in the IM, read after B's
    assert.deepEqual(named(await hub.next()), ["r1", "A"]);
    await hub.hello("B"); // B's next announcement: named for B again (B drops what names A)
    const last = await hub.next();
    assert.deepEqual(named(last), ["r1", "B"]);
    await hub.ack(last, "r1");
    assert.equal(await withTimeout(sent, 2000), "r1", "acknowledged: the send settles");
  } finally {
    await hub.close();
  }
});

Deno.test("client: a request the dead Subject acknowledged is sent to its successor named for the successor", async () => {
  const hub = await fakeHub("A");
  try {
    // A request kept until its final (send() keeps nothing).
    const result = hub.client.request("Flow", { i: 1 }, { id: "r1", timeout: 5000 });
    result.catch(() => {}); // a failed assertion below reports itself, not this
    const first = await hub.next();
    assert.deepEqual(named(first), ["r1", "A"]);
    await hub.ack(first, "r1"); // A accepted it, then died
    await hub.client.flush(); // the acknowledgement has arrived
    await hub.hello("B");
    assert.deepEqual(
      named(await hub.next()),
      ["r1", "B"],
      "sent again, named for B (named for A, B drops it)",
    );
    assert.equal(hub.client.subjectRestarts, 1);
    await hub.publish([utf8("Flow~~~~done"), encodeHeader({ v: 1, id: "r1" }), utf8('{"ok":true}')]);
    assert.deepEqual((await result).values, { ok: true });
  } finally {
    await hub.close();
  }
});

Deno.test("client: submit()'s accepted fails with its final when no acknowledgement ever comes (it waited for ever)", async () => {
  const hub = await fakeHub("inc-1");
  try {
    const s = hub.client.submit("Flow", {}, { id: "never-acked", timeout: 500 });
    assert.equal((await hub.next()).id, "never-acked", "sent, never acknowledged");
    await assert.rejects(s.final, RequestTimeoutError);
    const accepted = await withTimeout(s.accepted.then(() => "resolved", (e) => e), 2000);
    assert.ok(accepted instanceof RequestTimeoutError, `accepted: ${String(accepted)}`);
  } finally {
    await hub.close();
  }
});
