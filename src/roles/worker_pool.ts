/**
 * The Subject's workers and the steps they hold: credit, steps in flight, the queue of steps
 * waiting for credit, reconciliation against heartbeats, redelivery, liveness, and poison
 * detection. Pure bookkeeping with an injected clock: no sockets. It decides; the Subject
 * carries the decisions out (it writes each step the pool hands to `send` into that worker's
 * batch, and publishes the errors of the steps it reports poisoned).
 *
 * Workers get steps only while they have credit (one per step they run at once). With a pack
 * window (`packWindow`), a step goes to a worker that keeps up: its steps come back in less than
 * the window on average, none of those it holds was sent a window or more ago, and it holds fewer
 * than {@linkcode PACK_MAX_STEPS}. Of those, the one that took the last such step keeps them (its
 * "home") until it falls behind or another's average is under half of its (checked as either's
 * steps come back); otherwise the one whose steps come back soonest. A worker whose pace is not
 * known yet (no step of it has come back) gets one step at a time while the home keeps up, so that
 * a faster worker that joins later is found. So a light load keeps to one worker, which then takes
 * its steps in larger batches and wakes fewer threads per step, and the others join in as soon as
 * that one falls behind. When none keeps up, when steps are waiting for credit, or without a
 * window, the one with the most credit gets it. Every step sent stays in flight until its result
 * comes back. A worker silent past the heartbeat timeout, or whose watchdog reports a handler
 * blocking its event loop, is dropped and its steps go back to the front of the queue. A step
 * whose workers failed `maxDeliveries` times is poisoned when the last failure is pinned on it (its
 * worker's watchdog named it, or it was the only step its worker held); otherwise it runs once
 * more, alone on a reserved worker, so that innocent steps that shared two dying workers with a
 * poison one are not poisoned with it.
 *
 * @example
 * ```ts
 * import { PoolStep, WorkerPool } from "./worker_pool.ts";
 * class Job extends PoolStep {
 *   constructor(readonly name: string) {
 *     super();
 *   }
 * }
 * let now = 0;
 * const sent: number[] = [];
 * const pool = new WorkerPool<Job, string>({
 *   heartbeatTimeout: 100,
 *   maxDeliveries: 2,
 *   now: () => now,
 *   sizeOf: (s) => s.name.length,
 *   firstDispatch: 1,
 *   send: (_w, d) => sent.push(d),
 * });
 * pool.status("w1", "READY", { credit: 1 }, () => "link of w1");
 * pool.submit(new Job("a"));
 * pool.submit(new Job("b")); // no credit left: it waits
 * now = 101;
 * const [silent] = pool.expire(); // w1 went silent: both steps wait for another worker
 * console.log(sent, silent.redelivered, pool.pendingCount); // [1] 1 2
 * ```
 *
 * @module
 */

import type { WorkerStatus } from "../wire/control.ts";
import { DispatchTable } from "./dispatch_table.ts";

/** A worker, as the pool knows it. `L` is what the Subject keeps with it (its socket identity…). */
export interface PoolWorker<L> {
  /** Its routing id. */
  readonly key: string;
  /** What the Subject made for it when it joined. */
  readonly link: L;
  /** Steps it can take now. */
  credit: number;
  /** Dispatch numbers of its steps in flight, in dispatch order. */
  readonly inflight: InFlightList;
  /** The clock's time when it was last heard from. */
  lastSeen: number;
  /**
   * How long its steps take to come back, in ms: its first step's time, then a moving average (the
   * pack window until a step has come back: see `measured`).
   */
  roundTrip: number;
  /** A step of it has come back, so `roundTrip` is its own. */
  measured: boolean;
  /** It said `BYE`: it gets no more steps, and is forgotten once its steps are back. */
  leaving: boolean;
  /** Reserved for a suspect step, which it runs alone (it gets no other step meanwhile). */
  isolating: boolean;
  /** The secret its watchdog's `STUCK` reports must carry (from its `READY` or `HB`). */
  watch?: string;
}

