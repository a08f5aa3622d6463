/**
 * One ZMTP 3.1 connection over a Deno connection (TCP or a Unix socket), NULL mechanism: the
 * handshake, then multipart messages both ways, read and written on the event loop's thread.
 * It speaks to libzmq peers (and to itself) on their wire format; over TCP it turns Nagle's
 * algorithm off, as libzmq does. It ignores a peer's SUBSCRIBE and CANCEL commands and the TTL
 * of its PINGs (it answers each PING).
 *
 * Why by hand: npm holds no ZMTP implementation over TCP for JavaScript other than bindings to
 * libzmq (`zeromq`, `zmq`; `jszmq` speaks ZWS over WebSocket), and libzmq moves every message
 * through an I/O thread of its own: between two processes that answer each other at once, a round
 * trip took 0.09–0.11 ms and 108–124 µs of CPU through libzmq, 0.028–0.035 ms and 37–45 µs here
 * (`bench/transport.ts`; docs/performance.md, round 18, also says where it does not help).
 *
 * What it does not do: socket semantics over several connections (routing, round robin,
 * subscriptions), reconnection, heartbeats of its own (it answers a peer's `PING`), PLAIN and
 * CURVE. The roles do not use it; the bench's transport comparison does.
 *
 * @module
 */

import {
  compatible,
  concat,
  decodeCommand,
  type Decoded,
  decodeGreeting,
  decodeProperties,
  DEFAULT_MAX_FRAMES,
  encodeCommand,
  encodeGreeting,
  encodeProperties,
  FrameReader,
  FrameWriter,
  GREETING_SIZE,
  isSocketType,
  ZmtpError,
  type ZmtpSocketType,
} from "./codec.ts";

/** Milliseconds the handshake may take before the connection is closed (libzmq's `ZMQ_HANDSHAKE_IVL` is 30 s). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** The largest message (its frames together) accepted by default: a peer that sends a larger one is disconnected. */
export const DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024;

/** The most a peer may send before its READY is in (a READY is a few hundred bytes). */
const HANDSHAKE_BYTES = 192 * 1024;

/** Thrown by `listen`'s decoding callback to stop at `close()`. */
const CLOSED = Symbol("closed");

const SLAB_SIZE = 256 * 1024;
const MIN_READ = 64 * 1024;

/** How a {@linkcode ZmtpConnection} presents itself. */
export interface ZmtpOptions {
  /** The socket type announced (`Socket-Type`); the peer's must be one it may talk to. */
  readonly socketType: ZmtpSocketType;
  /** The identity announced (`Identity`): a libzmq ROUTER uses it as the peer's routing id. */
  readonly identity?: Uint8Array;
  /** A message (its frames together) or command larger than this from the peer closes the connection. @default {DEFAULT_MAX_MESSAGE_SIZE} */
  readonly maxMessageSize?: number;
  /** A message of more frames than this from the peer closes the connection. @default {DEFAULT_MAX_FRAMES} */
  readonly maxFrames?: number;
  /** @default {DEFAULT_HANDSHAKE_TIMEOUT_MS} */
  readonly handshakeTimeoutMs?: number;
}

/** What the peer announced in its `READY`. */
export interface ZmtpPeer {
  readonly socketType: ZmtpSocketType;
  /** Its `Identity`, if it sent a non-empty one. */
  readonly identity?: Uint8Array;
  /** Every property, names lower-cased. */
  readonly properties: ReadonlyMap<string, Uint8Array>;
  /** Its protocol version, e.g. `[3, 1]`. */
  readonly version: readonly [number, number];
}

/**
 * A ZMTP connection after its handshake ({@linkcode ZmtpConnection.open}). Messages are read by
 * {@linkcode listen}; {@linkcode send} queues a message, and every message queued in one turn of
 * the event loop leaves in one write.
 */
