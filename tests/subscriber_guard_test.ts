import assert from "node:assert/strict";
import {
  type ConnectionLook,
  FRAME_OVERHEAD,
  publicationBytes,
  SubscriberGuard,
  WATCHES_TO_CUT,
  WATCHES_TO_CUT_LONG,
} from "../src/roles/subscriber_guard.ts";

type State = ConnectionLook | undefined;
/** Every connection in the same state. */
const all = (st: State) => (ids: readonly number[]) => ids.map(() => st);
/** Each connection's state by id. */
const by = (f: (id: number) => State) => (ids: readonly number[]) => ids.map(f);
const STALLED = all({ full: true, queued: 212_992 });
/** `n` watches of connection `id` saw it take nothing. */
const unread = (g: SubscriberGuard, id: number, seen: number, n = WATCHES_TO_CUT) => {
  for (let i = 0; i < n; i++) g.unread(id, seen);
};
/** A guard (budget 1,000) whose connection `id` is 600 behind and watched: the guard and the watch. */
const watchedAt600 = (id: number) => {
  const g = new SubscriberGuard(1_000);
  g.connected(id);
  g.sample(STALLED);
  g.published(600);
  const { watch } = g.sample(STALLED);
  assert.deepEqual(ids(watch), [id]);
  return { g, watch };
};
/** Ids only, for comparisons. */
const ids = (xs: readonly { id: number }[]) => xs.map((x) => x.id);

Deno.test("publicationBytes: frame lengths plus libzmq's per-frame overhead", () => {
  const frames = [new Uint8Array(10), new Uint8Array(0), new Uint8Array(100)];
  assert.equal(publicationBytes(frames), 110 + 3 * FRAME_OVERHEAD);
});

Deno.test("a full connection whose queue does not move is watched from a quarter of the budget behind, and cut past the budget once WATCHES_TO_CUT watches in a row saw it take nothing", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  assert.deepEqual(g.sample(STALLED), { cut: [], watch: [] }, "first look: its queue was not seen before");
  g.published(250);
  assert.deepEqual(
    g.sample(STALLED),
    { cut: [], watch: [] },
    "exactly a quarter of the budget: not watched yet",
  );
  g.published(1);
  const { watch } = g.sample(STALLED);
  assert.deepEqual(watch.map((w) => [w.id, w.behind]), [[7, 251]]);
  g.published(749);
  unread(g, 7, watch[0].seen, WATCHES_TO_CUT - 1);
  assert.deepEqual(g.sample(STALLED).cut, [], "exactly the budget behind is allowed");
  g.published(1);
  const look = g.sample(STALLED);
  assert.deepEqual(look.cut, [], `${WATCHES_TO_CUT - 1} watches that saw nothing are not enough`);
  assert.deepEqual(ids(look.watch), [7]);
  g.unread(7, look.watch[0].seen);
  assert.deepEqual(g.sample(STALLED), { cut: [{ id: 7, behind: 1_001 }], watch: [] });
  assert.equal(g.size, 0, "a cut connection is forgotten");
  g.published(10_000);
  assert.deepEqual(g.sample(STALLED), { cut: [], watch: [] }, "and never named again");
});

Deno.test("what a connection is behind is bounded by its queue's limit times the largest publication since it read: small publications never get a reader cut", () => {
  // A queue of 16 publications: 1,000 bytes of 50-byte publications can never be queued.
  const g = new SubscriberGuard(1_000, 16);
  g.connected(7);
  g.sample(STALLED);
  for (let i = 0; i < 1_000; i++) g.published(50);
  let look = g.sample(STALLED);
  assert.deepEqual(look.watch.map((w) => [w.id, w.behind]), [[7, 800]], "16 × 50 bytes at most");
  unread(g, 7, look.watch[0].seen);
  g.published(50);
  assert.deepEqual(g.sample(STALLED).cut, [], "never more than the budget behind, so never cut");
  // One large publication since it last read: the bound rises to 16 × 200, and it is cut.
  g.published(200);
  look = g.sample(STALLED);
  assert.deepEqual(look.cut, [{ id: 7, behind: 3_200 }], "16 × 200 bytes at most");
  // Seen reading: the largest publication counts from then.
  g.connected(8);
  g.sample(all({ full: false, queued: 0 }));
  g.sample(STALLED); // its figure moved: reading
  for (let i = 0; i < 100; i++) g.published(50);
  assert.deepEqual(g.sample(STALLED).watch.map((w) => [w.id, w.behind]), [[8, 800]]);
});

Deno.test("past the budget with no watch result, a connection stays watched and is not cut", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  g.sample(STALLED);
  g.published(5_000);
  for (let i = 0; i < 5; i++) {
    const look = g.sample(STALLED);
    assert.deepEqual(look.cut, []);
    assert.deepEqual(ids(look.watch), [7]);
  }
});

