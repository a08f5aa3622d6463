/**
 * Batches for the internal hops (Subject → worker, worker → Subject, Subject → Integration
 * Manager): one ZeroMQ frame that carries several three-frame messages, so a busy hop pays
 * the per-message cost of ZeroMQ (a few system calls and allocations) once per batch rather
 * than once per frame. Pure: no sockets.
 *
 * Layout (little-endian), see PROTOCOL.md:
 *
 * ```text
 * "ZMB1"                                         4 bytes, the magic
 * then per record:
 *   tag     f64                                  the dispatch number (0 where unused)
 *   kind    u8                                   a result's kind (0 where unused)
 *   la lb lc u32 ×3                              the lengths of the three frames
 *   a b c                                        the frames: topic, header, values
 * ```
 *
 * @module
 */

/** A batch is sent as soon as it holds this many bytes, without waiting for the end of the turn. */
export const BATCH_FLUSH_BYTES = 64 * 1024;

/**
 * Room for a record's topic, header and record head next to its values on an internal hop:
 * topics are short, request ids at most 200 characters, error messages at most 4,096
 * characters (`MAX_ERROR_MESSAGE` in protocol.ts).
 */
export const RECORD_HEADROOM = 64 * 1024;

/**
 * The largest frame an internal hop (worker ↔ Subject, Subject → Integration Manager) accepts
 * when values may be up to `maxMessageSize` bytes: a batch is flushed once it holds
 * {@linkcode BATCH_FLUSH_BYTES}, so it holds at most that much plus one record, whose values are
 * at most `maxMessageSize` and the rest at most {@linkcode RECORD_HEADROOM}.
 */
export function internalFrameLimit(maxMessageSize: number): number {
  return maxMessageSize + BATCH_FLUSH_BYTES + RECORD_HEADROOM;
}

/** The four bytes a batch starts with. */
export const BATCH_MAGIC: Uint8Array = new Uint8Array([0x5a, 0x4d, 0x42, 0x31]); // "ZMB1"
const RECORD_HEAD = 8 + 1 + 12;

/** The bytes a record of these three frames takes in a batch. */
export function recordBytes(a: Uint8Array, b: Uint8Array, c: Uint8Array): number {
  return RECORD_HEAD + a.length + b.length + c.length;
}

/** The bytes of an empty batch (its magic). */
export const EMPTY_BATCH_BYTES = 4;

/** Result kinds as carried in a batch record. */
export const KIND_CODES = Object.freeze({ none: 0, done: 1, publish: 2, pause: 3, error: 4 } as const);
/** A result kind's name by its code. */
export const KIND_NAMES: readonly string[] = ["none", "done", "publish", "pause", "error"];

/**
 * Collects records into one reusable buffer. `take()` returns a view of the batch; it is
 * valid until the next `add` (send it, which copies, before adding more).
 *
 * @example
 * ```ts
 * import { BatchWriter, readBatch } from "./batch.ts";
 * const w = new BatchWriter();
 * const enc = new TextEncoder();
 * w.add(7, 1, enc.encode("F~~~~done"), enc.encode('{"v":1,"id":"a"}'), enc.encode("{}"));
 * const records = readBatch(w.take());
 * console.log(records?.length, records?.[0].tag); // 1 7
 * ```
 */
export class BatchWriter {
  #buf: Uint8Array;
  #view: DataView;
  #len = 4;
  #count = 0;

