// Handlers whose results JSON cannot encode or that are too large to send
// (tests/results_test.ts), and a pass-through.
import type { Values } from "../../../src/handler.ts";

/** A BigInt deep in the result. */
export function bigint(v: Values): Values {
  return { ...v, a: { b: [1, 2, 3n] } };
}

/** The same, from an async handler. */
export async function bigintLater(v: Values): Promise<Values> {
  await Promise.resolve();
  return { ...v, total: 10n };
}

/** A result that contains itself. */
export function cycle(v: Values): Values {
  const out: Values = { ...v };
  out.self = out;
  return out;
}

/** A result with a string of `v.bytes` bytes. */
export function huge(v: Values): Values {
  return { ...v, s: "x".repeat(Number(v.bytes)) };
}

/** Returns its values as they are. */
export function echo(v: Values): Values {
  return v;
}

/** Puts a BigInt into its input values, then throws: the error cannot carry those values. */
export function throwPoisoned(v: Values): Values {
  v.big = 1n;
  throw new Error("gave up");
}

/** Throws an error whose message is 100,000 characters long. */
export function longError(): Values {
  throw new Error("e".repeat(100_000));
}
