/**
 * The options of a `Client` and of its requests, with their defaults.
 *
 * @module
 */

import type { CurveClientKeys } from "../zmq/curve.ts";
import type { Reactor } from "../zmq/reactor.ts";
import type { Publication } from "../wire/protocol.ts";

/** Milliseconds a request waits for its final publication, by default. */
export const DEFAULT_REQUEST_TIMEOUT = 30_000;

/** Milliseconds after which an unacknowledged message is sent again, by default. */
export const DEFAULT_RESEND_AFTER = 2000;

/** Options of `Client.connect`. */
export interface ClientOptions {
  /** The Subject's request endpoint (`subject_pull_address`). */
  readonly subject: string;
  /** The Integration Manager's publish endpoint (`integration_manager_pub_address`). */
  readonly publisher: string;
  /** Milliseconds `Client.request` waits for the final publication. @default {30000} */
  readonly requestTimeout?: number;
  /**
   * Milliseconds after which a message the Subject has not acknowledged is sent again, with
   * the same id (the Subject drops duplicates it has seen, so this does not run a request
   * twice). A request accepted earlier and refused `overloaded` by a restarted Subject is sent
   * again after this too, and so is a message whose refusal was of an earlier send of it while
   * its latest send still waits for an answer (PROTOCOL.md, _Copies of one id answered
   * differently_). 0 turns resending off (such a request is then answered `overloaded`).
   * @default {2000}
   */
  readonly resendAfter?: number;
  /** A reactor to share; by default the client makes its own. */
  readonly reactor?: Reactor;
  /** CURVE keys for tcp endpoints (its key pair and the Subject's / IM's public key); none: plaintext. */
  readonly curve?: CurveClientKeys;
  /**
   * The Subject's `max_message_size`: a request whose values are larger is refused here, with a
   * `RequestRefusedError` (reason `oversize`), as the Subject would refuse it; far over it, the
   * Subject's socket drops the message and the connection unanswered, and the request waits out
   * its timeout. A Subject announces its own with its incarnation, and the client uses the
   * smaller of the two; it also keeps each batch of requests (one frame) within it. Absent: the
   * Subject's, once announced.
   */
  readonly maxMessageSize?: number;
}

/** What {@linkcode Client.submit} returns: the request's id, its acceptance and its final publication. */
export interface Submission {
  /** The request id. */
  readonly id: string;
  /** Resolves with the id once the Subject acknowledged the request; rejects if it refused it. */
  readonly accepted: Promise<string>;
  /** Resolves with the final publication (`done` or `error`). */
  readonly final: Promise<Publication>;
}

/** Options of one request. */
export interface RequestOptions {
  /** Milliseconds to wait for the final publication. */
  readonly timeout?: number;
  /** Aborts the wait (the request itself may still run). */
  readonly signal?: AbortSignal;
  /** The action key the request names (default: the flow's entry, `??`). */
  readonly key?: string;
  /** The request id (default: a random UUID). */
  readonly id?: string;
  /**
   * Asks the Subject to keep the request's final publication (`replay_buffer`): the same `id`
   * sent again after the final, by this client or another (a restarted service retrying), gets
   * the final published again, marked `replay`, instead of nothing (a duplicate is dropped).
   * For requests named by the caller's own `id`. @default {false}
   */
  readonly keep?: boolean;
}