  /** Starts with room for `initial` bytes (it grows as needed). */
  constructor(initial = 16 * 1024) {
    this.#buf = new Uint8Array(Math.max(64, initial));
    this.#buf.set(BATCH_MAGIC);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Records added since the last `take`. */
  get count(): number {
    return this.#count;
  }

  /** Bytes held since the last `take`. */
  get size(): number {
    return this.#len;
  }

  /** Adds a record. */
  add(tag: number, kind: number, a: Uint8Array, b: Uint8Array, c: Uint8Array): void {
    const need = this.#len + RECORD_HEAD + a.length + b.length + c.length;
    if (need > this.#buf.length) this.#grow(need);
    const v = this.#view;
    let o = this.#len;
    v.setFloat64(o, tag, true);
    v.setUint8(o + 8, kind);
    v.setUint32(o + 9, a.length, true);
    v.setUint32(o + 13, b.length, true);
    v.setUint32(o + 17, c.length, true);
    o += RECORD_HEAD;
    this.#buf.set(a, o);
    o += a.length;
    this.#buf.set(b, o);
    o += b.length;
    this.#buf.set(c, o);
    this.#len = o + c.length;
    this.#count++;
  }

  /**
   * Adds record `i` of `view` as it is, with a new tag and kind: its bytes are copied in one
   * piece (no views of its frames are made).
   */
  addRecord(view: BatchView, i: number, tag: number, kind: number): void {
    const start = view.start(i);
    const n = view.start(i + 1) - start;
    if (this.#len + n > this.#buf.length) this.#grow(this.#len + n);
    const o = this.#len;
    this.#buf.set(view.frame.subarray(start, start + n), o);
    this.#view.setFloat64(o, tag, true);
    this.#view.setUint8(o + 8, kind);
    this.#len = o + n;
    this.#count++;
  }

  #grow(need: number): void {
    const bigger = new Uint8Array(Math.max(need, this.#buf.length * 2));
    bigger.set(this.#buf.subarray(0, this.#len));
    this.#buf = bigger;
    this.#view = new DataView(bigger.buffer);
  }

  /** The batch so far, as a view; the writer starts a new batch. */
  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.#len);
    this.#len = 4;
    this.#count = 0;
    return out;
  }
}

/** What {@linkcode sendBatch} needs of a socket (a `ReactorSocket`). */
export interface BatchSocket {
  /** Hands the frames to libzmq now, or returns `false` and sends nothing. */
  sendNow(frames: readonly Uint8Array[]): boolean;
  /** Queues the frames until the socket has room. */
  send(frames: readonly Uint8Array[]): Promise<void>;
}

/**
 * Sends the writer's batch as the last frame after `prefix`, and starts the writer's next
 * batch. Returns `undefined` when libzmq took it at once; otherwise a copy (the writer reuses
 * its buffer) waits in the socket's queue, and the promise settles when it leaves.
 */
export function sendBatch(
  socket: BatchSocket,
  prefix: readonly Uint8Array[],
  writer: BatchWriter,
): Promise<void> | undefined {
  const body = writer.take();
  if (socket.sendNow([...prefix, body])) return undefined;
  return socket.send([...prefix, body.slice()]);
}

/**
 * The records a sender adds in one turn of the event loop, sent as one batch (after `prefix`) at
 * the end of the turn, or at once when the batch reaches {@linkcode BATCH_FLUSH_BYTES}.
 */
export class TurnBatch {
  readonly #writer = new BatchWriter();
  readonly #socket: BatchSocket & { readonly closed: boolean };
  readonly #prefix: readonly Uint8Array[];
  readonly #closedMessage: string;
  readonly #schedule: (flush: () => void) => void;
  #scheduled = false;
  #waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];

  /**
   * Sends on `socket`; what is added after it closed is dropped, its waiters rejected with
   * `closedMessage`. `schedule` runs the flush at the end of the turn (by default a microtask);
   * one that runs it later gathers what later turns add into the same batch.
   */
  constructor(
    socket: BatchSocket & { readonly closed: boolean },
    prefix: readonly Uint8Array[],
    closedMessage = "socket closed",
    schedule: (flush: () => void) => void = queueMicrotask,
  ) {
    this.#socket = socket;
    this.#prefix = prefix;
    this.#closedMessage = closedMessage;
    this.#schedule = schedule;
  }

  /** Bytes held for the next batch (its frame's size so far). */
  get size(): number {
    return this.#writer.size;
  }

  /** Adds a record (see {@linkcode BatchWriter.add}). */
  add(tag: number, kind: number, a: Uint8Array, b: Uint8Array, c: Uint8Array): void {
    this.#writer.add(tag, kind, a, b, c);
    if (this.#writer.size >= BATCH_FLUSH_BYTES) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      this.#schedule(() => this.flush());
    }
  }

  /** Adds a record; resolves once libzmq has taken the batch that holds it. */
  addAndWait(tag: number, kind: number, a: Uint8Array, b: Uint8Array, c: Uint8Array): Promise<void> {
    const sent = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    this.add(tag, kind, a, b, c);
    return sent;
  }

  /** Sends what was added, if anything. */
  flush(): void {
    this.#scheduled = false;
    if (!this.#writer.count) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    if (this.#socket.closed) {
      this.#writer.take();
      for (const w of waiters) w.reject(new Error(this.#closedMessage));
      return;
    }
    const sent = sendBatch(this.#socket, this.#prefix, this.#writer);
    if (!waiters.length) void sent?.catch(() => {});
    else {
      (sent ?? Promise.resolve()).then(
        () => waiters.forEach((w) => w.resolve()),
        (e) => waiters.forEach((w) => w.reject(e)),
      );
    }
  }
}

/** One record of a batch: views into the batch frame. */
export interface BatchRecord {
  /** The dispatch number, or 0. */
  readonly tag: number;
  /** The kind code (see {@linkcode KIND_CODES}), or 0. */
  readonly kind: number;
  /** The three frames: topic, header, values. */
  readonly frames: [Uint8Array, Uint8Array, Uint8Array];
}

/** True if a frame starts with the batch magic. */
export function isBatch(frame: Uint8Array): boolean {
  return frame.length >= 4 && frame[0] === 0x5a && frame[1] === 0x4d && frame[2] === 0x42 &&
    frame[3] === 0x31;
}

/**
 * Reads a batch. Returns `undefined` for a frame that is not a well-formed batch (no magic,
 * a record running past the end, or no record at all); a malformed batch is dropped whole.
 * The records' frames are views into `frame`.
 */
export function readBatch(frame: Uint8Array): BatchRecord[] | undefined {
  const view = BatchView.of(frame);
  if (!view) return undefined;
  const out: BatchRecord[] = new Array(view.count);
  for (let i = 0; i < view.count; i++) {
    out[i] = { tag: view.tag(i), kind: view.kind(i), frames: view.frames(i) };
  }
  return out;
}

/**
 * A batch read in place: the records' tags and kinds without making a view of each frame,
 * for a role that forwards records ({@linkcode BatchWriter.addRecord}) rather than reads them.
 *
 * @example
 * ```ts
 * import { BatchView, BatchWriter } from "./batch.ts";
 * const w = new BatchWriter();
 * const enc = new TextEncoder();
 * w.add(7, 1, enc.encode("F~~~~done"), enc.encode('{"v":1,"id":"a"}'), enc.encode("{}"));
 * const view = BatchView.of(w.take().slice())!;
 * const out = new BatchWriter();
 * out.addRecord(view, 0, 0, 0);
 * console.log(view.count, view.tag(0), view.kind(0), out.count); // 1 7 1 1
 * ```
 */
export class BatchView {
  readonly #v: DataView;
  /** Where each record starts, and the frame's end last. */
  readonly #starts: number[];

  private constructor(readonly frame: Uint8Array, starts: number[]) {
    this.#v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    this.#starts = starts;
  }

  /** Reads a batch; `undefined` when {@linkcode readBatch} would refuse it. */
  static of(frame: Uint8Array): BatchView | undefined {
    if (!isBatch(frame)) return undefined;
    const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    const starts: number[] = [];
    let o = 4;
    const end = frame.length;
    while (o < end) {
      if (o + RECORD_HEAD > end) return undefined;
      starts.push(o);
      o += RECORD_HEAD + v.getUint32(o + 9, true) + v.getUint32(o + 13, true) + v.getUint32(o + 17, true);
      if (o > end) return undefined;
    }
    if (!starts.length) return undefined;
    starts.push(end);
    return new BatchView(frame, starts);
  }

  /** Records in the batch. */
  get count(): number {
    return this.#starts.length - 1;
  }

  /** Where record `i` starts (`count` gives the frame's end). */
  start(i: number): number {
    return this.#starts[i];
  }

  /** Record `i`'s tag. */
  tag(i: number): number {
    return this.#v.getFloat64(this.#starts[i], true);
  }

  /** Record `i`'s kind. */
  kind(i: number): number {
    return this.#v.getUint8(this.#starts[i] + 8);
  }

  /** Where record `i`'s frame `k` (0 topic, 1 header, 2 values) starts in {@linkcode BatchView.frame}. */
  frameStart(i: number, k: 0 | 1 | 2): number {
    const o = this.#starts[i];
    if (k === 0) return o + RECORD_HEAD;
    const la = this.#v.getUint32(o + 9, true);
    return o + RECORD_HEAD + (k === 1 ? la : la + this.#v.getUint32(o + 13, true));
  }

  /** Bytes of record `i`'s frame `k`. */
  frameLength(i: number, k: 0 | 1 | 2): number {
    return this.#v.getUint32(this.#starts[i] + 9 + 4 * k, true);
  }

  /**
   * Whether record `i`'s frame `k` (0 topic, 1 header, 2 values) equals the first `n` bytes of
   * `bytes` (`whole`), or starts with them; without making a view.
   */
  frameIs(i: number, k: 0 | 1 | 2, bytes: Uint8Array, whole: boolean, n: number = bytes.length): boolean {
    const length = this.frameLength(i, k);
    if (whole ? length !== n : length < n) return false;
    const p = this.frameStart(i, k);
    const f = this.frame;
    for (let j = 0; j < n; j++) if (f[p + j] !== bytes[j]) return false;
    return true;
  }

  /** Record `i`'s frame `k` (0 topic, 1 header, 2 values), as a view into the batch. */
  frameAt(i: number, k: 0 | 1 | 2): Uint8Array {
    const p = this.frameStart(i, k);
    return this.frame.subarray(p, p + this.frameLength(i, k));
  }

  /** Record `i`'s three frames, as views into the batch. */
  frames(i: number): [Uint8Array, Uint8Array, Uint8Array] {
    const o = this.#starts[i];
    const la = this.#v.getUint32(o + 9, true);
    const lb = this.#v.getUint32(o + 13, true);
    const lc = this.#v.getUint32(o + 17, true);
    let p = o + RECORD_HEAD;
    return [
      this.frame.subarray(p, p += la),
      this.frame.subarray(p, p += lb),
      this.frame.subarray(p, p + lc),
    ];
  }
}
