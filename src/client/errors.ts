/**
 * The errors a `Client` request can end with, each with a `code` for programs.
 *
 * @module
 */

/** The wait for a request's final publication ended without one. */
export class RequestTimeoutError extends Error {
  /** The request id. */
  readonly id: string;
  /** What kind of error this is, for programs: `timeout`. */
  readonly code = "timeout";
  /** Builds the error. */
  constructor(id: string, ms: number) {
    super(`No final publication for request ${id} within ${ms} ms`);
    this.name = "RequestTimeoutError";
    this.id = id;
  }
}

/**
 * The Subject refused a message (a `NACK`, PROTOCOL.md _Acknowledgements_): it was dropped
 * unread, for `reason` (`bad_topic`, `frame_count`, `oversize`), and sending it again would not
 * help. The client itself refuses a request the Subject would refuse as `oversize` (see
 * `ClientOptions.maxMessageSize`): `by` says which.
 */
export class RequestRefusedError extends Error {
  /** The request id. */
  readonly id: string;
  /** Why: a drop reason of PROTOCOL.md. */
  readonly reason: string;
  /** What kind of error this is, for programs: `refused`. */
  readonly code = "refused";
  /** Builds the error; `by` names who refused it. */
  constructor(id: string, reason: string, message: string, by = "The Subject") {
    super(`${by} refused request ${id}: ${reason}: ${message}`);
    this.name = "RequestRefusedError";
    this.id = id;
    this.reason = reason;
  }
}
