/** Small promise helpers that never leave a timer behind. @module */

/** What {@linkcode withTimeout} resolves to when time runs out. */
export const TIMED_OUT: unique symbol = Symbol("timed out");

/** Resolves with `p`'s value, or {@linkcode TIMED_OUT} after `ms`; the timer is always cleared. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<typeof TIMED_OUT>((r) => (timer = setTimeout(() => r(TIMED_OUT), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Reads a text stream until what was read (after `sofar`) includes `marker`. Returns all of
 * it, or `undefined` when the stream ends first (a child process that exited, say).
 */
export async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  marker: string,
  sofar = "",
): Promise<string | undefined> {
  let out = sofar;
  while (!out.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) return undefined;
    out += value;
  }
  return out;
}
