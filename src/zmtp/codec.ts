/**
 * ZMTP 3.1 (rfc.zeromq.org/spec/37), the wire protocol of ZeroMQ, as pure functions over bytes:
 * the greeting, the NULL mechanism's `READY` and `ERROR` commands and their metadata, and
 * incremental framing of messages and commands. No sockets: `connection.ts` runs it over a
 * Deno connection, so that a hop can be read and written on the event loop's own thread instead
 * of through libzmq's I/O thread (docs/performance.md, round 18).
 *
 * ```text
 * greeting  %xFF 8×padding %x7F, version 3 1, mechanism (20 octets, NUL-padded),
 *           as-server, 31 × %x00                                          64 octets
 * frame     flags (bit 0 MORE, bit 1 LONG, bit 2 COMMAND), size (1 octet, or 8 in network
 *           order when LONG), body
 * command   one frame: name-size, name, data
 * READY     data = *(name-size name value-size(4, network order) value)
 * ```
 *
 * @module
 */

/** The size of a ZMTP 3 greeting. */
export const GREETING_SIZE = 64;

/** Frame flags. */
export const FLAG_MORE = 1;
/** The frame's size is 8 octets in network order (else 1 octet). */
export const FLAG_LONG = 2;
/** The frame is a command. */
export const FLAG_COMMAND = 4;

/** The socket types a ZMTP peer announces in its `Socket-Type` property. */
export type ZmtpSocketType =
  | "REQ"
  | "REP"
  | "DEALER"
  | "ROUTER"
  | "PUB"
  | "XPUB"
  | "SUB"
  | "XSUB"
  | "PUSH"
  | "PULL"
  | "PAIR";

const PEERS: Readonly<Record<ZmtpSocketType, readonly ZmtpSocketType[]>> = {
  REQ: ["REP", "ROUTER"],
  REP: ["REQ", "DEALER"],
  DEALER: ["REP", "DEALER", "ROUTER"],
  ROUTER: ["REQ", "DEALER", "ROUTER"],
  PUB: ["SUB", "XSUB"],
  XPUB: ["SUB", "XSUB"],
  SUB: ["PUB", "XPUB"],
  XSUB: ["PUB", "XPUB"],
  PUSH: ["PULL"],
  PULL: ["PUSH"],
  PAIR: ["PAIR"],
};

/** True if `s` names a ZMTP socket type. */
export function isSocketType(s: string): s is ZmtpSocketType {
  return Object.hasOwn(PEERS, s);
}

/** True if a socket of type `a` may talk to a peer of type `b` (the table of RFC 37). */
export function compatible(a: ZmtpSocketType, b: ZmtpSocketType): boolean {
  return PEERS[a].includes(b);
}

/** A violation of ZMTP by the peer, or a frame over the limit: the connection must close. */
export class ZmtpError extends Error {
  override name = "ZmtpError";
}

const ascii = new TextEncoder();
const text = new TextDecoder();

/** A greeting for `mechanism` (NULL by default), version 3.1. */
export function encodeGreeting(mechanism = "NULL", asServer = false): Uint8Array {
  if (!/^[A-Z0-9_+.-]{1,20}$/.test(mechanism)) throw new RangeError(`bad mechanism name ${mechanism}`);
  const g = new Uint8Array(GREETING_SIZE);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = 3;
  g[11] = 1;
  g.set(ascii.encode(mechanism), 12);
  g[32] = asServer ? 1 : 0;
  return g;
}

/** What a peer's greeting says. */
export interface Greeting {
  /** Major and minor protocol version. */
  readonly version: readonly [number, number];
  /** The security mechanism, e.g. `NULL` or `CURVE`. */
  readonly mechanism: string;
  /** Whether the peer acts as server in the security handshake. */
  readonly asServer: boolean;
}

/** Reads the first {@linkcode GREETING_SIZE} octets of `b`; throws {@linkcode ZmtpError} if they are not a ZMTP 3 greeting. */
export function decodeGreeting(b: Uint8Array): Greeting {
  if (b.length < GREETING_SIZE) {
    throw new RangeError(`a greeting is ${GREETING_SIZE} octets, got ${b.length}`);
  }
  if (b[0] !== 0xff || b[9] !== 0x7f) throw new ZmtpError("not a ZMTP greeting (bad signature)");
  if (b[10] < 3) {
    // ZMTP 2.0 puts its revision (1) here; 1.0 has no such signature at all.
    throw new ZmtpError(
      `a peer speaking ZMTP before 3.0 (revision octet ${b[10]}): only 3.0 and later are spoken`,
    );
  }
  let end = 12;
  while (end < 32 && b[end] !== 0) end++;
  return { version: [b[10], b[11]], mechanism: text.decode(b.subarray(12, end)), asServer: b[32] === 1 };
}

