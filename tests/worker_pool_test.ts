// The Subject's worker pool (src/roles/worker_pool.ts): pure, driven by an injected clock, no sockets.
import assert from "node:assert/strict";
import { resolveSubjectOptions } from "../src/roles/subject_options.ts";
import {
  InFlightList,
  PACK_MAX_STEPS,
  type Poisoned,
  PoolStep,
  type PoolWorker,
  WorkerPool,
} from "../src/roles/worker_pool.ts";

/** A step: its name (the pool keeps its record in the step's `PoolStep` fields; its size is the name's length). */
class Step extends PoolStep {
  constructor(readonly name: string) {
    super();
  }
}

const HB_TIMEOUT = 1000;

/** A pool whose sends are recorded as `worker:step`, on a clock the test moves. */
function setup(maxDeliveries = 2, packWindow = 0) {
  const clock = { now: 0 };
  const sent: string[] = [];
  const events: string[] = [];
  const ds = new Map<string, number>();
  const pool = new WorkerPool<Step, string>({
    heartbeatTimeout: HB_TIMEOUT,
    maxDeliveries,
    packWindow,
    now: () => clock.now,
    sizeOf: (s) => s.name.length,
    firstDispatch: 100,
    send: (w: PoolWorker<string>, d, s) => {
      sent.push(`${w.key}:${s.name}`);
      ds.set(s.name, d);
    },
    observer: { joined: (k, c) => events.push(`joined ${k} ${c}`), left: (k) => events.push(`left ${k}`) },
  });
  const ready = (key: string, credit: number) => pool.status(key, "READY", { credit }, () => `link-${key}`);
  /** The dispatch number of a step's last delivery. */
  const d = (name: string) => ds.get(name)!;
  return { clock, sent, events, pool, ready, d };
}

const steps = (...names: string[]): Step[] => names.map((name) => new Step(name));

/**
 * A pool with a 1 ms pack window and workers w1 and w2 of `credit` each, whose first steps (a to
 * w1, b to w2, by credit: neither's pace is known yet) came back after `w1Ms` and `w2Ms`.
 */
function paced(credit: number, w1Ms: number, w2Ms: number) {
  const t = setup(2, 1);
  t.ready("w1", credit);
  t.ready("w2", credit);
  for (const s of steps("a", "b")) t.pool.submit(s);
  assert.deepEqual(t.sent, ["w1:a", "w2:b"], "neither's pace known: by credit");
  const back: [string, string, number][] = [["w1", "a", w1Ms], ["w2", "b", w2Ms]];
  for (const [w, step, ms] of back.toSorted((x, y) => x[2] - y[2])) {
    t.clock.now = ms;
    t.pool.retire(w, t.d(step));
  }
  return t;
}

Deno.test("pool: steps go to the worker with the most credit, the rest wait; a result gives the credit back", () => {
  const { sent, events, pool, ready, d } = setup();
  ready("w1", 1);
  ready("w2", 2);
  assert.deepEqual(events, ["joined w1 1", "joined w2 2"]);
  assert.equal(pool.worker("w2")!.link, "link-w2");
  const [a, b, c, e] = steps("a", "b", "c", "e");
  for (const s of [a, b, c, e]) pool.submit(s);
  assert.deepEqual(sent, ["w2:a", "w1:b", "w2:c"], "most credit first (ties: the first to join)");
  assert.deepEqual([pool.credit, pool.inFlight, pool.queued, pool.pendingBytes, pool.heldBytes], [
    0,
    3,
    1,
    1,
    4,
  ]);
  assert.equal(pool.retire("w1", d("b")), b, "the result retires its step");
  assert.deepEqual([pool.credit, pool.inFlight, pool.heldBytes], [1, 2, 3]);
  pool.pump();
  assert.deepEqual(sent.at(-1), "w1:e", "the waiting step takes the credit back");
  assert.deepEqual(pool.counts(), { dispatched: 4, redelivered: 0, lost: 0, poisoned: 0 });
});

