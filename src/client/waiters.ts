/**
 * The callers waiting for a request's final publication, by request id: several may wait for
 * one id (a `request` and the `resume`s of its flow).
 *
 * @module
 */

import type { Publication } from "../wire/protocol.ts";

/** One caller's wait. */
export interface Waiter {
  /** The final publication arrived. */
  resolve(p: Publication): void;
  /** The wait failed (refused, the client closed). */
  reject(e: unknown): void;
}

/** Waiting callers by request id. */
export class Waiters {
  readonly #byId = new Map<string, Set<Waiter>>();

  /** Whether anyone waits for `id`. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** `w` waits for `id`. */
  add(id: string, w: Waiter): void {
    let ws = this.#byId.get(id);
    if (!ws) this.#byId.set(id, ws = new Set());
    ws.add(w);
  }

  /** `w` no longer waits for `id`. */
  remove(id: string, w: Waiter): void {
    const ws = this.#byId.get(id);
    if (ws?.delete(w) && ws.size === 0) this.#byId.delete(id);
  }

  /** Ends every wait for `id` with `p`. */
  resolve(id: string, p: Publication): void {
    const ws = this.#byId.get(id);
    if (!ws) return;
    this.#byId.delete(id);
    for (const w of ws) w.resolve(p);
  }

  /** Fails every wait for `id` with `e`. */
  reject(id: string, e: unknown): void {
    const ws = this.#byId.get(id);
    if (!ws) return;
    this.#byId.delete(id);
    for (const w of ws) w.reject(e);
  }

  /** Fails every wait with `e`. */
  rejectAll(e: unknown): void {
    for (const ws of this.#byId.values()) for (const w of ws) w.reject(e);
    this.#byId.clear();
  }
}
