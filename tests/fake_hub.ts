// A fake Subject (a ROUTER) and Integration Manager (a PUB) on a reactor of their own, and a
// client connected through them: for tests of the client's side of the protocol in orders a real
// Subject makes only now and then.
import assert from "node:assert/strict";
import { Client } from "../src/client/client.ts";
import { readBatch } from "../src/wire/batch.ts";
import { encodeHeader, text, utf8 } from "../src/wire/protocol.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { TIMED_OUT, withTimeout } from "../src/_async.ts";

/**
 * A request as the fake Subject received it: its connection, its id, the incarnation it names and
 * its send number.
 */
export interface Received {
  readonly identity: Uint8Array;
  readonly id: string;
  readonly s: string | undefined;
  readonly t: number | undefined;
}

/** What {@linkcode fakeHub} gives a test. */
export interface FakeHub {
  readonly client: Client;
  /** Announces Subject incarnation `id` on the "IM", with `values` (its `max_message_size`, say). */
  hello(id: string, values?: string): Promise<void>;
  /** Publishes on the "IM". */
  publish(frames: Uint8Array[]): Promise<void>;
  /** Acknowledges `id` on the connection of `to`. */
  ack(to: Received, id: string): Promise<void>;
  /**
   * Refuses `id` on the connection of `to` (`answered`: an error publication answers it too),
   * echoing `to`'s send number as the Subject does.
   */
  nack(to: Received, id: string, reason: string, answered: boolean): Promise<void>;
  /** The next request the "Subject" receives, within 2 s. */
  next(): Promise<Received>;
  /** The next request the "Subject" receives within `ms`, if one comes. */
  poll(ms: number): Promise<Received | undefined>;
  close(): Promise<void>;
  /** `await using hub = await fakeHub(…)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A fake Subject and IM, and a client subscribed to `Flow~~~~` through them that has seen
 * incarnation `first` announced (and sends a message again after `resendAfter` ms, 0: never). Pings are answered as the Subject answers them: its
 * announcement first, then the ping, through the "IM".
 */
export async function fakeHub(first: string, resendAfter = 0): Promise<FakeHub> {
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
  let announcedValues = "{}";
  const hello = (id: string, values = "{}") => {
    announced = id;
    announcedValues = values;
    return pub.send([utf8("~~~~hello"), encodeHeader({ v: 1, id, k: "hello" }), utf8(values)]);
  };
  /** Answers a message's pings; returns its first request, if it holds one. */
  const handle = async (frames: Uint8Array[]): Promise<Received | undefined> => {
    const records = frames.length === 2 ? readBatch(frames[1])!.map((r) => r.frames) : [frames.slice(1)];
    let request: Received | undefined;
    for (const [topic, header, values] of records) {
      const h = JSON.parse(text(header));
      if (h.k !== "ping") request ??= { identity: frames[0], id: h.id, s: h.s, t: h.t };
      else {
        await hello(announced, announcedValues);
        await pub.send([topic, header, values]);
      }
    }
    return request;
  };
  // By default no resends for a late acknowledgement: every message the tests read is sent
  // because of an announcement or a call.
  const client = await Client.connect({
    subject: `ipc://${dir}/subject`,
    publisher: `ipc://${dir}/pub`,
    resendAfter,
  });
  let up = false;
  const subscribing = client.subscribe("Flow~~~~").then((s) => (up = true, s));
  while (!up) {
    const frames = await read(50);
    if (frames) await handle(frames);
  }
  const subscription = await subscribing;
  const poll = async (ms: number): Promise<Received | undefined> => {
    const until = performance.now() + ms;
    for (let left = ms; left > 0; left = until - performance.now()) {
      const frames = await read(left);
      if (!frames) return undefined;
      const request = await handle(frames);
      if (request) return request;
    }
    return undefined;
  };
  const close = async () => {
    await subscription.return?.();
    await client.close();
    await peer.close();
    await Deno.remove(dir, { recursive: true });
  };
  return {
    client,
    hello,
    /** Publishes on the "IM". */
    publish: (frames: Uint8Array[]) => pub.send(frames),
    /** Acknowledges `id` on the connection of `to`. */
    ack: (to: Received, id: string) => subject.send([to.identity, utf8("ACK"), utf8(JSON.stringify([id]))]),
    nack: (to: Received, id: string, reason: string, answered: boolean) =>
      subject.send([
        to.identity,
        utf8("NACK"),
        utf8(JSON.stringify([{
          id,
          ...(to.t !== undefined ? { t: to.t } : {}),
          reason,
          message: "refused by the test",
          ...(answered ? { answered } : {}),
        }])),
      ]),
    async next(): Promise<Received> {
      const request = await poll(2000);
      assert.ok(request, "no message came");
      return request;
    },
    poll,
    close,
    [Symbol.asyncDispose]: close,
  };
}