Deno.test("pool: a result for a step no longer in flight is late; one from another worker is foreign", () => {
  const { pool, ready, d } = setup();
  ready("w1", 1);
  ready("w2", 1);
  const [a] = steps("a");
  pool.submit(a);
  assert.equal(pool.retire("w2", d("a")), "foreign", "only the worker a step was sent to may answer it");
  assert.equal(pool.inFlight, 1, "a foreign result retires nothing");
  assert.equal(pool.retire("w1", d("a")), a);
  assert.equal(pool.retire("w1", d("a")), "late");
  assert.equal(pool.retire("w1", 12345), "late");
});

Deno.test("pool: a step sent again is in flight under its new number only; its first delivery's result is late, to either worker", () => {
  const { clock, sent, pool, ready, d } = setup(3);
  ready("w1", 1);
  const [a] = steps("a");
  pool.submit(a);
  const first = d("a");
  clock.now = HB_TIMEOUT + 1;
  pool.expire(); // w1 dropped: a goes back to the queue
  ready("w1", 1); // the same worker, back under the same key
  pool.pump();
  const second = d("a");
  assert.deepEqual([sent, second > first], [["w1:a", "w1:a"], true]);
  assert.equal(pool.retire("w1", first), "late", "the first delivery's result");
  assert.deepEqual(
    [pool.inFlight, pool.worker("w1")!.credit],
    [1, 0],
    "the second delivery is still in flight",
  );
  // Found lost there (a heartbeat after it that does not hold it): sent to w2, then w1's result is late.
  ready("w2", 1);
  clock.now += 1;
  assert.equal(pool.status("w1", "HB", { credit: 0, holding: [], last: second }, () => ""), 1);
  pool.pump();
  const third = d("a");
  assert.deepEqual([sent.at(-1), third > second], ["w2:a", true]);
  assert.equal(pool.retire("w1", second), "late");
  assert.deepEqual([...pool.worker("w1")!.inflight], [], "no longer in w1's list");
  assert.deepEqual([...pool.worker("w2")!.inflight], [third]);
  assert.equal(pool.retire("w2", third), a);
  assert.deepEqual([pool.inFlight, pool.heldBytes], [0, 0]);
});

Deno.test("pool: a worker silent past the heartbeat timeout is dropped; its steps go first to another worker, in order", () => {
  const { clock, sent, pool, ready } = setup(3);
  ready("w1", 2);
  const [a, b, c] = steps("a", "b", "c");
  for (const s of [a, b, c]) pool.submit(s);
  assert.deepEqual(sent, ["w1:a", "w1:b"]);
  clock.now = HB_TIMEOUT; // exactly the timeout: still alive
  assert.deepEqual(pool.expire(), []);
  clock.now = HB_TIMEOUT + 1;
  const [silent] = pool.expire();
  assert.deepEqual({ ...silent }, { key: "w1", ms: HB_TIMEOUT + 1, redelivered: 2, poisoned: [] });
  assert.equal(pool.size, 0);
  assert.deepEqual([pool.inFlight, pool.queued, pool.pendingBytes, pool.heldBytes], [0, 3, 3, 3]);
  ready("w2", 3);
  pool.pump();
  assert.deepEqual(sent.slice(2), ["w2:a", "w2:b", "w2:c"], "redelivered steps go before the waiting one");
  assert.deepEqual(pool.counts(), { dispatched: 5, redelivered: 2, lost: 0, poisoned: 0 });
});

Deno.test("pool: a worker's steps come back in dispatch order after results retired its first, middle and last", () => {
  const { clock, sent, pool, ready, d } = setup(3);
  ready("w1", 6);
  const s = steps("a", "b", "c", "e", "f", "g");
  for (const x of s) pool.submit(x);
  for (const name of ["a", "c", "g"]) assert.equal(typeof pool.retire("w1", d(name)), "object");
  assert.deepEqual([...pool.worker("w1")!.inflight], [d("b"), d("e"), d("f")]);
  assert.equal(pool.worker("w1")!.inflight.size, 3);
  pool.submit(new Step("h")); // after the removals: appended last
  clock.now = HB_TIMEOUT + 1;
  const [silent] = pool.expire();
  assert.equal(silent.redelivered, 4);
  ready("w2", 10);
  pool.pump();
  assert.deepEqual(sent.slice(7), ["w2:b", "w2:e", "w2:f", "w2:h"]);
});

