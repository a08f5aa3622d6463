// The Subject's link to the IM (src/roles/im_link.ts) over an in-process ROUTER that plays the IM:
// what `whenTaken` waits for, and what `onBatch` is told.
import assert from "node:assert/strict";
import { ImLink, type ImLinkOptions } from "../src/roles/im_link.ts";
import { logger } from "../src/log.ts";
import { BatchView, BatchWriter } from "../src/wire/batch.ts";
import { CONTROL_FRAMES } from "../src/wire/control.ts";
import { text, utf8 } from "../src/wire/protocol.ts";
import { Reactor } from "../src/zmq/reactor.ts";

/**
 * An IM link on reactor `r` to a ROUTER bound in-process that plays the IM (it reads nothing unless
 * the test gives it `onMessage`); `onBatch` as the Subject gives it.
 */
async function linkToRouter(r: Reactor, onBatch?: ImLinkOptions["onBatch"]) {
  const im = r.socket("ROUTER");
  const ep = `inproc://im-link-${crypto.randomUUID()}`;
  await im.bind(ep);
  const sock = r.socket("DEALER");
  await sock.connect(ep);
  const link = new ImLink(sock, {
    changed: () => {},
    scheduleFlush: () => {},
    drop: (reason) => assert.fail(`dropped: ${reason}`),
    refused: () => {},
    log: logger("test"),
    incarnation: "subject-1",
    onBatch,
  });
  return { im, link };
}

Deno.test("im link: whenTaken runs once the IM acknowledges the batch its turn's publications went in, not before", async () => {
  const r = new Reactor();
  try {
    const { im, link } = await linkToRouter(r);
    const batches: { from: Uint8Array; seq: number }[] = [];
    let arrived = () => {};
    im.onMessage(([from, seq]) => {
      batches.push({ from: from.slice(), seq: Number(text(seq)) });
      arrived();
    });
    const next = () => new Promise<void>((res) => arrived = res);
    const calls: string[] = [];
    // Registered before the publication it waits for, as the Subject does: it follows it into its batch.
    link.whenTaken(() => calls.push("first"));
    link.publish(utf8("F~~~~done"), utf8('{"v":1,"id":"a"}'), utf8("{}"));
    let got = next();
    await r.exec(() => link.flush());
    await got;
    got = next();
    link.publish(utf8("F~~~~done"), utf8('{"v":1,"id":"b"}'), utf8("{}"));
    link.whenTaken(() => calls.push("second"));
    await r.exec(() => link.flush());
    await got;
    assert.equal(batches.length, 2);
    await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(calls, [], "nothing acknowledged yet");
    const ack = (seqs: number[]) =>
      r.exec(() => im.send([batches[0].from, CONTROL_FRAMES.ACK, utf8("im-1"), utf8(JSON.stringify(seqs))]));
    await ack([batches[1].seq]);
    for (let i = 0; i < 100 && !calls.length; i++) await new Promise((res) => setTimeout(res, 10));
    // The second batch's acknowledgement came first: the first is taken for lost (sent again), not taken.
    assert.deepEqual(calls, ["second"]);
    await ack([batches[0].seq]);
    for (let i = 0; i < 100 && calls.length < 2; i++) await new Promise((res) => setTimeout(res, 10));
    assert.deepEqual(calls, ["second", "first"]);
    assert.equal(link.unacked, 0);
  } finally {
    await r.close();
  }
});

Deno.test("im link: onBatch is told which records of its batch were published as plain finals, and the next batch is told only of its own, even after onBatch threw", async () => {
  const r = new Reactor();
  try {
    const seen: { count: number; at: number[]; ids: string[]; flows: string[] }[] = [];
    let fail = false;
    const { link } = await linkToRouter(r, (batch, finals) => {
      const n = finals.count;
      seen.push({
        count: BatchView.of(batch)!.count,
        at: finals.at.slice(0, n),
        ids: finals.ids.slice(0, n),
        flows: finals.flows.slice(0, n),
      });
      if (fail) throw new Error("onBatch failed");
    });
    const results = new BatchWriter();
    results.add(7, 0, utf8("F~~~~done"), utf8('{"v":1,"id":"a","n":1}'), utf8("{}"));
    results.add(8, 0, utf8("G~~~~done"), utf8('{"v":1,"id":"b","n":1}'), utf8("{}"));
    const view = BatchView.of(results.take().slice())!;
    await r.exec(() => {
      link.publish(utf8("F~T~F~PUBLISH~x"), utf8('{"v":1,"id":"p","pos":1}'), utf8("{}"));
      link.publishDone(view, 0, "a", "F");
      link.publish(utf8("F~~~~error"), utf8('{"v":1,"id":"e","error":{"code":"timeout"}}'), utf8("{}"));
      link.publishDone(view, 1, "b", "G");
      link.flush();
      fail = true;
      link.publishDone(view, 0, "a", "F");
      assert.throws(() => link.flush(), /onBatch failed/);
      fail = false;
      link.publish(utf8("F~~~~done"), utf8('{"v":1,"id":"c"}'), utf8("{}"));
      link.flush();
    });
    assert.deepEqual(seen, [
      { count: 4, at: [1, 3], ids: ["a", "b"], flows: ["F", "G"] },
      { count: 1, at: [0], ids: ["a"], flows: ["F"] },
      { count: 1, at: [], ids: [], flows: [] },
    ]);
  } finally {
    await r.close();
  }
});