/** A link of an {@linkcode InFlightList}: a step at a worker, by its dispatch number. */
export interface Link {
  /** Its dispatch number. */
  readonly d: number;
  /** The step sent before it to the same worker, while both are in flight. */
  prev: Link | undefined;
  /** The step sent after it to the same worker, while both are in flight. */
  next: Link | undefined;
  /** The list it is in, if any. */
  list: InFlightList | undefined;
}

/**
 * What the pool keeps of a step while it is at a worker, in fields of the step itself: the pool's
 * steps extend this class. (A record of its own per delivery, which pointed at the step, was kept
 * as long as the step and, at peak, promoted to the old generation with it: 122 bytes per flow of
 * the Subject's, plus its `Map` entry's; docs/performance.md, round 23.) A step is at one worker
 * at most: the pool takes it back (out of its worker's list and its dispatch table) before it sends
 * it again, with a new dispatch number.
 */
export class PoolStep implements Link {
  /** @internal Its dispatch number while in flight; that of its last delivery after. */
  d = 0;
  /** @internal See {@linkcode Link}. */
  prev: Link | undefined = undefined;
  /** @internal See {@linkcode Link}. */
  next: Link | undefined = undefined;
  /** @internal See {@linkcode Link}. */
  list: InFlightList | undefined = undefined;
  /** @internal The worker it was last sent to. */
  worker = "";
  /** @internal The clock's time when sent (moved on by {@linkcode WorkerPool.paused}). */
  at = 0;
}

/**
 * A worker's steps in flight, in dispatch order: a list through the steps' own records. A `Set`
 * of dispatch numbers per worker took an entry per step and, always taking new numbers and
 * deleting old ones, copied its table every few thousand steps (see request_table.ts).
 */
export class InFlightList {
  #first: Link | undefined;
  #last: Link | undefined;
  #size = 0;

  /** Steps in the list. */
  get size(): number {
    return this.#size;
  }