Deno.test("pool: STUCK naming a step sent to another worker pins nothing on it", () => {
  const { pool, ready, d } = setup(1);
  ready("w1", 1);
  ready("w2", 1);
  const [a, b] = steps("a", "b");
  pool.submit(a); // w1
  pool.submit(b); // w2
  const out = pool.stuck("w1", d("b"), 500)!;
  assert.deepEqual(out.poisoned, [], "b is w2's: not w1's culprit, though max_deliveries is 1");
  assert.equal(out.redelivered, 1);
  assert.equal(pool.retire("w2", d("b")), b, "b is still w2's");
});

Deno.test("pool: heartbeats keep a worker alive; a result counts as hearing from it", () => {
  const { clock, pool, ready, d } = setup();
  ready("w1", 2);
  pool.submit(new Step("a"));
  pool.submit(new Step("b"));
  clock.now = 900;
  pool.status("w1", "HB", { credit: 0 }, () => "unused");
  clock.now = 1800;
  pool.retire("w1", d("a"));
  clock.now = 2700;
  assert.deepEqual(pool.expire(), [], "heard from 900 ms ago");
  clock.now = 2801;
  assert.equal(pool.expire()[0].key, "w1");
});

Deno.test("pool: time this process did not run (paused) is not a worker's silence, nor a step's time on its way", () => {
  const { clock, pool, ready, d } = setup();
  ready("w1", 2);
  pool.submit(new Step("a"));
  clock.now = 500;
  pool.submit(new Step("b"));
  clock.now = 4000; // stopped from 500 to 3900: its workers' heartbeats of that time are unread
  pool.paused(3400);
  assert.deepEqual(pool.expire(), [], "heard from at 0, 600 ms of live time ago");
  // The worker's heartbeat, read now, holds a but not b: b, sent 100 ms of live time ago, is on its way.
  const hb = { credit: 0, holding: [d("a")], last: d("a") };
  assert.equal(pool.status("w1", "HB", hb, () => ""), 0, "b is not lost");
  // A pause can never put a worker's last word or a step's sending in the future.
  pool.paused(1_000_000);
  clock.now = 4000 + HB_TIMEOUT + 1;
  assert.equal(pool.expire()[0].key, "w1", "silent for a whole timeout of live time");
});

Deno.test("pool: reconciliation: steps a live worker does not hold were lost; they are sent again, its credit set from the heartbeat", () => {
  const { clock, sent, pool, ready, d } = setup();
  ready("w1", 4);
  for (const s of steps("a", "b", "c", "e")) pool.submit(s);
  // The worker received up to c, holds b and c: a was lost on the way (sent before c), e is on its way.
  clock.now = 10;
  const lost = pool.status("w1", "HB", { credit: 2, holding: [d("b"), d("c")], last: d("c") }, () => "");
  assert.equal(lost, 1);
  assert.deepEqual(pool.counts(), { dispatched: 4, redelivered: 1, lost: 1, poisoned: 0 });
  // Its free credit as of the heartbeat (2), less the step on its way (e): 1, which a takes back.
  assert.equal(pool.worker("w1")!.credit, 1);
  pool.pump();
  assert.deepEqual(sent, ["w1:a", "w1:b", "w1:c", "w1:e", "w1:a"]);
  // A step sent after the last one received is lost only once a heartbeat timeout has passed:
  // e (sent at 0) is, a's second copy (sent at 10) is not yet.
  clock.now = HB_TIMEOUT + 1;
  const hb = { credit: 1, holding: [d("b"), d("c")], last: d("c") };
  assert.equal(pool.status("w1", "HB", hb, () => ""), 1, "e is lost");
  assert.equal(pool.counts().lost, 2);
  assert.equal(pool.inFlight, 3, "b, c and the second a");
  // A lost step is no failure of its worker: it never counts towards poisoning.
  assert.deepEqual(pool.expire(), []);
});

