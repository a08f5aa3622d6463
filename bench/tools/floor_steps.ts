/**
 * What the structure's floor (`floor.ts`) shares between its worker's threads: the message's
 * layout and the steps each request runs.
 *
 * @module
 */

/**
 * Bytes before a message's values: the generator's index (float64), the kind, and in a result the
 * number of the worker that ran it.
 */
export const FLOOR_PREFIX = 10;
/** A message's kinds (its byte 8). */
export const REQUEST = 0, RESULT = 1, ACK = 2, STATUS = 3;

/** What the sandbox thread (`floor_sandbox.ts`) is sent first. */
export interface FloorThreadSetup {
  /** The ring the requests come in by. */
  readonly steps: SharedArrayBuffer;
  /** The ring the results go out by. */
  readonly results: SharedArrayBuffer;
  /** The worker's number, written into each result. */
  readonly worker: number;
  /** Wait in `Atomics.wait` instead of `Atomics.waitAsync`. */
  readonly sync: boolean;
}

const encoder = new TextEncoder(), decoder = new TextDecoder();
const echo = (v: unknown) => v;

/**
 * A request's three steps as a worker must run them at the least: its values (JSON) parsed, three
 * handlers called that return them, the result stringified into `into`. Returns the bytes written.
 */
export function runSteps(values: Uint8Array, into: Uint8Array): number {
  const v = JSON.parse(decoder.decode(values));
  return encoder.encodeInto(JSON.stringify(echo(echo(echo(v)))), into).written;
}