  /** @internal Appends a step (the newest dispatch number) that is in no list. */
  push(l: Link): void {
    if (l.list !== undefined) throw new Error(`dispatch ${l.d} is in a list already`);
    l.list = this;
    l.prev = this.#last;
    l.next = undefined;
    if (this.#last) this.#last.next = l;
    else this.#first = l;
    this.#last = l;
    this.#size++;
  }

  /** @internal Removes a step of this list (one not in it, or removed already: nothing). */
  remove(l: Link): void {
    if (l.list !== this) return;
    l.list = undefined;
    if (l.prev) l.prev.next = l.next;
    else this.#first = l.next;
    if (l.next) l.next.prev = l.prev;
    else this.#last = l.prev;
    l.prev = l.next = undefined;
    this.#size--;
  }

  /** The dispatch numbers, oldest first. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let l = this.#first; l; l = l.next) yield l.d;
  }

  /** @internal The oldest step's record. */
  get first(): Link | undefined {
    return this.#first;
  }

  /** @internal The steps' records, oldest first (remove none while iterating). */
  *links(): IterableIterator<Link> {
    for (let l = this.#first; l; l = l.next) yield l;
  }
}

/** A worker's round trip moves by 1/this of the difference with each step back (a moving average). */
const ROUND_TRIP_WEIGHT = 8;
/**
 * A worker holding this many steps is not given more for keeping up: of a burst that arrives at
 * once (in one pass, when the clock does not move) the rest goes to other workers, whatever its
 * steps cost.
 */
export const PACK_MAX_STEPS = 64;

/** A step whose workers failed `maxDeliveries` times, the last failure pinned on it. */
export interface Poisoned<S> {
  readonly step: S;
  /** Why each delivery failed, in order. */
  readonly whys: readonly string[];
}

/** What dropping a failed worker decided. */
export interface Dropped<S> {
  /** The worker. */
  readonly key: string;
  /** Its steps put back at the front of the queue. */
  readonly redelivered: number;
  /** Its steps that end their requests with a `poisoned` error instead. */
  readonly poisoned: readonly Poisoned<S>[];
}

/** A worker dropped for silence. */
export interface Silent<S> extends Dropped<S> {
  /** How long it was silent, in ms. */
  readonly ms: number;
}

/** Options of {@linkcode WorkerPool}. */
export interface WorkerPoolOptions<S extends PoolStep, L> {
  /** Milliseconds of silence after which a worker is dropped and its steps given to another. */
  readonly heartbeatTimeout: number;
  /** Failed deliveries of one step before it is poisoned (see the module doc). */
  readonly maxDeliveries: number;
  /** The clock, in ms. @default {performance.now} */
  readonly now?: () => number;
  /**
   * Milliseconds: a step goes to a worker whose steps come back in less than this on average and
   * none of whose steps in flight is this old, before the one with the most credit (module doc).
   * 0: always the one with the most credit. @default {0}
   */
  readonly packWindow?: number;
  /** Bytes of a step. */
  readonly sizeOf: (step: S) => number;
  /** The first dispatch number (the Subject takes its clock, so a restart never reuses one). */
  readonly firstDispatch: number;
  /** Called for every step given to a worker, with its dispatch number. */
  readonly send: (worker: PoolWorker<L>, d: number, step: S) => void;
  /** Told when a worker joins and when a leaving worker is forgotten (for the log). */
  readonly observer?: {
    joined?(key: string, credit: number): void;
    left?(key: string): void;
  };
}

/** Workers, their credit, the steps at them and the steps waiting for them. */
export class WorkerPool<S extends PoolStep, L> {
  readonly #o: WorkerPoolOptions<S, L>;
  readonly #now: () => number;
  /** `packWindow`, or 0. */
  readonly #window: number;
  readonly #workers = new Map<string, PoolWorker<L>>();
  readonly #inflight = new DispatchTable<S>();
  #pending: S[] = [];
  #pendingHead = 0;
  #pendingBytes = 0;
  #heldBytes = 0;
  #nextDispatch: number;
  /** Why each delivery of a step ended in its worker's failure (the same step object travels with every redelivery). */
  readonly #failures = new WeakMap<S, string[]>();
  /** Steps that failed `maxDeliveries` times among others, waiting to run alone on a worker. */
  #suspects: S[] = [];
  /** The worker that took the last step for keeping up (see the module doc). */
  #home: PoolWorker<L> | undefined;
  /**
   * Workers none of whose steps has come back yet: those whose `measured` is false, kept apart so
   * that a pick need not look at every worker.
   */
  readonly #unmeasured = new Set<PoolWorker<L>>();
  #dispatched = 0;
  #redelivered = 0;
  #lost = 0;
  #poisoned = 0;

  /** A pool with no worker yet. */
  constructor(options: WorkerPoolOptions<S, L>) {
    this.#o = options;
    this.#now = options.now ?? (() => performance.now());
    this.#window = options.packWindow ?? 0;
    this.#nextDispatch = options.firstDispatch;
  }

  /** The clock the pool runs on. */
  now(): number {
    return this.#now();
  }

  /** The worker with this routing id, if connected. */
  worker(key: string): PoolWorker<L> | undefined {
    return this.#workers.get(key);
  }

  /** Workers connected now. */
  get size(): number {
    return this.#workers.size;
  }

  /** Credit of the workers not leaving. */
  get credit(): number {
    let sum = 0;
    for (const w of this.#workers.values()) if (!w.leaving) sum += w.credit;
    return sum;
  }

  /** Steps at workers now. */
  get inFlight(): number {
    return this.#inflight.size;
  }

  /** Steps waiting for credit (suspects included). */
  get pendingCount(): number {
    return this.#pending.length - this.#pendingHead + this.#suspects.length;
  }

  /** Steps in the queue for credit (suspects not included): what back-pressure counts. */
  get queued(): number {
    return this.#pending.length - this.#pendingHead;
  }

  /** Bytes of the steps in the queue for credit. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Bytes of every step held: queued, suspect, or at a worker until its result comes back. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** True while any step is held. */
  get busy(): boolean {
    return this.#inflight.size + this.pendingCount > 0;
  }

  /** Counters: steps sent (redeliveries included), redelivered, found lost, poisoned. */
  counts(): { dispatched: number; redelivered: number; lost: number; poisoned: number } {
    return {
      dispatched: this.#dispatched,
      redelivered: this.#redelivered,
      lost: this.#lost,
      poisoned: this.#poisoned,
    };
  }

  /** Takes a new step: to a worker with credit (returns `true`; the module doc says which), or queues it. */
  submit(step: S): boolean {
    const bytes = this.#o.sizeOf(step);
    this.#heldBytes += bytes;
    // With steps waiting for credit the workers are all busy: spread, as `pump` does.
    const w = this.#pick(this.#pendingHead === this.#pending.length);
    if (w) {
      this.#sendTo(w, step);
      return true;
    }
    this.#pending.push(step);
    this.#pendingBytes += bytes;
    return false;
  }

  /** Gives queued steps (suspects first, each alone on its reserved worker) to workers with credit. */
  pump(): void {
    this.#pumpSuspects();
    while (this.#pendingHead < this.#pending.length) {
      const w = this.#pick(false);
      if (!w) break;
      const step = this.#pending[this.#pendingHead];
      this.#pendingBytes -= this.#o.sizeOf(step);
      this.#sendTo(w, step);
      this.#pending[this.#pendingHead++] = undefined as unknown as S;
    }
    if (this.#pendingHead > 1024 && this.#pendingHead * 2 > this.#pending.length) {
      this.#pending = this.#pending.slice(this.#pendingHead);
      this.#pendingHead = 0;
    }
  }

  /**
   * A result from worker `key` for dispatch `d`: the step it answers, retired (its worker's credit
   * comes back); `"late"` if that step is no longer in flight (given to another worker), or
   * `"foreign"` if it was sent to another worker (dispatch numbers can be guessed).
   */
  retire(key: string, d: number, now: number = this.#now()): S | "late" | "foreign" {
    const f = this.#inflight.get(d);
    if (!f) return "late";
    if (f.worker !== key) return "foreign";
    this.#inflight.delete(d);
    this.#heldBytes -= this.#o.sizeOf(f);
    const owner = this.#workers.get(f.worker);
    if (owner) {
      owner.inflight.remove(f);
      owner.credit++;
      owner.lastSeen = now;
      if (this.#window > 0) this.#paced(owner, now - f.at, this.#window);
      this.#maybeForget(owner);
    }
    return f;
  }

  /**
   * A worker's `READY` or `HB`: it joins if new (`link` makes what the Subject keeps with it), is
   * alive now, and its credit is set from what it reports. An `HB` listing the steps it holds is
   * reconciled (see {@linkcode WorkerPool.reconcile}). Returns the steps found lost.
   */
  status(key: string, type: "READY" | "HB", status: WorkerStatus, link: () => L): number {
    let w = this.#workers.get(key);
    if (!w) {
      w = {
        key,
        link: link(),
        credit: 0,
        inflight: new InFlightList(),
        lastSeen: 0,
        // Unknown until its steps come back: no step goes to it for keeping up before then.
        roundTrip: this.#window,
        measured: false,
        leaving: false,
        isolating: false,
      };
      this.#workers.set(key, w);
      this.#unmeasured.add(w);
      this.#o.observer?.joined?.(key, status.credit);
    }
    w.lastSeen = this.#now();
    if (status.watch !== undefined) w.watch = status.watch;
    let lost = 0;
    if (type === "HB" && status.holding && status.last !== undefined) {
      const last = status.last;
      lost = this.reconcile(w, new Set(status.holding), last);
      // The worker's free credit as of this heartbeat, less the steps on their way to it (sent
      // after the last one it received; results travel ahead of the heartbeat). This also counts
      // steps it runs for a Subject before this one (a restart): their credit comes back here as
      // they finish, their results being late ones.
      let onTheWay = 0;
      for (const d of w.inflight) if (d > last) onTheWay++;
      w.credit = Math.max(0, status.credit - onTheWay);
    } else if (type === "READY" || w.credit + w.inflight.size === 0) {
      w.credit = Math.max(0, status.credit - w.inflight.size);
    }
    return lost;
  }

  /**
   * Finds the steps a live worker lost. Its heartbeat lists the steps it holds and the highest
   * dispatch number it received; results travel on the same connection ahead of the heartbeat.
   * So a step still in flight that the worker does not hold was lost on the way (a dropped
   * connection, a proxy) if it was sent before a step the worker did receive, or more than a
   * heartbeat timeout ago. Such steps go to the front of the queue (a lost step is no failure of
   * its worker); if the first copy turns up after all, its result is a late one. Returns how many.
   */
  reconcile(w: PoolWorker<L>, holding: ReadonlySet<number>, last: number): number {
    const now = this.#now();
    // In dispatch order, as the list keeps them.
    const steps: S[] = [];
    for (const l of w.inflight.links()) {
      const f = l as S; // (the pool puts only its own steps in a worker's list)
      if (holding.has(f.d)) continue;
      if (f.d <= last || now - f.at > this.#o.heartbeatTimeout) steps.push(f);
    }
    if (!steps.length) return 0;
    for (const f of steps) {
      this.#inflight.delete(f.d);
      w.inflight.remove(f);
      w.credit++;
    }
    this.#lost += steps.length;
    this.#redeliver(steps);
    return steps.length;
  }

  /** A worker's `BYE`: it gets no more steps, and is forgotten once its steps are back. */
  bye(key: string): void {
    const w = this.#workers.get(key);
    if (!w) return;
    w.leaving = true;
    this.#maybeForget(w);
  }

  /**
   * True if a `STUCK` report from socket `sender`, about `worker`, carries that worker's secret
   * and comes from the worker itself (a sandbox's report) or from its watchdog thread's socket.
   */
  isStuckReport(sender: string, worker: string, token: string | undefined): boolean {
    const w = this.#workers.get(worker);
    return w?.watch !== undefined && token === w.watch &&
      (sender === worker || sender === `${worker}!watchdog`);
  }

  /**
   * A worker reports that the handler of step `d` has blocked its event loop (its watchdog) or
   * one of its sandboxes for `ms` ms, or (`reason`) that the sandbox running it broke the
   * protocol. The worker gives up every step it holds on such a report
   * (a sandbox's worker runs none of them on, PROTOCOL.md), so they all go back to the queue at
   * once; that step alone counts a failed delivery, the others are innocent. The worker is
   * dropped: it gets no more steps until it speaks again (its watchdog kills it once the handler
   * runs past its timeout; a sandbox is restarted). A step no longer at that worker counts
   * nothing (its steps were taken back already, and it was counted then, or it was one of them).
   * `undefined` for a worker not in the pool.
   */
  stuck(key: string, d: number, ms: number, reason?: string): Dropped<S> | undefined {
    const w = this.#workers.get(key);
    if (!w) return undefined;
    const f = this.#inflight.get(d);
    const culprit = f?.worker === key ? f : undefined;
    const poisoned: Poisoned<S>[] = [];
    const why = reason
      ? `worker ${key}: ${reason}`
      : `worker ${key}: the handler blocked its event loop for ${ms} ms`;
    const steps = this.#takeSteps(w).filter((s) =>
      s !== culprit || this.#deliveryFailed(s, why, true, poisoned)
    );
    this.#redeliver(steps);
    return { key, redelivered: steps.length, poisoned };
  }

  /**
   * This process did not run for `ms` milliseconds (it was stopped, or its event loop blocked):
   * what its workers sent meanwhile waits unread, so that time counts neither as a worker's silence
   * nor as a step's time on its way. (A Subject stopped past the heartbeat timeout took every
   * worker for dead when it ran again, before reading their heartbeats, and a step ended
   * `poisoned` after two such stops: an outside attack.)
   */
  paused(ms: number): void {
    if (!(ms > 0)) return;
    const now = this.#now();
    for (const w of this.#workers.values()) w.lastSeen = Math.min(now, w.lastSeen + ms);
    for (const f of this.#inflight.values()) f.at = Math.min(now, f.at + ms);
  }

  /** Drops the workers silent past the heartbeat timeout; their steps go back to the queue. */
  expire(): Silent<S>[] {
    const now = this.#now();
    const out: Silent<S>[] = [];
    for (const w of [...this.#workers.values()]) {
      if (now - w.lastSeen <= this.#o.heartbeatTimeout) continue;
      const ms = Math.round(now - w.lastSeen);
      const why = `worker ${w.key} went silent for ${ms} ms (it died, hung or was stopped)`;
      const held = this.#takeSteps(w);
      const poisoned: Poisoned<S>[] = [];
      const lost = held.filter((s) => this.#deliveryFailed(s, why, held.length === 1, poisoned));
      this.#redeliver(lost);
      out.push({ key: w.key, ms, redelivered: lost.length, poisoned });
    }
    return out;
  }

  /**
   * Records that a delivery of `step` ended in its worker's failure. Returns `true` if it is to be
   * delivered again as usual. After `maxDeliveries` failures the step is poisoned (added to
   * `poisoned`, no longer held) when the last failure is pinned on it: its worker's watchdog named
   * it, or it was the only step its worker held. A step whose worker died holding other steps too
   * may only have been unlucky: it gets one more delivery, alone on a reserved worker, so innocent
   * steps that shared two dying workers with a poison one are not poisoned with it. Only for steps
   * the pool has taken back from their worker (a step still in flight would be queued twice).
   */
  #deliveryFailed(step: S, why: string, pinned: boolean, poisoned: Poisoned<S>[]): boolean {
    let whys = this.#failures.get(step);
    if (!whys) this.#failures.set(step, whys = []);
    whys.push(why);
    if (whys.length < this.#o.maxDeliveries) return true;
    if (!pinned) {
      this.#suspects.push(step);
      this.#redelivered++;
      return false;
    }
    this.#poisoned++;
    this.#heldBytes -= this.#o.sizeOf(step);
    poisoned.push({ step, whys });
    return false;
  }

  /**
   * A step of `w` came back after `ms`: its average moves (the first step's time is its first
   * average; a sample counts at most twice the window, so that one slow step does not keep a
   * worker out for long). Then the home worker changes to a worker whose average is under half
   * the home's: to `w`, or, when the step was the home's own, to the fastest other that could
   * take steps now.
   */
  #paced(w: PoolWorker<L>, ms: number, window: number): void {
    const sample = Math.max(0, Math.min(ms, 2 * window));
    if (w.measured) w.roundTrip += (sample - w.roundTrip) / ROUND_TRIP_WEIGHT;
    else {
      w.roundTrip = sample;
      w.measured = true;
    }
    this.#unmeasured.delete(w);
    const home = this.#home;
    if (!home) return;
    if (w !== home) {
      if (w.roundTrip * 2 < home.roundTrip) this.#home = w;
      return;
    }
    let fastest: PoolWorker<L> | undefined;
    for (const o of this.#workers.values()) {
      if (o === home || !o.measured || o.leaving || o.isolating || o.credit <= 0) continue;
      if (!fastest || o.roundTrip < fastest.roundTrip) fastest = o;
    }
    if (fastest && fastest.roundTrip * 2 < home.roundTrip) this.#home = fastest;
  }

  /** `w` keeps up (see the module doc). */
  #keepsUp(w: PoolWorker<L>, now: number, window: number): boolean {
    if (w.leaving || w.isolating || w.credit <= 0 || w.roundTrip >= window) return false;
    if (w.inflight.size >= PACK_MAX_STEPS) return false;
    const oldest = w.inflight.first as S | undefined;
    return !oldest || now - oldest.at < window;
  }

  #pick(pack: boolean): PoolWorker<L> | undefined {
    const window = this.#window;
    if (pack && window > 0) {
      const now = this.#now();
      const home = this.#home;
      if (home && this.#workers.get(home.key) === home && this.#keepsUp(home, now, window)) {
        // A worker whose pace is not known yet gets one step at a time until it is.
        for (const w of this.#unmeasured) {
          if (w.leaving || w.isolating || w.credit <= 0 || w.inflight.size > 0) continue;
          if (this.#workers.get(w.key) === w) return w;
        }
        return home;
      }
      let fastest: PoolWorker<L> | undefined;
      for (const w of this.#workers.values()) {
        if ((!fastest || w.roundTrip < fastest.roundTrip) && this.#keepsUp(w, now, window)) fastest = w;
      }
      if (fastest) return this.#home = fastest;
    }
    let best: PoolWorker<L> | undefined;
    for (const w of this.#workers.values()) {
      if (!w.leaving && !w.isolating && w.credit > 0 && (!best || w.credit > best.credit)) best = w;
    }
    return best;
  }

  #sendTo(w: PoolWorker<L>, step: S): void {
    // (Checked before anything changes: a step still in a list is still at a worker.)
    if (step.list !== undefined) throw new Error(`the step of dispatch ${step.d} is at a worker still`);
    const d = this.#nextDispatch++;
    w.credit--;
    step.d = d;
    step.worker = w.key;
    step.at = this.#now();
    w.inflight.push(step);
    this.#inflight.set(step);
    this.#dispatched++;
    this.#o.send(w, d, step);
  }

  /**
   * Sends suspect steps one at a time to a worker reserved for them: it gets no other step, and
   * the suspect goes once its steps in flight have finished. One worker at most is reserved; it
   * goes back to ordinary work when no suspect is left.
   */
  #pumpSuspects(): void {
    let reserved: PoolWorker<L> | undefined;
    for (const w of this.#workers.values()) if (w.isolating) reserved = w;
    if (!this.#suspects.length) {
      if (reserved && reserved.inflight.size === 0) reserved.isolating = false;
      return;
    }
    if (!reserved) {
      for (const w of this.#workers.values()) {
        if (!w.leaving && (!reserved || w.inflight.size < reserved.inflight.size)) reserved = w;
      }
      if (!reserved) return;
      reserved.isolating = true;
    }
    if (reserved.inflight.size === 0 && reserved.credit > 0) this.#sendTo(reserved, this.#suspects.shift()!);
  }

  /** Forgets a worker and takes back its steps in flight, in dispatch order. */
  #takeSteps(w: PoolWorker<L>): S[] {
    this.#remove(w);
    // (The list is in dispatch order: each step is appended as it is sent, with a new number.)
    const steps: S[] = [];
    for (const l of w.inflight.links()) steps.push(l as S);
    for (const f of steps) {
      this.#inflight.delete(f.d);
      w.inflight.remove(f); // (out of the forgotten worker's list: it may be sent again)
    }
    return steps;
  }

  /** Puts steps taken back from a worker at the front of the queue, in their order. */
  #redeliver(steps: S[]): void {
    this.#redelivered += steps.length;
    this.#pending = [...steps, ...this.#pending.slice(this.#pendingHead)];
    this.#pendingHead = 0;
    this.#pendingBytes += steps.reduce((n, s) => n + this.#o.sizeOf(s), 0);
  }

  #maybeForget(w: PoolWorker<L>): void {
    if (w.leaving && w.inflight.size === 0) {
      this.#remove(w);
      this.#o.observer?.left?.(w.key);
    }
  }

  /** `w` is no longer one of the workers. */
  #remove(w: PoolWorker<L>): void {
    this.#workers.delete(w.key);
    this.#unmeasured.delete(w);
    if (this.#home === w) this.#home = undefined;
  }
}