Deno.test("pool: reconciliation: several lost steps go again in the order they were first sent", () => {
  const { sent, pool, ready, d } = setup();
  ready("w1", 5);
  for (const s of steps("a", "b", "c", "e", "f")) pool.submit(s);
  pool.retire("w1", d("c")); // a hole in the middle of its list
  // It received up to f and holds only e: a, b and f were lost on the way.
  assert.equal(pool.status("w1", "HB", { credit: 4, holding: [d("e")], last: d("f") }, () => ""), 3);
  pool.pump();
  assert.deepEqual(sent.slice(5), ["w1:a", "w1:b", "w1:f"]);
});

Deno.test("pool: a step whose worker dies holding it alone max_deliveries times is poisoned, and no longer held", () => {
  const { clock, sent, pool, ready } = setup(2);
  ready("w1", 1);
  const [p] = steps("poison");
  pool.submit(p);
  clock.now = 2000;
  const [first] = pool.expire();
  assert.deepEqual([first.redelivered, first.poisoned], [1, []], "one failure: delivered again");
  ready("w2", 1);
  pool.pump();
  assert.deepEqual(sent, ["w1:poison", "w2:poison"]);
  clock.now = 4000;
  const [second] = pool.expire();
  assert.equal(second.redelivered, 0);
  assert.equal(second.poisoned.length, 1);
  const { step, whys } = second.poisoned[0] as Poisoned<Step>;
  assert.equal(step, p);
  assert.deepEqual(whys, [
    "worker w1 went silent for 2000 ms (it died, hung or was stopped)",
    "worker w2 went silent for 2000 ms (it died, hung or was stopped)",
  ]);
  assert.deepEqual([pool.heldBytes, pool.pendingCount, pool.busy], [0, 0, false]);
  assert.equal(pool.counts().poisoned, 1);
});

Deno.test("pool: a step that failed max_deliveries times among others runs once more alone, on a reserved worker", () => {
  const { clock, sent, pool, ready, d } = setup(1);
  ready("w1", 2);
  const [x, y] = steps("x", "y");
  pool.submit(x);
  pool.submit(y);
  clock.now = 2000;
  ready("w2", 2);
  ready("w3", 2);
  const [dead] = pool.expire();
  assert.equal(dead.key, "w1");
  assert.deepEqual([dead.redelivered, dead.poisoned], [0, []], "not pinned on either: both are suspects");
  assert.equal(pool.pendingCount, 2);
  pool.pump();
  pool.submit(new Step("z")); // ordinary work meanwhile
  // One worker is reserved; it runs the suspects one at a time, and gets nothing else.
  assert.deepEqual(sent.slice(2), ["w2:x", "w3:z"]);
  assert.equal(pool.worker("w2")!.isolating, true);
  pool.pump();
  assert.equal(sent.length, 4, "the next suspect waits until the first is done");
  assert.equal(pool.retire("w2", d("x")), x);
  pool.pump();
  assert.equal(sent.at(-1), "w2:y");
  // The suspect's worker dies with it alone: that failure is pinned on it.
  clock.now = 4000;
  pool.status("w3", "HB", { credit: 2 }, () => "");
  const [again] = pool.expire();
  assert.equal(again.key, "w2");
  assert.deepEqual(again.poisoned.map((p) => p.step), [y]);
  assert.equal(pool.pendingCount, 0);
});

Deno.test("pool: the reserved worker goes back to ordinary work when no suspect is left", () => {
  const { clock, sent, pool, ready, d } = setup(1);
  ready("w1", 2);
  pool.submit(new Step("x"));
  pool.submit(new Step("y"));
  clock.now = 2000;
  ready("w2", 1);
  pool.expire();
  pool.pump(); // x to w2, reserved
  assert.equal(typeof pool.retire("w2", d("x")), "object");
  pool.pump(); // y to w2
  assert.equal(typeof pool.retire("w2", d("y")), "object");
  pool.pump();
  assert.equal(pool.worker("w2")!.isolating, false);
  pool.submit(new Step("z"));
  assert.equal(sent.at(-1), "w2:z");
});

Deno.test("pool: STUCK naming a step no longer at the worker takes back the worker's steps (it gave them all up) and counts no failure", () => {
  const { sent, pool, ready, d } = setup(1);
  ready("w1", 3);
  const [a, b] = steps("a", "b");
  pool.submit(a);
  pool.submit(b);
  const out = pool.stuck("w1", 999, 500)!;
  assert.equal(out.redelivered, 2);
  assert.deepEqual(out.poisoned, [], "no step counted, though max_deliveries is 1");
  assert.equal(pool.size, 0, "the worker gets no more steps until it speaks again");
  ready("w2", 2);
  pool.pump();
  assert.deepEqual(sent, ["w1:a", "w1:b", "w2:a", "w2:b"]);
  assert.equal(typeof pool.retire("w2", d("a")), "object");
});

