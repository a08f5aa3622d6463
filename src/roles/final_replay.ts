/**
 * The Subject's copies of final publications kept for replay: a request sent with `"keep":1`
 * has its final publication (`done` or `error`) copied as it leaves for the Integration Manager,
 * and a copy of that request sent again afterwards (a duplicate the Subject drops) has the final
 * published again; while the request waits at an `@ASYNC` step, its pause publication is kept
 * instead, until a resume takes its token. What it is for: an HTTP gateway killed while a
 * request ran comes back without the request's answer; a retry with the same `Idempotency-Key` is
 * that request's duplicate, and gets the final again instead of waiting out its timeout. Bounded
 * in bytes and count (the oldest copies go first); held in the Subject's memory, and, given a
 * {@linkcode KeptSink} (the Subject's `kept_store.ts`), told to it as they are kept and forgotten,
 * so that a restarted Subject {@linkcode FinalReplay.restore}s them.
 * Pure: the Subject tells it what happened.
 *
 * @module
 */

/** A kept final (or pause), to publish again: its topic, its header marked `replay`, its values. */
export type KeptFinal = readonly [topic: Uint8Array, header: Uint8Array, values: Uint8Array];

/** Where a {@linkcode FinalReplay} tells what it keeps and forgets (to keep them across restarts). */
export interface KeptSink {
  /** `id`'s final (or pause) is kept, in place of what it had. */
  put(id: string, pause: boolean, frames: readonly Uint8Array[]): void;
  /** `id` is no longer kept. */
  remove(id: string): void;
}

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

/** A {@linkcode FinalReplay}'s records, slot by slot. */
interface Slots {
  readonly start: Float64Array;
  readonly topicEnd: Float64Array;
  readonly headerEnd: Float64Array;
  readonly end: Float64Array;
  readonly pause: Uint8Array;
  /** Each slot's id, or `undefined` once replaced (its bytes stay until the ring reaches them). */
  readonly ids: (string | undefined)[];
}

function slots(n: number): Slots {
  return {
    start: new Float64Array(n),
    topicEnd: new Float64Array(n),
    headerEnd: new Float64Array(n),
    end: new Float64Array(n),
    pause: new Uint8Array(n),
    ids: new Array(n),
  };
}

/**
 * Requests that asked for their final to be kept, and the finals (or pauses) kept.
 *
 * The kept publications' bytes go into one ring of `maxBytes` (allocated on first use), in the
 * order they come, and are forgotten in that order as the ring (or the count) fills; an id maps
 * to its record's slot. A small object and buffer per kept final cost the Subject about 1 KB
 * each in V8 (measured: 150,000 kept requests, 16 MiB of finals, RSS 73 → 181 MiB against 112
 * without keep); the ring holds the bytes once, and a slot is numbers in typed arrays (153 MiB).
 */
export class FinalReplay {
  /** Ids of requests running that asked (`"keep":1`). */
  readonly #wanted = new Set<string>();
  /** Record slots by request id (the live record of each id). */
  readonly #index = new Map<string, number>();
  #ring?: Uint8Array;
  /** Where the next record's bytes go. */
  #head = 0;
  /** The records, a queue of `maxCount` slots, oldest at `#first` (made on first use). */
  #slots?: Slots;
  #first = 0;
  #count = 0;
  readonly #stats: FinalReplayStats = { kept: 0, keptBytes: 0, replayed: 0, forgotten: 0 };
  readonly #sink?: KeptSink;

  /**
   * `maxBytes`: bytes of kept finals at most; `maxCount`: finals at most; `sink`: told each
   * record kept and forgotten.
   */
  constructor(
    readonly maxBytes = DEFAULT_REPLAY_BYTES,
    readonly maxCount = REPLAY_MAX_COUNT,
    sink?: KeptSink,
  ) {
    this.#sink = sink;
  }

  /**
   * A record kept before (by an earlier Subject, read back from its sink), oldest first: kept
   * again within the bounds, without telling the sink (what the bounds forget, it is told).
   */
  restore(id: string, frames: readonly Uint8Array[], pause: boolean): void {
    // A paused request still runs: once resumed, its final is kept in place of the pause.
    if (pause) this.want(id);
    this.#keep(id, frames, pause, false);
  }

  /** Whether a final (or pause) of request `id` is kept: a copy of it is answered with that. */
  has(id: string): boolean {
    return this.#index.has(id);
  }

