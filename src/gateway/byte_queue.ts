/**
 * A queue bounded in bytes: what the gateway holds for one event-stream or WebSocket client.
 * A client that stops reading fills it, and is cut off instead of growing the gateway's memory.
 *
 * @module
 */

/**
 * Chunks waiting for one slow reader, at most `limit` bytes. {@linkcode ByteQueue.push} refuses
 * (returns `false`) a chunk that would go over: the caller then cuts the client off.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ByteQueue } from "./byte_queue.ts";
 * const q = new ByteQueue(8);
 * assert.equal(q.push(new Uint8Array(5)), true);
 * assert.equal(q.push(new Uint8Array(5)), false); // 10 bytes would be over 8
 * assert.equal(q.shift()?.length, 5);
 * assert.equal(q.bytes, 0);
 * ```
 */
export class ByteQueue {
  readonly #limit: number;
  #chunks: Uint8Array[] = [];
  #head = 0;
  #bytes = 0;

  /** A queue of at most `limit` bytes. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Bytes queued. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Chunks queued. */
  get length(): number {
    return this.#chunks.length - this.#head;
  }

  /** Queues `chunk`; `false` (and nothing queued) when it would go over the limit. */
  push(chunk: Uint8Array): boolean {
    if (this.#bytes + chunk.length > this.#limit) return false;
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    return true;
  }

  /** The oldest chunk, removed; `undefined` when empty. */
  shift(): Uint8Array | undefined {
    if (this.#head >= this.#chunks.length) return undefined;
    const c = this.#chunks[this.#head];
    this.#chunks[this.#head++] = EMPTY;
    this.#bytes -= c.length;
    if (this.#head > 1024 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
    return c;
  }

  /** Drops everything queued. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#bytes = 0;
  }
}

const EMPTY = new Uint8Array(0);