Deno.test("pool: STUCK pins the failure on the named step; the worker's other steps go to others at once, uncounted", () => {
  const { sent, pool, ready, d } = setup(1);
  ready("w1", 3);
  pool.status("w1", "HB", { credit: 3, watch: "secret" }, () => "");
  const [a, b] = steps("a", "b");
  pool.submit(a);
  pool.submit(b);
  assert.equal(pool.isStuckReport("w1!watchdog", "w1", "secret"), true);
  assert.equal(
    pool.isStuckReport("w1", "w1", "secret"),
    true,
    "a sandbox's report, on the worker's connection",
  );
  assert.equal(pool.isStuckReport("w1!watchdog", "w1", "guess"), false, "the secret is required");
  assert.equal(pool.isStuckReport("w1", "w1", undefined), false, "the secret is required");
  assert.equal(pool.isStuckReport("w2!watchdog", "w1", "secret"), false, "from the worker's own watchdog");
  assert.equal(pool.isStuckReport("w2", "w1", "secret"), false, "from the worker itself");
  assert.equal(pool.stuck("w9", 999, 500), undefined, "a worker not in the pool");
  const out = pool.stuck("w1", d("b"), 500)!;
  assert.equal(out.redelivered, 1);
  assert.deepEqual(out.poisoned.map((p) => [p.step, p.whys]), [
    [b, ["worker w1: the handler blocked its event loop for 500 ms"]],
  ]);
  assert.equal(pool.size, 0, "the worker gets no more steps until it speaks again");
  ready("w2", 1);
  pool.pump();
  assert.deepEqual(sent, ["w1:a", "w1:b", "w2:a"]);
});

Deno.test("pool: a worker that says BYE gets no more steps and is forgotten once its steps are back", () => {
  const { sent, events, pool, ready, d } = setup();
  ready("w1", 2);
  pool.submit(new Step("a"));
  pool.bye("w1");
  assert.equal(pool.credit, 0, "a leaving worker's credit is not counted");
  pool.submit(new Step("b"));
  assert.deepEqual(sent, ["w1:a"]);
  assert.equal(pool.size, 1);
  pool.retire("w1", d("a"));
  assert.equal(pool.size, 0);
  assert.equal(events.at(-1), "left w1");
});

Deno.test("pool: READY sets the credit less the steps in flight; an HB without a list only while it holds nothing", () => {
  const { pool, ready } = setup();
  ready("w1", 3);
  pool.submit(new Step("a"));
  ready("w1", 3); // the same worker, again (a restart of its connection)
  assert.equal(pool.worker("w1")!.credit, 2);
  pool.status("w1", "HB", { credit: 3 }, () => "");
  assert.equal(pool.worker("w1")!.credit, 2, "an HB without a list does not override what the pool counts");
});

Deno.test("pool: a worker's list of steps: removing a step twice, or one of another list, changes nothing", () => {
  const link = (d: number) => ({ d, prev: undefined, next: undefined, list: undefined });
  const a = new InFlightList();
  const b = new InFlightList();
  const [x, y, z, w] = [link(1), link(2), link(3), link(4)];
  a.push(x);
  a.push(y);
  a.push(z);
  b.push(w);
  a.remove(y);
  a.remove(y);
  a.remove(w); // b's
  assert.deepEqual([...a], [1, 3]);
  assert.equal(a.size, 2);
  assert.deepEqual([...b], [4]);
  assert.throws(() => b.push(x), /in a list already/);
  a.remove(x);
  a.remove(z);
  assert.deepEqual([...a], []);
  assert.equal(a.size, 0);
  a.push(y); // removed ones may be pushed again
  assert.deepEqual([...a], [2]);
});

