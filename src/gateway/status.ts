/**
 * The HTTP status of each outcome of a request through the gateway (README, _HTTP gateway_):
 * a pure table, so the gateway, its OpenAPI document and the tests share one source.
 *
 * @module
 */

import type { ErrorCode } from "../wire/protocol.ts";

/**
 * The HTTP status of an error publication's code. `step_limit` is 508 (Loop Detected): a flow
 * that runs away is not the server failing, and a client can tell it from a handler's 500.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { errorStatus } from "./status.ts";
 * assert.equal(errorStatus("unknown_flow"), 404);
 * assert.equal(errorStatus("overloaded"), 503);
 * ```
 */
export function errorStatus(code: ErrorCode | string): number {
  return ERROR_STATUS[code as ErrorCode] ?? 500;
}

/** Each error code's status (codes not listed are 500). */
export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = Object.freeze({
  unknown_flow: 404,
  bad_request: 400,
  no_step: 422,
  no_handler: 422,
  handler_error: 500,
  timeout: 504,
  overloaded: 503,
  step_limit: 508,
  bad_resume: 409,
  poisoned: 500,
  forgotten: 410,
});

/** Seconds a client told `503 overloaded` should wait before trying again (`Retry-After`). */
export const OVERLOADED_RETRY_AFTER = 1;
