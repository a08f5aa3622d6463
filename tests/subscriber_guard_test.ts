import assert from "node:assert/strict";
import { FRAME_OVERHEAD, publicationBytes, SubscriberGuard } from "../src/roles/subscriber_guard.ts";

type State = { full: boolean; queued: number } | undefined;
/** Every connection in the same state. */
const all = (st: State) => (ids: readonly number[]) => ids.map(() => st);
/** Each connection's state by id. */
const by = (f: (id: number) => State) => (ids: readonly number[]) => ids.map(f);
const STALLED = all({ full: true, queued: 212_992 });

Deno.test("publicationBytes: frame lengths plus libzmq's per-frame overhead", () => {
  const frames = [new Uint8Array(10), new Uint8Array(0), new Uint8Array(100)];
  assert.equal(publicationBytes(frames), 110 + 3 * FRAME_OVERHEAD);
});

Deno.test("a full connection whose queue does not move is named once the IM published more than the budget", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  assert.deepEqual(g.sample(STALLED), [], "first look: its queue was not seen before");
  g.published(600);
  assert.deepEqual(g.sample(STALLED), []);
  g.published(400);
  assert.deepEqual(g.sample(STALLED), [], "exactly the budget behind is allowed");
  g.published(1);
  assert.deepEqual(g.sample(STALLED), [{ id: 7, behind: 1_001 }]);
  assert.equal(g.size, 0, "a named connection is forgotten");
  g.published(10_000);
  assert.deepEqual(g.sample(STALLED), [], "and never named twice");
});

Deno.test("a full connection whose queue moves is reading, however slowly: never named", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  for (let i = 0; i < 50; i++) {
    g.published(900);
    // A healthy client with many large finals on their way keeps its buffer full; what it reads,
    // libzmq refills, so the queued figure changes from one look to the next.
    assert.deepEqual(g.sample(all({ full: true, queued: 200_000 + (i % 2) * 4_096 })), []);
  }
  assert.equal(g.size, 1);
});

Deno.test("a connection seen reading (not full, or its queue moved) starts counting again", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  g.sample(STALLED);
  g.published(900);
  assert.deepEqual(g.sample(STALLED), []);
  assert.deepEqual(g.sample(all({ full: false, queued: 212_992 })), [], "not full: reading");
  g.published(900);
  assert.deepEqual(g.sample(STALLED), [], "900 behind since it was last seen reading");
  g.published(200);
  assert.deepEqual(g.sample(STALLED), [{ id: 1, behind: 1_100 }]);
});

Deno.test("only what was published after a connection arrived counts against it", () => {
  const g = new SubscriberGuard(1_000);
  g.published(1_000_000);
  g.connected(3);
  g.sample(STALLED);
  g.published(500);
  assert.deepEqual(g.sample(STALLED), []);
});

Deno.test("each connection is judged alone; gone ones (no state, or disconnected) are forgotten", () => {
  const g = new SubscriberGuard(1_000);
  for (const id of [1, 2, 3, 4]) g.connected(id);
  g.disconnected(4);
  g.sample(STALLED);
  g.published(2_000);
  let n = 0;
  const slow = g.sample(
    by((id) =>
      id === 1 ? { full: true, queued: 212_992 } : id === 2 ? { full: true, queued: 1_000 + n++ } : undefined
    ),
  );
  assert.deepEqual(slow, [{ id: 1, behind: 2_000 }]);
  assert.equal(g.size, 1, "2 stays; 1 was named, 3 is gone, 4 disconnected");
});