Deno.test("pool: with a pack window, steps keep to one worker while its steps come back in time", () => {
  const { clock, sent, pool, ready, d } = setup(2, 1);
  ready("w1", 4);
  ready("w2", 4);
  // Neither has shown how fast its steps come back: the most credit first, as without a window.
  const [a, b] = steps("a", "b");
  pool.submit(a);
  pool.submit(b);
  assert.deepEqual(sent, ["w1:a", "w2:b"]);
  clock.now = 0.5;
  pool.retire("w1", d("a"));
  pool.retire("w2", d("b"));
  // Both came back in 0.5 ms: one takes them all (on a tie, the first to join), several in flight at once.
  for (const s of steps("c", "e", "f")) pool.submit(s);
  assert.deepEqual(sent.slice(2), ["w1:c", "w1:e", "w1:f"]);
  // The same load without a window spreads by credit.
  const spread = setup(2, 0);
  spread.ready("w1", 4);
  spread.ready("w2", 4);
  for (const s of steps("a", "b")) spread.pool.submit(s);
  spread.clock.now = 0.5;
  spread.pool.retire("w1", spread.d("a"));
  spread.pool.retire("w2", spread.d("b"));
  for (const s of steps("c", "e", "f")) spread.pool.submit(s);
  assert.deepEqual(spread.sent.slice(2), ["w1:c", "w2:e", "w1:f"]);
});

Deno.test("pool: with a pack window, a worker holding a step older than the window is passed over", () => {
  const { clock, sent, pool } = paced(4, 0.2, 0.2);
  pool.submit(new Step("c")); // w1, kept in flight (a slow handler)
  clock.now = 1.2;
  pool.submit(new Step("e")); // c is 1 ms old: w2, which keeps up
  assert.deepEqual(sent.slice(2), ["w1:c", "w2:e"]);
  clock.now = 2.3;
  // Both now hold a step older than the window: the most credit (w1 3, w2 3: the first to join).
  pool.submit(new Step("f"));
  pool.submit(new Step("g"));
  assert.deepEqual(sent.slice(4), ["w1:f", "w2:g"]);
});

Deno.test("pool: with a pack window, a worker whose steps come back slowly is passed over even when idle", () => {
  const { sent, pool } = paced(4, 5, 0.3); // w1's step back in 5 ms, w2's in 0.3
  assert.ok(pool.worker("w1")!.roundTrip >= 1 && pool.worker("w2")!.roundTrip < 1);
  for (const s of steps("p", "q", "r")) pool.submit(s);
  assert.deepEqual(sent.slice(2), ["w2:p", "w2:q", "w2:r"], "the one in time, though it joined second");
});

Deno.test("pool: with a pack window, steps waiting for credit are spread by credit", () => {
  const { clock, sent, pool, d } = paced(2, 0.2, 0.2);
  // Both keep up; w1 takes the new ones until out of credit, then w2, then they wait.
  for (const s of steps("c", "e", "f", "g", "h", "i")) pool.submit(s);
  assert.deepEqual(sent.slice(2), ["w1:c", "w1:e", "w2:f", "w2:g"]);
  assert.equal(pool.queued, 2);
  clock.now = 0.4;
  pool.retire("w1", d("c"));
  pool.retire("w2", d("f"));
  pool.retire("w2", d("g"));
  // h and i still wait: a new step goes to the most credit, w2, though only w1 keeps up (1
  // credit, its step e 0.2 ms old; w2's average just now past the window).
  pool.worker("w2")!.roundTrip = 1;
  pool.submit(new Step("j"));
  assert.deepEqual(sent.slice(6), ["w2:j"]);
  // The waiting ones likewise: w2 (2 credits) before w1 (1), though only w1 keeps up.
  clock.now = 0.45;
  pool.retire("w2", d("j"));
  pool.worker("w2")!.roundTrip = 1;
  pool.pump();
  assert.deepEqual(sent.slice(7), ["w2:h", "w1:i"]);
  assert.equal(pool.queued, 0);
});

