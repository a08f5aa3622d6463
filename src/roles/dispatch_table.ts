/**
 * The worker pool's steps in flight by dispatch number. Dispatch numbers are given out one after
 * another, and most steps come back in about the order they were sent, so the steps in flight
 * hold a run of recent numbers: each is kept in the slot its number picks (its low bits) of an
 * array at least twice the steps in flight, with no hashing and no probing. A step still in
 * flight when a number that picks its slot comes (it has been out for as many dispatches as the
 * array has slots: a slow handler, a stalled worker) moves to a `Map` of such stragglers.
 *
 * A `Map` keyed by the numbers took about twice the time per step (a set, a get and a delete:
 * 190–210 ns against 90–100 in a microbenchmark), and, always taking new keys and deleting old
 * ones, copied its table every few thousand steps: copies that, alive at peak, were promoted to
 * the Subject's old generation (docs/performance.md, round 23). The array grows with the steps in
 * flight and shrinks when they fall below an eighth of it; at a resize every value is placed again
 * (a straggler may take a slot then, or stay one). Pure: no sockets, no clock.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DispatchTable } from "./dispatch_table.ts";
 * const t = new DispatchTable<{ d: number }>();
 * const a = { d: 1_000 }, b = { d: 1_001 };
 * t.set(a);
 * t.set(b);
 * assert.equal(t.get(1_001), b);
 * assert.equal(t.delete(1_000), true);
 * assert.equal(t.get(1_000), undefined);
 * assert.equal(t.size, 1);
 * ```
 *
 * @module
 */

/** Slots of an empty table (a power of two), and the fewest it shrinks to. */
const MIN_SLOTS = 64;

/** What a table holds: something with its dispatch number, a whole number from 0 to 2⁵³ − 1. */
export interface Dispatched {
  /** Its dispatch number. */
  readonly d: number;
}

/** Values by their dispatch numbers (see the module doc). */
export class DispatchTable<T extends Dispatched> {
  #slots: (T | undefined)[] = new Array(MIN_SLOTS).fill(undefined);
  #mask = MIN_SLOTS - 1;
  /** Values in flight whose slot a later number took. */
  readonly #stragglers = new Map<number, T>();
  #size = 0;

  /** Values held. */
  get size(): number {
    return this.#size;
  }

  /** Slots of the array now (for tests and the module doc's bound). */
  get slots(): number {
    return this.#slots.length;
  }

  /** Values that lost their slot to a later number (for tests). */
  get stragglers(): number {
    return this.#stragglers.size;
  }

  /** Adds `v` under its number, which no value held may have. */
  set(v: T): void {
    if (!Number.isSafeInteger(v.d) || v.d < 0) throw new RangeError(`not a dispatch number: ${v.d}`);
    if (this.get(v.d) !== undefined) throw new RangeError(`dispatch number ${v.d} is held already`);
    if (2 * (this.#size + 1) > this.#slots.length) this.#resize(this.#slots.length * 2);
    this.#place(v);
    this.#size++;
  }

  /** The value with number `d`, if held. */
  get(d: number): T | undefined {
    const v = this.#slots[d & this.#mask];
    if (v !== undefined && v.d === d) return v;
    return this.#stragglers.size === 0 ? undefined : this.#stragglers.get(d);
  }

  /** Removes the value with number `d`; `false` if none was held. */
  delete(d: number): boolean {
    const i = d & this.#mask;
    const v = this.#slots[i];
    if (v !== undefined && v.d === d) this.#slots[i] = undefined;
    else if (this.#stragglers.size === 0 || !this.#stragglers.delete(d)) return false;
    this.#size--;
    const n = this.#slots.length;
    if (n > MIN_SLOTS && this.#size * 8 < n) this.#resize(n / 2);
    return true;
  }

  /** The values held, in no particular order (change none of the table while iterating). */
  *values(): IterableIterator<T> {
    for (const v of this.#slots) if (v !== undefined) yield v;
    yield* this.#stragglers.values();
  }

  /** Puts `v` in its slot, moving a value found there to the stragglers. */
  #place(v: T): void {
    const i = v.d & this.#mask; // (the low 32 bits of a safe integer: ToInt32 is taken modulo 2³²)
    const there = this.#slots[i];
    if (there !== undefined) this.#stragglers.set(there.d, there);
    this.#slots[i] = v;
  }

  /** Moves every value into an array of `n` slots (stragglers too: they may have a slot now). */
  #resize(n: number): void {
    const old = this.#slots;
    const stragglers = [...this.#stragglers.values()];
    this.#stragglers.clear();
    this.#slots = new Array(n).fill(undefined);
    this.#mask = n - 1;
    // Oldest first, so that where two share a slot the newer keeps it (the older is the straggler).
    const all = [...stragglers, ...old.filter((v) => v !== undefined) as T[]].sort((a, b) => a.d - b.d);
    for (const v of all) this.#place(v);
  }
}
