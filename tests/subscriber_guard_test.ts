import assert from "node:assert/strict";
import { FRAME_OVERHEAD, publicationBytes, SubscriberGuard } from "../src/roles/subscriber_guard.ts";

const FULL = (ids: readonly number[]) => ids.map(() => true);
const READING = (ids: readonly number[]) => ids.map(() => false);
/** Each connection's state by id. */
const by = (f: (id: number) => boolean | undefined) => (ids: readonly number[]) => ids.map(f);

Deno.test("publicationBytes: frame lengths plus libzmq's per-frame overhead", () => {
  const frames = [new Uint8Array(10), new Uint8Array(0), new Uint8Array(100)];
  assert.equal(publicationBytes(frames), 110 + 3 * FRAME_OVERHEAD);
});

Deno.test("a connection that stays full is named once the IM published more than the budget since it kept up", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  g.published(600);
  assert.deepEqual(g.sample(FULL), []);
  g.published(400);
  assert.deepEqual(g.sample(FULL), [], "exactly the budget behind is allowed");
  g.published(1);
  assert.deepEqual(g.sample(FULL), [{ id: 7, behind: 1_001 }]);
  assert.equal(g.size, 0, "a named connection is forgotten");
  g.published(10_000);
  assert.deepEqual(g.sample(FULL), [], "and never named twice");
});

Deno.test("a connection seen keeping up (its send buffer not full) starts counting again", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  g.published(900);
  assert.deepEqual(g.sample(FULL), []);
  assert.deepEqual(g.sample(READING), []);
  g.published(900);
  assert.deepEqual(g.sample(FULL), [], "900 behind since it was last seen reading");
  g.published(200);
  assert.deepEqual(g.sample(FULL), [{ id: 1, behind: 1_100 }]);
});

Deno.test("only what was published after a connection arrived counts against it", () => {
  const g = new SubscriberGuard(1_000);
  g.published(1_000_000);
  g.connected(3);
  g.published(500);
  assert.deepEqual(g.sample(FULL), []);
});

Deno.test("each connection is judged alone; gone ones (no state, or disconnected) are forgotten", () => {
  const g = new SubscriberGuard(1_000);
  for (const id of [1, 2, 3, 4]) g.connected(id);
  g.disconnected(4);
  g.published(2_000);
  const slow = g.sample(by((id) => id === 1 ? true : id === 2 ? false : undefined));
  assert.deepEqual(slow, [{ id: 1, behind: 2_000 }]);
  assert.equal(g.size, 1, "2 stays; 1 was named, 3 is gone, 4 disconnected");
});
