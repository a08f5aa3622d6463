/**
 * The first module a handler sandbox evaluates, before any handler module (`sandbox.ts` imports
 * it first in the sandbox's entry): it takes what the sandbox itself needs before handler code
 * can replace or reach it. Handler code runs in the same realm and can rewrite any global, so:
 *
 * - the sandbox posts to the main thread through `postMessage` as it was here, not as a handler
 *   may have replaced it (one that wrapped it took the loop monitor's buffer from the `ready`
 *   message, and a thread of its own then kept the monitor beating while the sandbox was blocked:
 *   an outside attack);
 * - the main thread's messages (the set-up with the rings, the step batches) reach the sandbox's
 *   listener only: it is added here, first, and stops them there;
 * - the loop monitor's buffer, clock and timer are made and taken here.
 *
 * @module
 */

import { LoopMonitor } from "./loop_monitor.ts";

const scope = globalThis as unknown as {
  postMessage?(m: unknown, transfer?: Transferable[]): void;
  addEventListener(type: "message", fn: (e: MessageEvent) => void): void;
};
/** In a Web Worker (this module is also loaded, for its types' sake, where the sandboxes are made). */
const inWorker = typeof scope.postMessage === "function";

/** `postMessage` to the main thread, as it was before any handler module ran. */
export const postToMain: (m: unknown, transfer?: Transferable[]) => void = inWorker
  ? scope.postMessage!.bind(scope)
  : () => {
    throw new Error("postToMain: not in a sandbox thread");
  };

const clock = Date.now;
const timer = { set: globalThis.setInterval, unref: Deno.unrefTimer };
const monitorBuffer = new SharedArrayBuffer(4 * 8);
const monitorSlots = new Float64Array(monitorBuffer);

/** The loop monitor, with a buffer, clock and timer handler code never had (see `loop_monitor.ts`). */
export function guardedMonitor(beatMs: number): LoopMonitor {
  return new LoopMonitor(beatMs, { buffer: monitorBuffer, slots: monitorSlots, now: () => clock(), timer });
}

let deliver: ((data: unknown) => void) | undefined;
const early: unknown[] = [];
if (inWorker) {
  scope.addEventListener("message", (e) => {
    e.stopImmediatePropagation();
    if (deliver) deliver(e.data);
    else early.push(e.data);
  });
}

/** Hands the main thread's messages to `fn` (those that came before, first). */
export function onMainMessage(fn: (data: unknown) => void): void {
  deliver = fn;
  for (const m of early.splice(0)) fn(m);
}
