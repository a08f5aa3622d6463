/**
 * The benchmark's handler.
 * @module
 */

/** Returns its values unchanged. */
export function echo(values: Record<string, unknown>): Record<string, unknown> {
  return values;
}