Deno.test("pool: with a pack window, the load goes to the worker whose steps come back soonest, though it joined second", () => {
  const { clock, sent, pool, d } = paced(8, 0.9, 0.2); // w1 within the window too
  const rt = (k: string) => pool.worker(k)!.roundTrip;
  assert.deepEqual([rt("w1"), rt("w2")], [0.9, 0.2], "the first step's time");
  for (const s of steps("c", "e")) pool.submit(s);
  assert.deepEqual(sent.slice(2), ["w2:c", "w2:e"]);
  clock.now = 1.3;
  pool.retire("w2", d("c"));
  assert.equal(rt("w2"), 0.2 + (0.4 - 0.2) / 8, "then a moving average, weight 1/8");
});

Deno.test("pool: with a pack window, the worker that has the load keeps it until another's average is under half of its", () => {
  /** Where step e goes once w1's step a, sent before w2 took the load, comes back and w1's average was `w1` before it. */
  const where = (w1: number) => {
    const { clock, sent, pool, ready, d } = setup(2, 1);
    ready("w1", 8);
    ready("w2", 8);
    for (const s of steps("a", "b")) pool.submit(s); // a to w1, b to w2: neither's pace known
    clock.now = 0.9;
    pool.retire("w2", d("b")); // w2: 0.9 ms
    pool.submit(new Step("c")); // w2 keeps up, w1 is not known to: w2 takes the load
    Object.assign(pool.worker("w1")!, { roundTrip: w1, measured: true }); // as if w1's earlier steps had come back so
    clock.now = 0.95;
    pool.retire("w1", d("a")); // 0.95 ms
    pool.submit(new Step("e"));
    return sent.slice(2);
  };
  assert.deepEqual(where(0.6), ["w2:c", "w2:e"], "w1 at 0.64 against w2's 0.9: w2 keeps it");
  assert.deepEqual(where(0.3), ["w2:c", "w1:e"], "w1 at 0.38, under half of 0.9: w1 takes it");
});

Deno.test("pool: with a pack window, when the home worker's own steps slow down, a worker under half its average takes the load", () => {
  const { clock, sent, pool, d } = paced(8, 0.3, 0.4);
  // w1 has the load; its steps now take 0.95 ms each.
  let n = 0;
  for (; n < 40 && sent.at(-1) !== `w2:s${n - 1}`; n++) {
    pool.submit(new Step(`s${n}`));
    const [w] = sent.at(-1)!.split(":");
    clock.now += 0.95;
    pool.retire(w, d(`s${n}`));
  }
  const w1 = sent.slice(2).filter((x) => x.startsWith("w1")).length;
  assert.ok(n < 40, "w2 took the load");
  // w1's average passes 0.8 (twice w2's 0.4) with its 11th slow step (0.95 - 0.65 * (7/8)^11 =
  // 0.80): the 12th goes to w2.
  assert.equal(w1, 11, sent.slice(2).join(" "));
});

Deno.test("pool: with a pack window, a worker whose pace is not known gets one step at a time until it is, and takes the load if it is faster", () => {
  const { clock, sent, pool, ready, d } = setup(2, 1);
  ready("w1", 8);
  pool.submit(new Step("a"));
  clock.now = 0.6;
  pool.retire("w1", d("a")); // w1: 0.6 ms, and the load
  pool.submit(new Step("b"));
  ready("w3", 8); // joins later
  for (const s of steps("c", "e")) pool.submit(s);
  assert.deepEqual(sent.slice(1), ["w1:b", "w3:c", "w1:e"], "one step to w3 while its pace is unknown");
  clock.now = 0.7;
  pool.retire("w3", d("c")); // w3: 0.1 ms, under half of w1's 0.6
  pool.submit(new Step("f"));
  assert.deepEqual(sent.slice(4), ["w3:f"]);
  assert.equal(pool.worker("w3")!.measured, true);
});

Deno.test("pool: with a pack window, one slow step counts at most twice the window in the average", () => {
  const { clock, pool, ready, d } = setup(2, 1);
  ready("w1", 4);
  pool.submit(new Step("a"));
  clock.now = 0.5;
  pool.retire("w1", d("a"));
  pool.submit(new Step("b"));
  clock.now = 30_000.5; // a 30 s step
  pool.retire("w1", d("b"));
  const after = 0.5 + (2 - 0.5) / 8;
  assert.equal(pool.worker("w1")!.roundTrip, after);
  // A result timed before its step was sent (a clock read early) counts as 0, never less.
  pool.submit(new Step("c"));
  pool.retire("w1", d("c"), clock.now - 5);
  assert.equal(pool.worker("w1")!.roundTrip, after - after / 8);
});

