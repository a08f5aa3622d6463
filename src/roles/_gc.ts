/**
 * A full V8 collection on demand, for a role about to hand freed memory back to the system:
 * buffers that Deno's HTTP server or libzmq frames held are freed only when V8 collects the
 * objects that point at them, and V8's own memory reducer gets to that 8 to 25 s into a quiet
 * spell. `globalThis.gc` where the process runs with `--expose-gc` (as `start` runs the IM);
 * otherwise the flag is set at run time and the collector taken from a fresh context (it
 * collects the whole isolate), so a role started by hand has it too.
 *
 * @module
 */

type Gc = () => void;

let gc: Promise<Gc | null> | undefined;

/**
 * V8's collector, or `null` where it cannot be had. The node modules are loaded on first use
 * (about 30 ms and 6 MiB), so only a role that comes to trim pays for them.
 */
function collector(): Promise<Gc | null> {
  gc ??= (async () => {
    const exposed = (globalThis as { gc?: Gc }).gc;
    if (exposed) return exposed;
    try {
      const [v8, vm] = await Promise.all([import("node:v8"), import("node:vm")]);
      v8.setFlagsFromString("--expose-gc");
      return vm.runInNewContext("gc") as Gc;
    } catch {
      return null;
    }
  })();
  return gc;
}

/** Runs a full collection; resolves to `false` where the collector cannot be had. */
export async function collectGarbage(): Promise<boolean> {
  const c = await collector();
  if (!c) return false;
  c();
  return true;
}

/**
 * Milliseconds between the collection and the trim: V8 frees the collected buffers' memory on a
 * background thread after the collection returns, so a trim at once missed most of it (measured
 * in the IM after a 1.1 GB flood: 224 MiB, 182 trimmed at once, 100 trimmed 300 ms later).
 */
export const TRIM_AFTER_GC_MS = 250;