Deno.test("a reader whose figure is the same at every look is never cut while watches see it take bytes", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  g.sample(STALLED);
  // A reader behind on publications larger than a quarter of the kernel's buffer: one
  // publication queued at every look, the same figure, though it reads all the time.
  const ONE_QUEUED = all({ full: true, queued: 103_936 });
  g.published(100);
  g.sample(ONE_QUEUED); // the figure changed from the last look: seen reading
  for (let round = 0; round < 20; round++) {
    g.published(700);
    const { cut, watch } = g.sample(ONE_QUEUED);
    assert.deepEqual(cut, []);
    assert.deepEqual(watch.map((w) => [w.id, w.behind]), [[7, 700]]);
    g.reading(7); // the watch saw its connection take bytes
  }
  assert.equal(g.size, 1, "still tracked");
  g.reading(99); // an unknown connection: nothing happens
  g.unread(99, 1);
  assert.equal(g.size, 1);
});

Deno.test("a watch result that saw nothing is ignored once the connection was seen reading after the watch began", () => {
  const { g, watch } = watchedAt600(7);
  g.sample(all({ full: false, queued: 212_992 })); // reading, while the watch was under way
  unread(g, 7, watch[0].seen); // late results of watches begun before
  g.published(1_200);
  assert.deepEqual(g.sample(STALLED).cut, [], "not cut on a result older than its last reading");
});

Deno.test("a connection seen reading (not full, or its queue moved) starts counting again", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  g.sample(STALLED);
  g.published(900);
  const first = g.sample(STALLED).watch;
  assert.deepEqual(ids(first), [1]);
  unread(g, 1, first[0].seen);
  assert.deepEqual(
    g.sample(all({ full: false, queued: 212_992 })),
    { cut: [], watch: [] },
    "not full: reading",
  );
  g.published(900);
  const again = g.sample(STALLED);
  assert.deepEqual(again.cut, [], "900 behind since it was last seen reading");
  unread(g, 1, again.watch[0].seen, WATCHES_TO_CUT - 1);
  g.published(200);
  assert.deepEqual(g.sample(STALLED).cut, [], "too few watches since it read saw nothing: not yet");
  g.unread(1, again.watch[0].seen);
  assert.deepEqual(g.sample(STALLED).cut, [{ id: 1, behind: 1_100 }]);
});

Deno.test("only what was published after a connection arrived counts against it", () => {
  const g = new SubscriberGuard(1_000);
  g.published(1_000_000);
  g.connected(3);
  g.sample(STALLED);
  g.published(200);
  assert.deepEqual(g.sample(STALLED), { cut: [], watch: [] });
});

Deno.test("a reused id never takes an earlier connection's watch result", () => {
  const { g, watch } = watchedAt600(5);
  g.disconnected(5);
  g.connected(5); // a new connection on the same descriptor
  g.sample(STALLED);
  unread(g, 5, watch[0].seen);
  g.published(1_100);
  const look = g.sample(STALLED);
  assert.deepEqual(look.cut, [], "the new connection was never watched");
  assert.deepEqual(ids(look.watch), [5]);
});

Deno.test("each connection is judged alone; gone ones (no state, or disconnected) are forgotten", () => {
  const g = new SubscriberGuard(1_000);
  for (const id of [1, 2, 3, 4]) g.connected(id);
  g.disconnected(4);
  g.sample(STALLED);
  g.published(2_000);
  let n = 0;
  const state = by((id) =>
    id === 1 ? { full: true, queued: 212_992 } : id === 2 ? { full: true, queued: 1_000 + n++ } : undefined
  );
  const look = g.sample(state);
  assert.deepEqual(look.watch.map((w) => [w.id, w.behind]), [[1, 2_000]], "2 moved; 3 is gone");
  unread(g, 1, look.watch[0].seen);
  assert.deepEqual(g.sample(state).cut, [{ id: 1, behind: 2_000 }]);
  assert.equal(g.size, 1, "2 stays; 1 was cut, 3 is gone, 4 disconnected");
});

Deno.test("tcp: a subscriber stopped while a burst is queued for it stays behind by what has not left, though its kernel acknowledged some and nothing is published after, and is cut", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  const tcp = (sent: number) => all({ full: true, queued: 500, sent });
  g.sample(tcp(0));
  g.published(5_000); // the whole burst, at once
  // Its kernel takes 1,200 bytes into its receive buffer over three looks, then no more.
  for (const sent of [400, 800, 1_200]) {
    const look = g.sample(tcp(sent));
    assert.deepEqual(look.cut, [], "bytes left: not cut");
    assert.deepEqual(ids(look.watch), [7]);
  }
  const look = g.sample(tcp(1_200));
  assert.deepEqual(look.watch.map((w) => [w.id, w.behind]), [[7, 3_800]], "5,000 published, 1,200 left");
  unread(g, 7, look.watch[0].seen);
  assert.deepEqual(g.sample(tcp(1_200)).cut, [], "nothing published since it last took bytes: not yet");
  unread(g, 7, look.watch[0].seen, WATCHES_TO_CUT_LONG - WATCHES_TO_CUT - 1);
  assert.deepEqual(g.sample(tcp(1_200)).cut, [], `${WATCHES_TO_CUT_LONG - 1} watches: not yet`);
  g.unread(7, look.watch[0].seen);
  assert.deepEqual(g.sample(tcp(1_200)).cut, [{ id: 7, behind: 3_800 }]);
});