  /** Whether any running request asked: a final leaving needs no look-up otherwise. */
  get wanting(): boolean {
    return this.#wanted.size > 0;
  }

  /** Whether request `id` asked for its final to be kept, and it has not left yet. */
  wants(id: string): boolean {
    return this.#wanted.has(id);
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
    if (this.#wanted.delete(id)) this.#keep(id, frames, false);
  }

  /**
   * Request `id` paused at an `@ASYNC` step (`frames`: its pause publication, with the token that
   * resumes it): kept until it is resumed, if the request asked. A copy of the request sent
   * meanwhile gets the pause publication again, as its first answer.
   */
  paused(id: string, frames: readonly Uint8Array[]): void {
    if (this.#wanted.has(id)) this.#keep(id, frames, true);
  }

  /** Request `id` was resumed: its kept pause no longer answers it (its token is taken). */
  resumed(id: string): void {
    const slot = this.#index.get(id);
    if (slot !== undefined && this.#slots!.pause[slot]) {
      this.#unindex(id, slot);
      this.#sink?.remove(id);
    }
  }

  /**
   * Request `id` was sent again: its kept final (or pause), copied, marked `"replay":1` in its
   * header, to publish again; `undefined` if none is kept.
   */
  replay(id: string): KeptFinal | undefined {
    const slot = this.#index.get(id);
    if (slot === undefined) return undefined;
    this.#stats.replayed++;
    const ring = this.#ring!;
    const r = this.#slots!;
    return [
      ring.slice(r.start[slot], r.topicEnd[slot]),
      markReplay(ring.subarray(r.topicEnd[slot], r.headerEnd[slot])),
      ring.slice(r.headerEnd[slot], r.end[slot]),
    ];
  }

  /** A snapshot of the counters. */
  stats(): FinalReplayStats {
    return { ...this.#stats };
  }

  #keep(id: string, frames: readonly Uint8Array[], pause: boolean, tell = true): void {
    const [topic, header, values] = frames;
    const size = topic.length + header.length + values.length;
    const old = this.#index.get(id);
    if (old !== undefined) this.#unindex(id, old);
    if (size > this.maxBytes) {
      // Not kept: the sink forgets what it had (a record read back from it, when the bound shrank).
      if (old !== undefined || !tell) this.#sink?.remove(id);
      return;
    }
    const ring = this.#ring ??= new Uint8Array(this.maxBytes);
    const r = this.#slots ??= slots(this.maxCount);
    // Records lie in the ring in the order they came; one that does not fit before the ring's end
    // goes at its start, and the records it skips (between the newest and the end) go first.
    const wrap = this.#head + size > this.maxBytes;
    const at = wrap ? 0 : this.#head;
    // Forget the oldest records while they lie where this one goes (or were skipped), or every
    // slot is taken.
    while (this.#count > 0) {
      const oldest = this.#first;
      const skipped = wrap && r.start[oldest] >= this.#head;
      const overlaps = r.start[oldest] < at + size && at < r.end[oldest];
      if (!skipped && !overlaps && this.#count < this.maxCount) break;
      const was = r.ids[oldest];
      if (was !== undefined) {
        this.#unindex(was, oldest);
        this.#sink?.remove(was);
        this.#stats.forgotten++;
      }
      this.#first = (this.#first + 1) % this.maxCount;
      this.#count--;
    }
    const slot = (this.#first + this.#count) % this.maxCount;
    this.#count++;
    ring.set(topic, at);
    ring.set(header, at + topic.length);
    ring.set(values, at + topic.length + header.length);
    r.start[slot] = at;
    r.topicEnd[slot] = at + topic.length;
    r.headerEnd[slot] = at + topic.length + header.length;
    r.end[slot] = at + size;
    r.pause[slot] = pause ? 1 : 0;
    r.ids[slot] = id;
    this.#head = at + size;
    this.#index.set(id, slot);
    this.#stats.kept++;
    this.#stats.keptBytes += size;
    if (tell) this.#sink?.put(id, pause, frames);
  }

  /** `id`'s record in `slot` no longer answers it (its bytes stay until the ring reaches them). */
  #unindex(id: string, slot: number): void {
    const r = this.#slots!;
    this.#index.delete(id);
    r.ids[slot] = undefined;
    this.#stats.kept--;
    this.#stats.keptBytes -= r.end[slot] - r.start[slot];
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
