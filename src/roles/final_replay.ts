/**
 * The Subject's copies of final publications kept for replay: a request sent with `"keep":1`
 * has its final publication (`done` or `error`) copied as it leaves for the Integration Manager,
 * and a copy of that request sent again afterwards (a duplicate the Subject drops) has the final
 * published again. What it is for: an HTTP gateway killed while a request ran comes back without
 * the request's answer; a retry with the same `Idempotency-Key` is that request's duplicate, and
 * gets the final again instead of waiting out its timeout. Bounded in bytes and count (the
 * oldest copies go first); held in the Subject's memory, so a Subject restart forgets them.
 * Pure: the Subject tells it what happened.
 *
 * @module
 */

/** A kept final: its three frames, copied. */
export type KeptFinal = readonly [topic: Uint8Array, header: Uint8Array, values: Uint8Array];

/** Counters of a {@linkcode FinalReplay}. */
export interface FinalReplayStats {
  /** Finals kept now. */
  kept: number;
  /** Their bytes. */
  keptBytes: number;
  /** Finals published again for a request sent again. */
  replayed: number;
  /** Kept finals forgotten to stay within the bounds. */
  forgotten: number;
}

/** Default bytes of kept finals, at most. */
export const DEFAULT_REPLAY_BYTES = 16 * 1024 * 1024;

/** Finals kept at most, whatever their size. */
export const REPLAY_MAX_COUNT = 100_000;

/** Requests that asked for their final to be kept, and the finals kept. */
export class FinalReplay {
  /** Ids of requests running that asked (`"keep":1`). */
  readonly #wanted = new Set<string>();
  /** Kept finals by request id, oldest first. */
  readonly #kept = new Map<string, KeptFinal>();
  readonly #stats: FinalReplayStats = { kept: 0, keptBytes: 0, replayed: 0, forgotten: 0 };

  /** `maxBytes`: bytes of kept finals at most; `maxCount`: finals at most. */
  constructor(readonly maxBytes = DEFAULT_REPLAY_BYTES, readonly maxCount = REPLAY_MAX_COUNT) {}

  /** Whether any running request asked: a final leaving needs no look-up otherwise. */
  get wanting(): boolean {
    return this.#wanted.size > 0;
  }

  /** Request `id` asked for its final to be kept. */
  want(id: string): void {
    if (this.maxBytes <= 0) return;
    this.#wanted.add(id);
    // A request whose final never leaves here (its Subject lost it, say) is not asked for forever.
    if (this.#wanted.size > this.maxCount) this.#wanted.delete(this.#wanted.values().next().value!);
  }

  /**
   * Request `id`'s final leaves: kept (copied) if the request asked. `frames` are the final's
   * topic, header and values, which may be views of a larger batch: they are copied.
   */
  final(id: string, frames: readonly Uint8Array[]): void {
    if (!this.#wanted.delete(id)) return;
    const bytes = frames[0].length + frames[1].length + frames[2].length;
    if (bytes > this.maxBytes) return;
    const old = this.#kept.get(id);
    if (old) this.#forget(id, old);
    this.#kept.set(id, [frames[0].slice(), frames[1].slice(), frames[2].slice()]);
    this.#stats.kept++;
    this.#stats.keptBytes += bytes;
    for (const [k, f] of this.#kept) {
      if (this.#stats.keptBytes <= this.maxBytes && this.#stats.kept <= this.maxCount) break;
      this.#forget(k, f);
      this.#stats.forgotten++;
    }
  }

  /** Request `id` paused, or will never have a final here: it no longer waits for one to keep. */
  drop(id: string): void {
    this.#wanted.delete(id);
  }

  /**
   * Request `id` was sent again after its final: the kept final, marked `"replay":1` in its
   * header, to publish again; `undefined` if none is kept.
   */
  replay(id: string): KeptFinal | undefined {
    const f = this.#kept.get(id);
    if (!f) return undefined;
    this.#stats.replayed++;
    return [f[0], markReplay(f[1]), f[2]];
  }

  /** A snapshot of the counters. */
  stats(): FinalReplayStats {
    return { ...this.#stats };
  }

  #forget(id: string, f: KeptFinal): void {
    this.#kept.delete(id);
    this.#stats.kept--;
    this.#stats.keptBytes -= f[0].length + f[1].length + f[2].length;
  }
}

/** A header with `"replay":1` added (a header that is not a JSON object is returned as it is). */
export function markReplay(header: Uint8Array): Uint8Array {
  let h: unknown;
  try {
    h = JSON.parse(new TextDecoder().decode(header));
  } catch {
    return header;
  }
  if (h === null || typeof h !== "object" || Array.isArray(h)) return header;
  return new TextEncoder().encode(JSON.stringify({ ...h, replay: 1 }));
}
