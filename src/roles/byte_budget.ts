/**
 * Byte budgets for libzmq queues. libzmq's high-water marks count messages, not bytes; these
 * helpers turn a budget in bytes into a high-water mark, fixed when a socket is made (changing
 * one at run time can stall a connection for good: see integration_manager.ts).
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
 * The publication size a subscriber's budget is counted in: its queue holds `budget` / this
 * (16,384 publications for 64 MiB: enough to ride out a subscriber's 100-200 ms stall at the
 * deployment's peak rate; 1,024 lost finals of healthy subscribers under a flood).
 */
export const SUBSCRIBER_PUBLICATION_BYTES = 4 * 1024;

/**
 * The high-water mark of each subscriber's queue in the IM, in publications: `budget` / 4 KiB,
 * at least 16 (16,384 for the default 64 MiB). Fixed for the IM's life (see integration_manager.ts).
 *
 * @example
 * ```ts
 * import { subscriberHwm } from "./byte_budget.ts";
 * subscriberHwm(64 * 1024 * 1024); // 16384
 * ```
 */
export function subscriberHwm(budget: number): number {
  return Math.max(16, Math.floor(budget / SUBSCRIBER_PUBLICATION_BYTES));
}
