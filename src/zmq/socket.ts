/**
 * Synchronous libzmq sockets. A socket belongs to one thread; when it is registered with a
 * {@linkcode Reactor}, only the reactor touches it (see `reactor.ts`), because an
 * off-thread `zmq_poll` must never overlap a send or receive on the same socket.
 *
 * @module
 */

import {
  cstr,
  CTX_BLOCKY,
  CTX_IO_THREADS,
  DONTWAIT,
  Errno,
  i64,
  lastError,
  libzmq,
  Opt,
  POLLIN,
  SNDMORE,
  SocketType,
  type SocketTypeName,
  type ZmqSymbols,
} from "./ffi.ts";

/** Linux limit for the path of a Unix socket (`sun_path` less its NUL). */
export const IPC_PATH_MAX = 107;

/** Options of a socket; names follow the `ZMQ_*` options they set. */
export interface SocketOptions {
  /**
   * Milliseconds to keep unsent messages after close (`ZMQ_LINGER`); -1 forever.
   * @default {1000}
   */
  readonly linger?: number;
  /** `ZMQ_SNDHWM`: messages queued per peer before sends block. @default {1000} */
  readonly sendHighWaterMark?: number;
  /** `ZMQ_RCVHWM`: messages queued per peer before the peer is pushed back. @default {1000} */
  readonly receiveHighWaterMark?: number;
  /**
   * Largest frame in bytes. A message with a larger frame is read, counted in
   * `oversizeDrops` and dropped; one with a frame over {@linkcode HARD_SIZE_FACTOR} times this
   * is refused by libzmq (`ZMQ_MAXMSGSIZE`), which drops the sender's connection instead of
   * reading it into memory. @default {unlimited}
   */
  readonly maxMessageSize?: number;
  /** `ZMQ_ROUTING_ID`. */
  readonly routingId?: string | Uint8Array;
  /** `ZMQ_ROUTER_MANDATORY`: sending to an unknown routing id fails instead of dropping. */
  readonly routerMandatory?: boolean;
  /** `ZMQ_IMMEDIATE`: queue only to completed connections. */
  readonly immediate?: boolean;
  /** `ZMQ_HEARTBEAT_IVL`, milliseconds. */
  readonly heartbeatInterval?: number;
  /** `ZMQ_HEARTBEAT_TIMEOUT`, milliseconds. */
  readonly heartbeatTimeout?: number;
  /** `ZMQ_HEARTBEAT_TTL`, milliseconds. */
  readonly heartbeatTtl?: number;
  /** `ZMQ_RECONNECT_IVL`, milliseconds. */
  readonly reconnectInterval?: number;
  /** `ZMQ_RECONNECT_IVL_MAX`, milliseconds. */
  readonly reconnectIntervalMax?: number;
  /** `ZMQ_CURVE_SERVER`. Needs a libzmq built with CURVE (see `doctor`). */
  readonly curveServer?: boolean;
  /** `ZMQ_CURVE_PUBLICKEY`, Z85 text. */
  readonly curvePublicKey?: string;
  /** `ZMQ_CURVE_SECRETKEY`, Z85 text. */
  readonly curveSecretKey?: string;
  /** `ZMQ_CURVE_SERVERKEY`, Z85 text. */
  readonly curveServerKey?: string;
  /** `ZMQ_ZAP_DOMAIN`. */
  readonly zapDomain?: string;
}

/** Options of a {@linkcode Context}. */
export interface ContextOptions {
  /** `ZMQ_IO_THREADS`. @default {1} */
  readonly ioThreads?: number;
}

const DEFAULT_LINGER = 1000;
/** Frames larger than this are dropped on receipt (and counted) unless a socket allows more. */
export const DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024;

/** Checks an endpoint before bind/connect; an over-long ipc path gets a clear error. */
export function checkEndpoint(endpoint: string): void {
  if (endpoint.startsWith("ipc://")) {
    const path = endpoint.slice(6);
    const bytes = new TextEncoder().encode(path).length;
    if (bytes > IPC_PATH_MAX) {
      throw new RangeError(
        `ipc endpoint path is ${bytes} bytes, over the ${IPC_PATH_MAX}-byte limit for Unix sockets: ${path}; ` +
          "use a shorter runtime directory (--runtime-dir) or a tcp:// endpoint",
      );
    }
  }
}

