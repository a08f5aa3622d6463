// The client's messages name the Subject incarnation last announced (header `s`, PROTOCOL.md,
// _Subject restarts_), and what it sends again follows the announcements. The test plays the
// Subject (a ROUTER) and the Integration Manager (a PUB), on a reactor of its own.
import assert from "node:assert/strict";
import { RequestTimeoutError } from "../src/client/client.ts";
import { encodeHeader, utf8 } from "../src/wire/protocol.ts";
import { withTimeout } from "../src/_async.ts";
import { fakeHub, type Received } from "./fake_hub.ts";

const named = (r: Received) => [r.id, r.s];

Deno.test("client: messages name the incarnation announced last; a dead Subject's late announcement costs a resend, not a hang", async () => {
  await using hub = await fakeHub("A");
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
});

Deno.test("client: a request the dead Subject acknowledged is sent to its successor named for the successor", async () => {
  await using hub = await fakeHub("A");
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
});

Deno.test("client: submit()'s accepted fails with its final when no acknowledgement ever comes (it waited for ever)", async () => {
  await using hub = await fakeHub("inc-1");
  const s = hub.client.submit("Flow", {}, { id: "never-acked", timeout: 500 });
  assert.equal((await hub.next()).id, "never-acked", "sent, never acknowledged");
  await assert.rejects(s.final, RequestTimeoutError);
  const accepted = await withTimeout(s.accepted.then(() => "resolved", (e) => e), 2000);
  assert.ok(accepted instanceof RequestTimeoutError, `accepted: ${String(accepted)}`);
});
