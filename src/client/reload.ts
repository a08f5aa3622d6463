/**
 * A client's reloads (`Client.reload`): a new set of flow and mapping files sent to the Subject
 * as their names and texts (the roles may be on other hosts), and its answer once every worker
 * has loaded it, or why nothing changed (PROTOCOL.md, _Reloading_).
 *
 * @module
 */

import { resolve } from "node:path";
import type { SourceFile } from "../topic/catalog.ts";
import { CONTROL_FRAMES, decodeObject, type ReloadRequest } from "../wire/control.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, utf8 } from "../wire/protocol.ts";
import { TIMED_OUT, withTimeout } from "../_async.ts";

/** Options of `Client.reload`. */
export interface ReloadOptions {
  /** The Subject's reload key: the text of `reload.key` in its runtime directory. */
  readonly key: string;
  /** Milliseconds to wait for the Subject's answer. @default {60000} */
  readonly timeout?: number;
  /**
   * The Subject's `max_message_size`: a reload whose files make a larger message is refused
   * here (the Subject would drop it unanswered). @default {DEFAULT_MAX_MESSAGE_SIZE}
   */
  readonly maxMessageSize?: number;
}

/** A reload that changed nothing: the files had errors, a worker refused them, or no answer came. */
export class ReloadError extends Error {
  /** What kind of error this is, for programs: `reload`. */
  readonly code = "reload";
  /** The files' errors, each `file:line:column: error: message`, when they were the reason. */
  readonly diagnostics: readonly string[];
  /** Builds the error. */
  constructor(message: string, diagnostics: readonly string[] = []) {
    super(message);
    this.name = "ReloadError";
    this.diagnostics = diagnostics;
  }
}

/** Reloads waiting for their answer, by `ref`. */
export type ReloadWaiters = Map<string, (answer: Record<string, unknown>) => void>;

/** Default milliseconds `Client.reload` waits for the Subject's answer. */
export const DEFAULT_RELOAD_TIMEOUT = 60_000;

/**
 * `Client.reload`: sends a new, complete set of flow and mapping files (paths, read here, or names
 * and texts) as a `RELOAD` with `send`, and waits for its `RELOADED` (given to `waiting` by
 * {@linkcode reloadAnswered}). The Subject checks them as `flows --strict` does, every worker
 * imports their handlers, then new requests start on the new configuration version while requests
 * in flight finish on theirs. Resolves with that version; rejects with a {@linkcode ReloadError}
 * naming why when nothing changed.
 */
export async function sendReload(
  files: readonly (string | SourceFile)[],
  options: ReloadOptions,
  waiting: ReloadWaiters,
  send: (frames: Uint8Array[]) => Promise<void>,
): Promise<number> {
  const read: { file: string; text: string }[] = [];
  for (const f of files) {
    if (typeof f !== "string") read.push({ file: f.file, text: f.text });
    else {
      try {
        read.push({ file: resolve(f), text: await Deno.readTextFile(f) });
      } catch (e) {
        throw new ReloadError(`cannot read ${f}: ${(e as Error).message}`);
      }
    }
  }
  const ref = crypto.randomUUID();
  const body: ReloadRequest = { ref, key: options.key, files: read };
  const frame = utf8(JSON.stringify(body)).slice();
  const max = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
  if (frame.length > max) {
    throw new ReloadError(
      `the files make a ${frame.length}-byte message, over the Subject's max_message_size (${max}): ` +
        "nothing was sent; raise max_message_size on the Subject and for this reload",
    );
  }
  const answer = new Promise<Record<string, unknown>>((r) => waiting.set(ref, r));
  try {
    await send([CONTROL_FRAMES.RELOAD, frame]);
    const ms = options.timeout ?? DEFAULT_RELOAD_TIMEOUT;
    const a = await withTimeout(answer, ms);
    if (a === TIMED_OUT) throw new ReloadError(`no answer from the Subject within ${ms} ms`);
    if (typeof a.version === "number") return a.version;
    const diagnostics = Array.isArray(a.diagnostics) ? a.diagnostics.map(String) : [];
    throw new ReloadError(typeof a.error === "string" ? a.error : "the reload failed", diagnostics);
  } finally {
    waiting.delete(ref);
  }
}

/** A `RELOADED` frame: the answer goes to the reload waiting for it. */
export function reloadAnswered(waiting: ReloadWaiters, frame: Uint8Array): void {
  const a = decodeObject(frame);
  if (a && typeof a.ref === "string") waiting.get(a.ref)?.(a);
}

/**
 * The Subject restarted: every reload still waiting ends with an error, at once, instead of after
 * its timeout (the Subject that took it is gone; a restarted one comes back on the files of the
 * last reload that completed).
 */
export function reloadsInterrupted(waiting: ReloadWaiters): void {
  for (const answer of [...waiting.values()]) {
    answer({
      error: "the Subject restarted while this reload waited for its answer: its outcome is unknown " +
        "(a restarted Subject comes back on the files of the last reload that completed; stats shows its version)",
    });
  }
}