/** A libzmq context: owns sockets and I/O threads. */
export class Context {
  readonly #z: ZmqSymbols;
  #ptr: Deno.PointerValue;
  readonly #sockets = new Set<Socket>();
  #terminated?: Promise<boolean>;

  /** Creates a context. */
  constructor(options: ContextOptions = {}) {
    this.#z = libzmq().symbols;
    this.#ptr = this.#z.zmq_ctx_new();
    if (!this.#ptr) throw lastError("zmq_ctx_new");
    this.#z.zmq_ctx_set(this.#ptr, CTX_IO_THREADS, options.ioThreads ?? 1);
    this.#z.zmq_ctx_set(this.#ptr, CTX_BLOCKY, 0);
  }

  /** Creates a socket of this context. */
  socket(type: SocketTypeName, options: SocketOptions = {}): Socket {
    if (!this.#ptr) throw new Error("Context is terminated");
    const s = new Socket(this.#z, this.#ptr, type, options, (x) => this.#sockets.delete(x));
    this.#sockets.add(s);
    return s;
  }

  /**
   * Closes every socket still open and terminates the context. Resolves `true` when libzmq
   * finished, `false` if it was still lingering after `timeoutMs` (the process may exit
   * anyway). Safe to call twice.
   */
  terminate(timeoutMs = 5000): Promise<boolean> {
    if (this.#terminated) return this.#terminated;
    for (const s of [...this.#sockets]) s.close();
    const ptr = this.#ptr;
    this.#ptr = null;
    this.#z.zmq_ctx_shutdown(ptr);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = this.#z.zmq_ctx_term_async(ptr).then(() => true);
    const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    this.#terminated = Promise.race([done, late]).finally(() => clearTimeout(timer));
    return this.#terminated;
  }
}

const moreFlag = new Int32Array(1);
const moreFlagBytes = new Uint8Array(moreFlag.buffer);
const optLen = new BigUint64Array(1);
const optLenBytes = new Uint8Array(optLen.buffer);
let receiveBuffer = new Uint8Array(DEFAULT_RECEIVE_BUFFER);

// Received frames are copied into a shared slab and handed out as views: allocating one
// ArrayBuffer per frame (`slice`) costs ~1 µs, four times the receive itself. A slab lives
// while any view into it does.
const SLAB_SIZE = 256 * 1024;
let slab = new Uint8Array(SLAB_SIZE);
let slabOffset = 0;

/**
 * Bytes of large frames received (each its own buffer) after which a young-generation collection
 * is asked for, where the process exposes `gc` (the IM, which `start` runs with --expose-gc). V8
 * let such buffers, garbage once published, pile up to ~150 MiB before collecting them: the IM
 * peaked at 231–235 MiB in the 1.1 GB flood, at 186–204 MiB collecting every 16 MiB, and at
 * 165–180 MiB every 4 MiB (each collection takes well under a millisecond; the flood took as long).
 */
export const COLLECT_AFTER_BYTES = 4 << 20;
const gc = (globalThis as { gc?: (options?: { type: "minor" }) => void }).gc;
let largeSinceCollect = 0;

function copyOut(n: number): Uint8Array {
  if (n > SLAB_SIZE / 8) {
    if (gc && (largeSinceCollect += n) >= COLLECT_AFTER_BYTES) {
      largeSinceCollect = 0;
      gc({ type: "minor" });
    }
    return receiveBuffer.slice(0, n);
  }
  if (slabOffset + n > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    slabOffset = 0;
  }
  slab.set(receiveBuffer.subarray(0, n), slabOffset);
  const view = slab.subarray(slabOffset, slabOffset + n);
  slabOffset += (n + 7) & ~7;
  return view;
}

/** How many times `maxMessageSize` a frame may be before libzmq refuses it unread. */
export const HARD_SIZE_FACTOR = 16;

/** A libzmq socket, used synchronously. */
export class Socket {
  /** The socket type. */
  readonly type: SocketTypeName;
  readonly #z: ZmqSymbols;
  #ptr: Deno.PointerValue;
  readonly #onClose: (s: Socket) => void;
  /** Messages dropped on receipt because a frame was larger than `maxMessageSize`. */
  oversizeDrops = 0;
  /**
   * Called with each message dropped as oversize: its frames, `null` in place of each frame
   * over the limit (never read), so a role can answer the sender (its identity, its header).
   */
  onOversize?: (frames: (Uint8Array | null)[]) => void;
  readonly #maxFrame: number = Infinity;

  /** Use {@linkcode Context.socket}. */
  constructor(
    z: ZmqSymbols,
    ctx: Deno.PointerValue,
    type: SocketTypeName,
    options: SocketOptions,
    onClose: (s: Socket) => void,
  ) {
    this.#z = z;
    this.type = type;
    this.#onClose = onClose;
    this.#ptr = z.zmq_socket(ctx, SocketType[type]);
    if (!this.#ptr) throw lastError("zmq_socket");
    this.setInt(Opt.LINGER, options.linger ?? DEFAULT_LINGER);
    if (options.sendHighWaterMark !== undefined) this.setInt(Opt.SNDHWM, options.sendHighWaterMark);
    if (options.receiveHighWaterMark !== undefined) this.setInt(Opt.RCVHWM, options.receiveHighWaterMark);
    if (options.maxMessageSize !== undefined) {
      this.#maxFrame = options.maxMessageSize;
      this.setInt64(Opt.MAXMSGSIZE, options.maxMessageSize * HARD_SIZE_FACTOR);
      if (options.maxMessageSize > receiveBuffer.length) {
        receiveBuffer = new Uint8Array(options.maxMessageSize);
      }
    }
    if (options.routingId !== undefined) this.setBytes(Opt.ROUTING_ID, options.routingId);
    if (options.routerMandatory) this.setInt(Opt.ROUTER_MANDATORY, 1);
    if (options.immediate) this.setInt(Opt.IMMEDIATE, 1);
    if (options.heartbeatInterval !== undefined) this.setInt(Opt.HEARTBEAT_IVL, options.heartbeatInterval);
    if (options.heartbeatTimeout !== undefined) this.setInt(Opt.HEARTBEAT_TIMEOUT, options.heartbeatTimeout);
    if (options.heartbeatTtl !== undefined) this.setInt(Opt.HEARTBEAT_TTL, options.heartbeatTtl);
    if (options.reconnectInterval !== undefined) this.setInt(Opt.RECONNECT_IVL, options.reconnectInterval);
    if (options.reconnectIntervalMax !== undefined) {
      this.setInt(Opt.RECONNECT_IVL_MAX, options.reconnectIntervalMax);
    }
    if (options.curveServer) this.setInt(Opt.CURVE_SERVER, 1);
    if (options.curvePublicKey) this.setBytes(Opt.CURVE_PUBLICKEY, options.curvePublicKey);
    if (options.curveSecretKey) this.setBytes(Opt.CURVE_SECRETKEY, options.curveSecretKey);
    if (options.curveServerKey) this.setBytes(Opt.CURVE_SERVERKEY, options.curveServerKey);
    if (options.zapDomain !== undefined) this.setBytes(Opt.ZAP_DOMAIN, options.zapDomain);
  }

  /** The raw `void*`, for poll items. */
  get pointer(): Deno.PointerValue {
    return this.#ptr;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#ptr === null;
  }

  /**
   * @internal False only when the socket is known to have nothing to read *and* its file
   * descriptor ({@linkcode Socket.fd}) will signal when that changes: right after a receive
   * that found nothing or an `events()` without POLLIN (both process libzmq's pending commands).
   * Any other call may process commands (a send, say, can take in the "a pipe became readable"
   * command), after which a message can wait with the descriptor quiet; so every call sets it.
   */
  maybeInput = true;
  #fd = -1;

  #live(): Deno.PointerValue {
    if (!this.#ptr) throw new Error(`${this.type} socket is closed`);
    this.maybeInput = true;
    return this.#ptr;
  }

  /**
   * The descriptor libzmq signals (readable) when the socket's state may have changed
   * (`ZMQ_FD`): edge-like, so check {@linkcode Socket.events} before waiting on it.
   */
  get fd(): number {
    if (this.#fd < 0) this.#fd = this.getInt(Opt.FD);
    return this.#fd;
  }

  /**
   * What the socket can do now (`ZMQ_EVENTS`: `POLLIN`, `POLLOUT`), after processing libzmq's
   * pending commands (a `getpid` and a `poll` system call).
   */
  events(): number {
    for (;;) {
      optLen[0] = 4n;
      if (this.#z.zmq_getsockopt(this.#live(), Opt.EVENTS, moreFlagBytes, optLenBytes) === 0) break;
      if (this.#z.zmq_errno() !== Errno.EINTR) throw lastError("zmq_getsockopt(ZMQ_EVENTS)");
    }
    const ev = moreFlag[0];
    if (!(ev & POLLIN)) this.maybeInput = false;
    return ev;
  }

  /**
   * Runs an endpoint call, again while a signal interrupts it: libzmq first processes pending
   * commands, and a signal during that wait fails the call with `EINTR` before it did anything
   * (seen: `zmq_bind` under V8's sampling profiler).
   */
  #endpointCall(
    name: string,
    endpoint: string,
    call: (ptr: Deno.PointerValue, ep: Uint8Array<ArrayBuffer>) => number,
  ) {
    const ep = cstr(endpoint);
    while (call(this.#live(), ep) !== 0) {
      if (this.#z.zmq_errno() !== Errno.EINTR) throw lastError(`${name}(${endpoint})`);
    }
  }

  /** Binds to an endpoint (`ipc://`, `tcp://`, `inproc://`). */
  bind(endpoint: string): void {
    checkEndpoint(endpoint);
    this.#endpointCall("zmq_bind", endpoint, (p, ep) => this.#z.zmq_bind(p, ep));
  }

  /** Connects to an endpoint. */
  connect(endpoint: string): void {
    checkEndpoint(endpoint);
    this.#endpointCall(
      "zmq_connect",
      endpoint,
      (p, ep) => this.#z.zmq_connect(p, ep),
    );
  }

  /** Unbinds from an endpoint. */
  unbind(endpoint: string): void {
    this.#endpointCall(
      "zmq_unbind",
      endpoint,
      (p, ep) => this.#z.zmq_unbind(p, ep),
    );
  }

  /** Disconnects from an endpoint. */
  disconnect(endpoint: string): void {
    this.#endpointCall(
      "zmq_disconnect",
      endpoint,
      (p, ep) => this.#z.zmq_disconnect(p, ep),
    );
  }

  /**
   * Reports this socket's connection events (`events`, a mask of `MonitorEvent` values from ffi.ts) to a
   * PAIR socket libzmq binds at `endpoint` (an `inproc://` name): messages of two frames, the
   * event (uint16 id, uint32 value, little-endian) and the endpoint.
   */
  monitor(endpoint: string, events: number): void {
    this.#endpointCall("zmq_socket_monitor", endpoint, (p, ep) => this.#z.zmq_socket_monitor(p, ep, events));
  }

  /** Sets an int option. */
  setInt(option: number, value: number): void {
    const b = new Int32Array([value]);
    if (this.#z.zmq_setsockopt(this.#live(), option, new Uint8Array(b.buffer), i64(4)) !== 0) {
      throw lastError(`zmq_setsockopt(${option})`);
    }
  }

  /** Sets an int64 option. */
  setInt64(option: number, value: number): void {
    const b = new BigInt64Array([BigInt(value)]);
    if (this.#z.zmq_setsockopt(this.#live(), option, new Uint8Array(b.buffer), i64(8)) !== 0) {
      throw lastError(`zmq_setsockopt(${option})`);
    }
  }

  /** Sets a binary or text option. */
  setBytes(option: number, value: string | Uint8Array): void {
    const b = typeof value === "string" ? new TextEncoder().encode(value) : value;
    if (this.#z.zmq_setsockopt(this.#live(), option, b as Uint8Array<ArrayBuffer>, i64(b.length)) !== 0) {
      throw lastError(`zmq_setsockopt(${option})`);
    }
  }

  /** Reads an int option. */
  getInt(option: number): number {
    optLen[0] = 4n;
    if (this.#z.zmq_getsockopt(this.#live(), option, moreFlagBytes, optLenBytes) !== 0) {
      throw lastError(`zmq_getsockopt(${option})`);
    }
    return moreFlag[0];
  }

  /** The endpoint last bound, with the port or path filled in (`ZMQ_LAST_ENDPOINT`). */
  get lastEndpoint(): string {
    const b = new Uint8Array(1024);
    optLen[0] = BigInt(b.length);
    if (this.#z.zmq_getsockopt(this.#live(), Opt.LAST_ENDPOINT, b, optLenBytes) !== 0) {
      throw lastError("zmq_getsockopt(LAST_ENDPOINT)");
    }
    return new TextDecoder().decode(b.subarray(0, Math.max(0, Number(optLen[0]) - 1)));
  }

  /** Subscribes a SUB socket to a topic prefix. */
  subscribe(prefix: string | Uint8Array): void {
    this.setBytes(Opt.SUBSCRIBE, prefix);
  }

  /** Removes a subscription. */
  unsubscribe(prefix: string | Uint8Array): void {
    this.setBytes(Opt.UNSUBSCRIBE, prefix);
  }

  /**
   * Sends a multipart message without blocking. Returns `false` when the socket cannot take
   * it now (high-water mark reached, or no peer for PUSH/DEALER); libzmq takes multipart
   * messages whole, so a `false` means nothing was sent.
   * @throws {ZmqError} on other failures (e.g. `EHOSTUNREACH` with `routerMandatory`).
   */
  trySend(frames: readonly Uint8Array[]): boolean {
    const ptr = this.#live();
    const last = frames.length - 1;
    for (let i = 0; i <= last; i++) {
      const f = frames[i] as Uint8Array<ArrayBuffer>;
      const flags = i < last ? SNDMORE | DONTWAIT : DONTWAIT;
      while (this.#z.zmq_send(ptr, f, i64(f.length), flags) < 0) {
        const errno = this.#z.zmq_errno();
        if (errno === Errno.EINTR) continue; // a signal arrived (SIGTERM, a profiler): retry
        if (i === 0 && errno === Errno.EAGAIN) return false;
        throw lastError("zmq_send");
      }
    }
    return true;
  }

  /**
   * Receives one multipart message without blocking; `null` when none is waiting. A message
   * with a frame larger than `maxMessageSize` (or the receive buffer) is consumed, counted in
   * `oversizeDrops`, and skipped. Small frames are views into a shared slab: read them through their
   * `byteOffset` (as `TextDecoder`, `subarray` and `DataView(f.buffer, f.byteOffset)` do).
   */
  tryReceive(): Uint8Array[] | null {
    const ptr = this.#live();
    const z = this.#z;
    for (;;) {
      let n = this.#recv(ptr, DONTWAIT);
      if (n < 0) {
        this.maybeInput = false; // libzmq processed its commands: the descriptor signals what comes
        return null; // EAGAIN: nothing waiting (no Error object: this is the hot path)
      }
      const frames: (Uint8Array | null)[] = [];
      let oversize = false;
      for (;;) {
        if (n > receiveBuffer.length || n > this.#maxFrame) {
          oversize = true;
          frames.push(null);
        } else frames.push(copyOut(n));
        optLen[0] = 4n;
        z.zmq_getsockopt(ptr, Opt.RCVMORE, moreFlagBytes, optLenBytes);
        if (moreFlag[0] === 0) break;
        n = this.#recv(ptr, 0); // the rest of a multipart message is already here
        if (n < 0) throw lastError("zmq_recv");
      }
      if (!oversize) return frames as Uint8Array[];
      this.oversizeDrops++;
      this.onOversize?.(frames);
    }
  }

  /** One `zmq_recv`, retried when a signal interrupts it; -1 only for EAGAIN. */
  #recv(ptr: Deno.PointerValue, flags: number): number {
    for (;;) {
      const n = this.#z.zmq_recv(ptr, receiveBuffer, i64(receiveBuffer.length), flags);
      if (n >= 0) return n;
      const errno = this.#z.zmq_errno();
      if (errno === Errno.EINTR) continue;
      if (errno === Errno.EAGAIN) return -1;
      throw lastError("zmq_recv");
    }
  }

  /** Closes the socket (pending messages linger per `linger`). Safe to call twice. */
  close(): void {
    if (!this.#ptr) return;
    this.#z.zmq_close(this.#ptr);
    this.#ptr = null;
    this.#onClose(this);
  }
}