Deno.test("tcp: a subscriber of a narrow prefix (its bytes leave slowly while other topics are published) that pauses for a few watches is not cut; one that takes nothing for WATCHES_TO_CUT_LONG watches is", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  let sent = 0;
  const tcp = () => all({ full: true, queued: 500, sent });
  g.sample(tcp());
  // Its buffer stays full: 20 bytes of its topic leave per look while 200 are published in all.
  for (let round = 0; round < 30; round++) {
    g.published(200);
    sent += 20;
    assert.deepEqual(g.sample(tcp()).cut, []);
  }
  // It pauses: nothing leaves for three watches, 300 bytes published meanwhile.
  let look = g.sample(tcp());
  assert.deepEqual(look.watch.map((w) => [w.id, w.behind]), [[7, 5_400]], "6,000 published, 600 left");
  for (let i = 0; i < WATCHES_TO_CUT; i++) {
    g.published(100);
    g.unread(7, look.watch[0].seen);
    look = g.sample(tcp());
    assert.deepEqual(look.cut, [], "300 published since it last took bytes: not cut");
  }
  sent += 20; // it reads again
  g.sample(tcp());
  // Then takes nothing for good.
  look = g.sample(tcp());
  unread(g, 7, look.watch[0].seen, WATCHES_TO_CUT_LONG);
  assert.deepEqual(g.sample(tcp()).cut.map((c) => c.id), [7]);
});

Deno.test("tcp: a watch that saw bytes leave does not mark the connection caught up; one whose bytes keep leaving is never cut", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(7);
  let sent = 0;
  g.sample(all({ full: true, queued: 500, sent }));
  g.published(3_000);
  const { watch } = g.sample(all({ full: true, queued: 500, sent }));
  g.reading(7); // the watch saw its peer acknowledge bytes
  unread(g, 7, watch[0].seen); // results of older watches: ignored
  const after = g.sample(all({ full: true, queued: 500, sent }));
  assert.deepEqual(after.watch.map((w) => [w.id, w.behind]), [[7, 3_000]], "still 3,000 behind");
  // A slow reader: 100 bytes leave between looks while 200 are published; every watch in between
  // saw nothing, but bytes left since it began.
  for (let round = 0; round < 20; round++) {
    g.published(200);
    sent += 100;
    const look = g.sample(all({ full: true, queued: 500, sent }));
    assert.deepEqual(look.cut, []);
    unread(g, 7, look.watch[0].seen - 1);
  }
  assert.equal(g.size, 1, "still tracked");
  // A figure read low once (bytes acknowledged between the two calls) does not count twice.
  g.sample(all({ full: true, queued: 500, sent: sent - 50 }));
  const look = g.sample(all({ full: true, queued: 500, sent }));
  assert.deepEqual(look.watch.map((w) => [w.id, w.behind]), [[7, 5_000]], "3,000 + 20 × 100 behind");
  // Room in its buffer: libzmq holds nothing for it, so it is caught up.
  g.sample(all({ full: false, queued: 0, sent }));
  g.published(200);
  assert.deepEqual(g.sample(all({ full: true, queued: 500, sent })), { cut: [], watch: [] });
});

Deno.test("Unix socket: a subscriber stopped as a burst begins, its buffer filling between looks (the figure rising), is cut though nothing is published after", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  g.sample(all({ full: false, queued: 0 })); // reading: caught up
  // The burst: libzmq fills its buffer while its reader is stopped, the figure rising at each look.
  g.published(600);
  assert.deepEqual(
    ids(g.sample(all({ full: true, queued: 100_000 })).watch),
    [1],
    "more queued is no reading",
  );
  g.published(2_000);
  const { watch } = g.sample(all({ full: true, queued: 212_992 }));
  assert.deepEqual(watch.map((w) => [w.id, w.behind]), [[1, 2_600]], "behind by the whole burst");
  unread(g, 1, watch[0].seen);
  // The burst is over: nothing more is published, and it is cut all the same.
  assert.deepEqual(g.sample(all({ full: true, queued: 212_992 })).cut, [{ id: 1, behind: 2_600 }]);
  // A figure that falls is a reader's: caught up.
  const h = new SubscriberGuard(1_000);
  h.connected(2);
  h.sample(all({ full: true, queued: 212_992 }));
  h.published(2_000);
  const look = h.sample(all({ full: true, queued: 110_000 }));
  assert.deepEqual(look, { cut: [], watch: [] }, "it took bytes: caught up");
});

Deno.test("Unix socket: a new connection's first look, full, is no reading: it is behind from when it connected", () => {
  const g = new SubscriberGuard(1_000);
  g.connected(1);
  g.published(600);
  const { watch } = g.sample(all({ full: true, queued: 212_992 }));
  assert.deepEqual(watch.map((w) => [w.id, w.behind]), [[1, 600]]);
});