/** One command frame (flags, size, body) named `name` carrying `data`. */
export function encodeCommand(name: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (!/^[A-Za-z]{1,255}$/.test(name)) throw new RangeError(`bad command name ${name}`);
  const size = 1 + name.length + data.length;
  const long = size > 255;
  const head = long ? 9 : 2;
  const f = new Uint8Array(head + size);
  f[0] = FLAG_COMMAND | (long ? FLAG_LONG : 0);
  if (long) new DataView(f.buffer).setBigUint64(1, BigInt(size));
  else f[1] = size;
  f[head] = name.length;
  f.set(ascii.encode(name), head + 1);
  f.set(data, head + 1 + name.length);
  return f;
}

/** A command's name and data, from its frame body. */
export interface Command {
  readonly name: string;
  readonly data: Uint8Array;
}

/** Splits a command frame's body into its name and data. */
export function decodeCommand(body: Uint8Array): Command {
  const n = body[0];
  if (!n || body.length < 1 + n) throw new ZmtpError("a command without a name");
  return { name: text.decode(body.subarray(1, 1 + n)), data: body.subarray(1 + n) };
}

/** Metadata (`READY`'s data): names and values in order; the names are compared without case. */
export function encodeProperties(props: Readonly<Record<string, Uint8Array | string>>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, v] of Object.entries(props)) {
    if (!/^[A-Za-z0-9_+.-]{1,255}$/.test(name)) throw new RangeError(`bad property name ${name}`);
    const value = typeof v === "string" ? ascii.encode(v) : v;
    const head = new Uint8Array(1 + name.length + 4);
    head[0] = name.length;
    head.set(ascii.encode(name), 1);
    new DataView(head.buffer).setUint32(1 + name.length, value.length);
    parts.push(head, value);
  }
  return concat(...parts);
}

/** The bytes of `parts`, one after the other, in one new array. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads metadata; names lower-cased (they are case-insensitive). Throws {@linkcode ZmtpError} on a malformed list. */
export function decodeProperties(data: Uint8Array): Map<string, Uint8Array> {
  const props = new Map<string, Uint8Array>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  while (at < data.length) {
    const n = data[at];
    if (!n || at + 1 + n + 4 > data.length) throw new ZmtpError("malformed metadata (a name)");
    const name = text.decode(data.subarray(at + 1, at + 1 + n)).toLowerCase();
    const size = view.getUint32(at + 1 + n);
    const start = at + 1 + n + 4;
    if (size > data.length - start) throw new ZmtpError(`malformed metadata (the value of ${name})`);
    props.set(name, data.subarray(start, start + size));
    at = start + size;
  }
  return props;
}

/**
 * Encodes messages (and commands) into one growing buffer, so that a turn's messages leave in
 * one write. Frames are copied in: the caller may reuse them once `add` returns.
 */
export class FrameWriter {
  #buf: Uint8Array;
  #view: DataView;
  #size = 0;

