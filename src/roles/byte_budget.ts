/**
 * Byte budgets for libzmq queues. libzmq's high-water marks count messages, not bytes; these
 * helpers turn a budget in bytes into a high-water mark for messages of a known or estimated
 * size.
 *
 * @module
 */

import { DEFAULT_MAX_MESSAGE_SIZE } from "../wire/protocol.ts";

/** Fewest messages a high-water mark derived from a byte budget allows. */
export const MIN_BUDGET_HWM = 16;
/** Most messages a high-water mark derived from a byte budget allows (the former fixed value). */
export const MAX_BUDGET_HWM = 100_000;

/**
 * Bytes each queue of the roles' internal hops (the Subject's sockets, the IM's receive side)
 * may hold per connection: its high-water mark is this over `max_message_size`
 * ({@linkcode hwmForBytes}), so 64 messages of the largest accepted size by default.
 */
export const QUEUE_BYTES = 64 * 1024 * 1024;

/**
 * Bytes libzmq spends on a message besides its frames (three `msg_t`s of 64 bytes in the pipe,
 * allocation headers), counted with each publication so tiny messages are not under-counted.
 */
export const MESSAGE_OVERHEAD = 256;

/** The high-water mark that keeps a queue of `messageBytes`-sized messages within `bytes`. */
export function hwmForBytes(bytes: number, messageBytes: number): number {
  const n = Math.floor(bytes / Math.max(1, messageBytes));
  return Math.min(MAX_BUDGET_HWM, Math.max(MIN_BUDGET_HWM, n));
}

/**
 * The high-water mark of a queue of the roles' internal hops: {@linkcode QUEUE_BYTES} in messages
 * of up to `maxMessageSize` bytes (64 by default).
 */
export function queueHwm(maxMessageSize: number = DEFAULT_MAX_MESSAGE_SIZE): number {
  return hwmForBytes(QUEUE_BYTES, maxMessageSize);
}

/**
 * A running estimate of message sizes that rises at once to a larger message and falls quickly
 * (by a quarter of the gap per smaller message, to within 1% of it after 16): a high-water mark
 * derived from it drops before a larger message is queued, and is back up for the small
 * messages after it before a burst of them can overflow a queue held low (a slow fall made a
 * burst of small publications after a few large ones overflow 74-message queues: lost finals).
 * However fast it falls, a stalled queue holds at most `budget` × (1 + ln(L/s)) bytes when sizes
 * fall from L to s: each message was let in under a mark of `budget` over a size no smaller
 * than its own.
 */
export class SizeEstimate {
  #value: number;

  /** Starts at `initial` bytes. */
  constructor(initial: number) {
    this.#value = initial;
  }

  /** The current estimate, in bytes. */
  get value(): number {
    return this.#value;
  }

  /** Takes one message's size into account; returns the new estimate. */
  add(bytes: number): number {
    if (bytes >= this.#value) this.#value = bytes;
    else this.#value += (bytes - this.#value) / 4;
    return this.#value;
  }
}
