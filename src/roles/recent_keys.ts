/**
 * The Subject's memory of recent requests, for dropping duplicates: the last `window` keys,
 * each kept as a 64-bit hash in typed arrays (an open-addressing table, and a ring that says
 * which key to forget next). Nothing in it is a JavaScript object, so a window of 100,000
 * requests costs the garbage collector nothing; a `Set` of key strings made every request's
 * key survive into the old generation, and cost about 15% of the Subject's peak rate.
 *
 * Two different keys share a hash with probability 2⁻⁶⁴ per pair: with a window of 100,000,
 * a new request is taken for a duplicate about once in 2×10¹⁴ requests. Pure: no sockets.
 *
 * @module
 */

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** A key's two 32-bit hashes, left here by {@linkcode RecentKeys.seen} (no allocation). */
let h1 = 0;
let h2 = 0;

function addString(s: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, FNV_PRIME);
    h2 = Math.imul(h2 ^ c, 0x9e3779b1);
    h2 ^= h2 >>> 15;
  }
}

function addNumber(n: number): void {
  h1 = Math.imul(h1 ^ (n | 0), FNV_PRIME);
  h1 = Math.imul(h1 ^ 0xff, FNV_PRIME); // a separator, so "a" then 1 differs from "a1"
  h2 = Math.imul(h2 ^ (n | 0), 0x85ebca6b);
  h2 ^= h2 >>> 13;
  h2 = Math.imul(h2 ^ 0xff, 0xc2b2ae35);
}

/** The fields of a request that tell it from another (header `id`, `pos`, `n`, `resume`). */
function hashKey(
  id: string,
  pos: number | undefined,
  n: number | undefined,
  resume: string | undefined,
): void {
  h1 = FNV_OFFSET;
  h2 = 0x2545f491;
  addString(id);
  addNumber(id.length);
  addNumber(pos === undefined ? -1 : pos);
  addNumber(n === undefined ? -1 : n);
  addString(resume ?? "");
  addNumber(resume === undefined ? -1 : resume.length);
  h1 >>>= 0;
  h2 >>>= 0;
}

/**
 * The last `window` request keys.
 *
 * @example
 * ```ts
 * import { RecentKeys } from "./recent_keys.ts";
 * const recent = new RecentKeys(2);
 * [recent.seen("a", 0, 0), recent.seen("a", 0, 0), recent.seen("a", 1, 1)]; // [false, true, false]
 * recent.seen("b", 0, 0); // false: "a", 0, 0 is forgotten (the window holds two keys)
 * recent.seen("a", 0, 0); // false
 * ```
 */
export class RecentKeys {
  readonly #window: number;
  readonly #mask: number;
  readonly #hi: Uint32Array;
  readonly #lo: Uint32Array;
  readonly #used: Uint8Array;
  readonly #ringHi: Uint32Array;
  readonly #ringLo: Uint32Array;
  #next = 0;
  #count = 0;
  /** Whether the last {@linkcode RecentKeys.seen} remembered its key (see `forgetLast`). */
  #lastNew = false;

  /** Remembers the last `window` keys (at least 1). */
  constructor(window: number) {
    this.#window = Math.max(1, Math.floor(window));
    let capacity = 16;
    while (capacity < this.#window * 2) capacity *= 2; // at most half full: short probes
    this.#mask = capacity - 1;
    this.#hi = new Uint32Array(capacity);
    this.#lo = new Uint32Array(capacity);
    this.#used = new Uint8Array(capacity);
    this.#ringHi = new Uint32Array(this.#window);
    this.#ringLo = new Uint32Array(this.#window);
  }

  /** Keys remembered now. */
  get size(): number {
    return this.#count;
  }

  /**
   * True if this key is among the last `window` seen; otherwise remembers it (forgetting the
   * oldest when the window is full) and returns false.
   */
  seen(id: string, pos?: number, n?: number, resume?: string): boolean {
    hashKey(id, pos, n, resume);
    const hi = h1, lo = h2;
    let i = lo & this.#mask;
    this.#lastNew = false;
    while (this.#used[i]) {
      if (this.#lo[i] === lo && this.#hi[i] === hi) return true;
      i = (i + 1) & this.#mask;
    }
    if (this.#count === this.#window) this.#forget(this.#ringHi[this.#next], this.#ringLo[this.#next]);
    else this.#count++;
    // #forget may have moved entries, but never into a free run that ends at i: probe again.
    i = lo & this.#mask;
    while (this.#used[i]) i = (i + 1) & this.#mask;
    this.#used[i] = 1;
    this.#hi[i] = hi;
    this.#lo[i] = lo;
    this.#ringHi[this.#next] = hi;
    this.#ringLo[this.#next] = lo;
    this.#next = this.#next + 1 === this.#window ? 0 : this.#next + 1;
    this.#lastNew = true;
    return false;
  }

  /**
   * Forgets the key the last {@linkcode RecentKeys.seen} remembered (nothing if it found its key,
   * or this was called since): a request refused rather than run is no duplicate when it is sent
   * again. A key it had pushed out of the window stays out.
   */
  forgetLast(): void {
    if (!this.#lastNew) return;
    this.#lastNew = false;
    this.#next = this.#next === 0 ? this.#window - 1 : this.#next - 1;
    this.#forget(this.#ringHi[this.#next], this.#ringLo[this.#next]);
    this.#count--;
  }

  /** Removes a key, shifting later entries of its probe run back (no tombstones). */
  #forget(hi: number, lo: number): void {
    const mask = this.#mask;
    let i = lo & mask;
    while (this.#used[i] && !(this.#lo[i] === lo && this.#hi[i] === hi)) i = (i + 1) & mask;
    if (!this.#used[i]) return;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (!this.#used[j]) break;
      const home = this.#lo[j] & mask;
      // Entry j may move to the hole at i when its home is not cyclically within (i, j].
      const inside = i <= j ? home > i && home <= j : home > i || home <= j;
      if (inside) continue;
      this.#hi[i] = this.#hi[j];
      this.#lo[i] = this.#lo[j];
      i = j;
    }
    this.#used[i] = 0;
  }
}