  constructor(initialBytes = 64 * 1024) {
    this.#buf = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes encoded and not yet taken. */
  get size(): number {
    return this.#size;
  }

  /** Appends a message of one or more frames. */
  add(frames: readonly Uint8Array[]): void {
    if (frames.length === 0) throw new RangeError("a message has at least one frame");
    let need = 0;
    for (const f of frames) need += f.length + (f.length > 255 ? 9 : 2);
    this.#reserve(need);
    const last = frames.length - 1;
    for (let i = 0; i <= last; i++) {
      const f = frames[i];
      const more = i < last ? FLAG_MORE : 0;
      if (f.length > 255) {
        this.#buf[this.#size] = more | FLAG_LONG;
        this.#view.setBigUint64(this.#size + 1, BigInt(f.length));
        this.#size += 9;
      } else {
        this.#buf[this.#size] = more;
        this.#buf[this.#size + 1] = f.length;
        this.#size += 2;
      }
      this.#buf.set(f, this.#size);
      this.#size += f.length;
    }
  }

  /** Appends bytes already framed (a command from {@linkcode encodeCommand}). */
  addRaw(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#buf.set(bytes, this.#size);
    this.#size += bytes.length;
  }

  /** The bytes encoded so far, as a copy; the writer starts again empty. */
  take(): Uint8Array {
    const out = this.#buf.slice(0, this.#size);
    this.#size = 0;
    return out;
  }

  #reserve(n: number): void {
    if (this.#size + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.#size + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.#size));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
}

/** What {@linkcode FrameReader.push} found: a whole message, or a command frame's body. */
export type Decoded =
  | { readonly command: false; readonly frames: Uint8Array[] }
  | { readonly command: true; readonly body: Uint8Array };

/** The most frames a message may have by default (libzmq sets no limit; this project's messages have 3 or 4). */
export const DEFAULT_MAX_FRAMES = 1024;

/**
 * Decodes frames from a byte stream in pieces of any size. A frame that lies within one piece is
 * handed out as a view into it, so a piece's bytes must not change once pushed (read each into
 * fresh memory); a frame split across pieces is copied together.
 *
 * What a peer can make it hold is bounded: a message's frames together (and a command) at most
 * `maxMessageSize` bytes, and a message at most `maxFrames` frames (an empty frame is 2 octets on
 * the wire and over 100 bytes of heap). Past either, `push` throws a {@linkcode ZmtpError}.
 */
export class FrameReader {
  #maxMessage: number;
  readonly #maxFrames: number;
  readonly #head = new Uint8Array(9);
  readonly #headView = new DataView(this.#head.buffer);
  #headFill = 0;
  /** The body being filled across pieces, and how much of it is. */
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #flags = 0;
  #frames: Uint8Array[] = [];
  /** Bytes of the frames of the message being read. */
  #messageBytes = 0;

  constructor(maxMessageSize: number, maxFrames: number = DEFAULT_MAX_FRAMES) {
    this.#maxMessage = checkLimit("maxMessageSize", maxMessageSize);
    this.#maxFrames = checkLimit("maxFrames", maxFrames);
  }

  /** The largest message (its frames together) or command accepted from here on. */
  get maxMessageSize(): number {
    return this.#maxMessage;
  }
  set maxMessageSize(n: number) {
    this.#maxMessage = checkLimit("maxMessageSize", n);
  }

  /** Decodes what `piece` completes; calls `out` for each message and command, in order. */
  push(piece: Uint8Array, out: (d: Decoded) => void): void {
    let at = 0;
    while (at < piece.length) {
      if (this.#body) {
        const take = Math.min(this.#body.length - this.#bodyFill, piece.length - at);
        this.#body.set(piece.subarray(at, at + take), this.#bodyFill);
        this.#bodyFill += take;
        at += take;
        if (this.#bodyFill === this.#body.length) {
          const body = this.#body;
          this.#body = null;
          this.#done(body, out);
        }
        continue;
      }
      // The frame's head: flags, then 1 or 8 octets of size.
      if (this.#headFill === 0 && piece.length - at >= 2) {
        const flags = piece[at];
        if (!(flags & FLAG_LONG)) {
          // The common case, whole in this piece: no copy of the head.
          this.#check(flags);
          this.#flags = flags;
          const size = piece[at + 1];
          this.#admit(size);
          at += 2;
          if (piece.length - at >= size) {
            this.#done(piece.subarray(at, at + size), out);
            at += size;
          } else this.#startBody(size);
          continue;
        }
      }
      this.#head[this.#headFill++] = piece[at++];
      if (this.#headFill === 1) this.#check(this.#head[0]);
      const need = this.#head[0] & FLAG_LONG ? 9 : 2;
      if (this.#headFill < need) continue;
      this.#headFill = 0;
      this.#flags = this.#head[0];
      const big = need === 9 ? this.#headView.getBigUint64(1) : BigInt(this.#head[1]);
      // Compared as a BigInt first: a size of 2^53 or more has no exact Number.
      if (big > BigInt(this.#maxMessage)) this.#tooLarge(big);
      const size = Number(big);
      this.#admit(size);
      if (piece.length - at >= size) {
        this.#done(piece.subarray(at, at + size), out);
        at += size;
      } else this.#startBody(size);
    }
  }

  /** True while part of a frame or message is held, waiting for the rest. */
  get midMessage(): boolean {
    return this.#frames.length > 0 || this.#body !== null || this.#headFill > 0;
  }

  #check(flags: number): void {
    if (flags & ~(FLAG_MORE | FLAG_LONG | FLAG_COMMAND)) {
      throw new ZmtpError(`reserved flag bits set (0x${flags.toString(16)})`);
    }
    if (flags & FLAG_COMMAND) {
      if (flags & FLAG_MORE) throw new ZmtpError("a command frame with MORE set");
      if (this.#frames.length) throw new ZmtpError("a command in the middle of a message");
    }
  }

  /** Takes a frame of `size` (its flags read) into the limits, or throws. */
  #admit(size: number): void {
    if (size > this.#maxMessage) this.#tooLarge(size);
    if (this.#flags & FLAG_COMMAND) return;
    if (this.#frames.length >= this.#maxFrames) {
      throw new ZmtpError(`a message of more than ${this.#maxFrames} frames`);
    }
    this.#messageBytes += size;
    if (this.#messageBytes > this.#maxMessage) {
      throw new ZmtpError(`a message of more than ${this.#maxMessage} bytes`);
    }
  }

  #tooLarge(size: number | bigint): never {
    throw new ZmtpError(`a frame of ${size} bytes, over the limit of ${this.#maxMessage}`);
  }

  #startBody(size: number): void {
    this.#body = new Uint8Array(size);
    this.#bodyFill = 0;
  }

  #done(body: Uint8Array, out: (d: Decoded) => void): void {
    const flags = this.#flags;
    if (flags & FLAG_COMMAND) return out({ command: true, body });
    this.#frames.push(body);
    if (flags & FLAG_MORE) return;
    const frames = this.#frames;
    this.#frames = [];
    this.#messageBytes = 0;
    out({ command: false, frames });
  }
}

function checkLimit(name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`${name} must be a whole number, 0 or more: ${n}`);
  }
  return n;
}