Deno.test("pool: with a pack window, a worker dropped before its pace was known gets no step", () => {
  const { clock, sent, pool, ready, d } = setup(2, 1);
  ready("w1", 8);
  pool.submit(new Step("a"));
  clock.now = 0.5;
  pool.retire("w1", d("a")); // w1 has the load
  ready("w2", 8); // joins, and falls silent before any step
  clock.now = HB_TIMEOUT + 1;
  pool.status("w1", "HB", { credit: 8 }, () => "link-w1");
  assert.deepEqual(pool.expire().map((x) => x.key), ["w2"]);
  for (const s of steps("b", "c")) pool.submit(s);
  assert.deepEqual(sent.slice(1), ["w1:b", "w1:c"]);
});

Deno.test("pool: with a pack window, a leaving worker or one reserved for a suspect is not given steps for keeping up", () => {
  const { clock, sent, pool, ready, d } = setup(2, 1);
  ready("w1", 8);
  ready("w2", 8);
  ready("w3", 8);
  for (const s of steps("a", "b", "c")) pool.submit(s);
  clock.now = 0.2;
  for (const s of ["a", "b", "c"]) pool.retire(sent.find((x) => x.endsWith(`:${s}`))!.split(":")[0], d(s));
  pool.submit(new Step("e"));
  assert.deepEqual(sent.slice(3), ["w1:e"], "all three keep up alike: the first to join");
  pool.bye("w1");
  pool.submit(new Step("f"));
  pool.worker("w2")!.isolating = true;
  pool.submit(new Step("g"));
  assert.deepEqual(sent.slice(4), ["w2:f", "w3:g"]);
});

Deno.test("pool: with a pack window, a burst past PACK_MAX_STEPS is spread, though its worker keeps up", () => {
  const { sent, pool } = paced(100, 0.2, 0.2);
  // One pass: the clock does not move, so every step is "young".
  for (let i = 0; i < PACK_MAX_STEPS + 2; i++) pool.submit(new Step(`s${i}`));
  const burst = sent.slice(2).map((s) => s.split(":")[0]);
  assert.deepEqual(burst.slice(0, PACK_MAX_STEPS), Array(PACK_MAX_STEPS).fill("w1"));
  assert.deepEqual(burst.slice(PACK_MAX_STEPS), ["w2", "w2"]);
});

Deno.test("pool: with a pack window, a worker dropped while it had the load gets no more steps", () => {
  const { clock, sent, pool, ready, d } = paced(8, 0.2, 0.2);
  pool.submit(new Step("c"));
  clock.now = 0.4;
  pool.retire("w1", d("c"));
  assert.deepEqual(sent.slice(2), ["w1:c"]);
  // w1 falls silent; w2 does not.
  clock.now = HB_TIMEOUT + 1;
  pool.status("w2", "HB", { credit: 8 }, () => "link-w2");
  const [silent] = pool.expire();
  assert.equal(silent.key, "w1");
  pool.submit(new Step("e"));
  assert.deepEqual(sent.slice(3), ["w2:e"]);
  // w1 comes back under the same id: a new worker, its pace unknown: one step at a time.
  ready("w1", 8);
  assert.equal(pool.worker("w1")!.measured, false);
  for (const s of steps("f", "g")) pool.submit(s);
  assert.deepEqual(sent.slice(4), ["w1:f", "w2:g"]);
});

Deno.test("subject options: a pack window that is not a number of ms, 0 or more, is refused", () => {
  const base = {
    flows: new Map(),
    pullAddress: "inproc://p",
    workerAddress: "inproc://w",
    integrationManagerAddress: "inproc://i",
  };
  for (const packWindow of [Infinity, -1, NaN]) {
    assert.throws(() => resolveSubjectOptions({ ...base, packWindow }), RangeError, String(packWindow));
  }
  assert.equal(resolveSubjectOptions({ ...base, packWindow: 0.5 }).packWindow, 0.5);
  assert.equal(resolveSubjectOptions(base).packWindow, 1, "the default");
});