export class ZmtpConnection {
  /** What the peer announced. */
  readonly peer: ZmtpPeer;
  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  readonly #out = new FrameWriter();
  #slab: Uint8Array<ArrayBuffer>;
  #slabAt: number;
  /** What came in the same read as the peer's READY (messages, commands), for `listen`. */
  #early: Decoded[];
  #listening = false;
  /** A PONG is in `#out`, not yet taken for writing. */
  #pongQueued = false;
  #writing = false;
  #inFlight = 0;
  #waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  #closed = false;
  #failure: unknown;

  private constructor(conn: Deno.Conn, reader: FrameReader, peer: ZmtpPeer, hs: Handshake) {
    this.#conn = conn;
    this.#reader = reader;
    this.peer = peer;
    this.#early = hs.early;
    this.#slab = hs.slab;
    this.#slabAt = hs.slabAt;
  }

  /**
   * Runs the handshake on `conn` (greeting and `READY` both ways) and returns the connection.
   * Throws {@linkcode ZmtpError} if the peer is not a ZMTP 3 peer using the NULL mechanism,
   * announces a socket type this one may not talk to, refuses with `ERROR`, sends a frame of more than 192
   * KiB before its `READY`, or does not finish within `handshakeTimeoutMs`; a `RangeError` for
   * bad options (an identity that is not 1 to 255 octets or starts with a zero octet, as libzmq
   * requires of routing ids). `conn` is closed whenever it throws.
   */
  static async open(conn: Deno.Conn, options: ZmtpOptions): Promise<ZmtpConnection> {
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    let timedOut = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const maxMessage = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
      const reader = new FrameReader(maxMessage, options.maxFrames ?? DEFAULT_MAX_FRAMES);
      const props: Record<string, Uint8Array | string> = { "Socket-Type": options.socketType };
      const id = options.identity;
      if (id?.length) {
        if (id.length > 255 || id[0] === 0) {
          throw new RangeError("an identity is 1 to 255 octets, not starting with a zero octet");
        }
        props.Identity = id;
      }
      // libzmq sets TCP_NODELAY on every TCP socket; left on, Nagle's algorithm holds a small
      // write back until the last is acknowledged (a delayed ACK: about 40 ms).
      // (A TLS connection reports "tcp" too, but has no setNoDelay.)
      const tcp = conn as Partial<Deno.TcpConn>;
      if (conn.remoteAddr.transport === "tcp" && typeof tcp.setNoDelay === "function") tcp.setNoDelay(true);
      const hello = concat(encodeGreeting(), encodeCommand("READY", encodeProperties(props)));
      timer = setTimeout(() => {
        timedOut = true;
        closeQuietly(conn);
      }, timeoutMs);
      const [, got] = await Promise.all([writeAll(conn, hello), readHandshake(conn, reader, maxMessage)]);
      const peerType = utf8(got.properties.get("socket-type"));
      if (!isSocketType(peerType)) {
        throw new ZmtpError(`the peer announced no known socket type (${peerType})`);
      }
      if (!compatible(options.socketType, peerType)) {
        throw new ZmtpError(`a ${options.socketType} socket cannot talk to a ${peerType} peer`);
      }
      const identity = got.properties.get("identity");
      const peer: ZmtpPeer = {
        socketType: peerType,
        ...(identity?.length ? { identity: identity.slice() } : {}),
        properties: got.properties,
        version: got.version,
      };
      return new ZmtpConnection(conn, reader, peer, got);
    } catch (e) {
      closeQuietly(conn);
      if (timedOut) throw new ZmtpError(`no ZMTP handshake within ${timeoutMs} ms`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Bytes queued by {@linkcode send} and not yet written. */
  get queuedBytes(): number {
    return this.#closed ? 0 : this.#out.size + this.#inFlight;
  }

  /** True once the connection is closed, by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues a message (its frames are copied: the caller may reuse them). Written at the end of
   * the turn, with whatever else was queued in it. Throws if the connection is closed.
   */
  send(frames: readonly Uint8Array[]): void {
    if (this.#closed) throw new Deno.errors.BadResource("the ZMTP connection is closed");
    this.#out.add(frames);
    if (!this.#writing) {
      this.#writing = true;
      queueMicrotask(() => void this.#pump());
    }
  }

  /**
   * Resolves once everything queued so far is written; rejects if the connection failed, or was
   * closed with something still queued, first.
   */
  flush(): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#closed || (!this.#writing && this.#out.size === 0)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /**
   * Reads messages until the peer closes or {@linkcode close} is called, calling `onMessage` with
   * each one's frames, in order (views into memory that is not reused: they may be kept); after
   * `close()`, even from inside `onMessage`, nothing more is delivered. Answers the peer's
   * `PING`s. Resolves when the peer closes (or resets) the connection or `close()` is called;
   * rejects, after closing, with a {@linkcode ZmtpError} on a protocol violation, a message over
   * the limits, or the peer's `ERROR`, and with whatever `onMessage` throws.
   */
  async listen(onMessage: (frames: Uint8Array[]) => void): Promise<void> {
    if (this.#listening) throw new Error("listen() was already called on this connection");
    this.#listening = true;
    // After close() (from onMessage, say) the rest of the read is not decoded: nothing in it is
    // delivered, and nothing in it (a malformed frame) can fail a connection already closed.
    // What onMessage throws is the caller's, and rejects listen() whenever it comes.
    let thrown: { e: unknown } | undefined;
    const out = (d: Decoded) => {
      if (this.#closed) throw CLOSED;
      if (d.command) return this.#onCommand(d.body);
      try {
        onMessage(d.frames);
      } catch (e) {
        thrown = { e };
        throw e;
      }
    };
    try {
      const early = this.#early;
      this.#early = [];
      for (const d of early) out(d);
      while (!this.#closed) {
        let piece: Uint8Array | null;
        try {
          piece = await this.#read();
        } catch (e) {
          // Closed here under the read, or the peer went away: the end, not a failure.
          if (this.#closed) return;
          if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe) return;
          throw e;
        }
        if (piece === null) return;
        this.#reader.push(piece, out);
      }
    } catch (e) {
      if (!thrown && this.#closed) return; // CLOSED, or a frame decoded after close(): not a failure
      this.#fail(e);
      throw e;
    } finally {
      this.close();
    }
  }

  /** Closes the connection; what is still queued is dropped (await {@linkcode flush} first to keep it). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#conn);
    if (this.#out.size || this.#writing) {
      this.#fail(new Deno.errors.BadResource("the ZMTP connection is closed"));
    }
    this.#out.take(); // dropped
  }

  #onCommand(body: Uint8Array): void {
    const { name, data } = decodeCommand(body);
    if (name === "PING") {
      // PING: a 2-octet TTL, then up to 16 octets of context, which PONG gives back. One PONG
      // waits at most (as in libzmq): a peer that pings and reads nothing cannot grow the queue.
      if (this.#pongQueued) return;
      this.#pongQueued = true;
      this.#out.addRaw(encodeCommand("PONG", data.subarray(2, 18)));
      if (!this.#writing) {
        this.#writing = true;
        queueMicrotask(() => void this.#pump());
      }
    } else if (name === "ERROR") {
      throw new ZmtpError(`the peer sent ERROR: ${utf8(data.subarray(1, 1 + data[0]))}`);
    }
    // PONG, and commands of ZMTP 3.1 this side has no use for yet (SUBSCRIBE, CANCEL, JOIN,
    // LEAVE), are ignored.
  }

  async #pump(): Promise<void> {
    try {
      while (this.#out.size && !this.#closed) {
        const bytes = this.#out.take();
        this.#pongQueued = false;
        this.#inFlight = bytes.length;
        await writeAll(this.#conn, bytes);
        this.#inFlight = 0;
      }
    } catch (e) {
      this.#inFlight = 0;
      this.#fail(e);
      this.close();
      return;
    } finally {
      this.#writing = false;
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve();
  }

  #fail(e: unknown): void {
    this.#failure ??= e;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(this.#failure);
  }

  /** One read into fresh memory of the slab (frames handed out are views into it); null at the end. */
  async #read(): Promise<Uint8Array | null> {
    if (this.#slab.length - this.#slabAt < MIN_READ) {
      this.#slab = new Uint8Array(SLAB_SIZE);
      this.#slabAt = 0;
    }
    const n = await this.#conn.read(this.#slab.subarray(this.#slabAt));
    if (n === null) return null;
    const piece = this.#slab.subarray(this.#slabAt, this.#slabAt + n);
    this.#slabAt += n;
    return piece;
  }
}

interface Handshake {
  readonly version: readonly [number, number];
  readonly properties: Map<string, Uint8Array>;
  readonly early: Decoded[];
  readonly slab: Uint8Array<ArrayBuffer>;
  readonly slabAt: number;
}

/**
 * Reads the peer's greeting and its READY (or ERROR); what follows in the same reads is kept.
 * Until the READY is in, the reader takes no frame over `HANDSHAKE_BYTES`, so that a peer cannot
 * make it allocate `maxMessage` bytes before it has said what it is.
 */
async function readHandshake(conn: Deno.Conn, reader: FrameReader, maxMessage: number): Promise<Handshake> {
  reader.maxMessageSize = Math.min(maxMessage, HANDSHAKE_BYTES);
  const greeting = new Uint8Array(GREETING_SIZE);
  let have = 0;
  const slab = new Uint8Array(SLAB_SIZE);
  let at = 0;
  let version: readonly [number, number] | undefined;
  let properties: Map<string, Uint8Array> | undefined;
  const early: Decoded[] = [];
  const out = (d: Decoded) => {
    if (properties) return void early.push(d); // for listen, which reads on from here
    if (!d.command) throw new ZmtpError("a message before the peer's READY");
    const { name, data } = decodeCommand(d.body);
    if (name === "ERROR") {
      throw new ZmtpError(`the peer refused the handshake: ${utf8(data.subarray(1, 1 + data[0]))}`);
    }
    if (name !== "READY") throw new ZmtpError(`a ${name} command where READY was expected`);
    properties = decodeProperties(data);
    reader.maxMessageSize = maxMessage;
  };
  while (!properties) {
    if (slab.length - at < MIN_READ) throw new ZmtpError("more than 192 KiB before the peer's READY");
    const n = await conn.read(slab.subarray(at));
    if (n === null) throw new ZmtpError("the peer closed the connection during the handshake");
    let piece = slab.subarray(at, at + n);
    at += n;
    if (have < GREETING_SIZE) {
      const take = Math.min(GREETING_SIZE - have, piece.length);
      greeting.set(piece.subarray(0, take), have);
      have += take;
      piece = piece.subarray(take);
      // The signature and version are known from the 11th octet on: refuse a non-ZMTP-3 peer early.
      if (have >= 11 && (greeting[0] !== 0xff || greeting[9] !== 0x7f || greeting[10] < 3)) {
        decodeGreeting(fill(greeting));
      }
      if (have < GREETING_SIZE) continue;
      const g = decodeGreeting(greeting);
      if (g.mechanism !== "NULL") {
        throw new ZmtpError(`the peer uses the ${g.mechanism} mechanism, this side NULL`);
      }
      version = g.version;
    }
    reader.push(piece, out);
  }
  return { version: version!, properties, early, slab, slabAt: at };
}

/** The greeting so far, padded to its full size so that `decodeGreeting` can say what is wrong. */
function fill(partial: Uint8Array): Uint8Array {
  const g = new Uint8Array(GREETING_SIZE);
  g.set(partial);
  return g;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

const text = new TextDecoder();
function utf8(b: Uint8Array | undefined): string {
  return b ? text.decode(b) : "";
}
