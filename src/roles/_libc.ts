/**
 * The few C library calls a role makes outside libzmq, through `Deno.dlopen` (Linux and glibc;
 * elsewhere each reports that it is not available):
 * - `malloc_trim(0)`: glibc keeps memory that libzmq or Deno's HTTP server frees (a departed
 *   subscriber's queue, thousands of closed connections' buffers) for reuse; this hands its free
 *   pages back to the system;
 * - the state of connections libzmq owns, by their file descriptors (from a socket monitor):
 *   whether the kernel would take more bytes for each (`poll`), how many it holds (`ioctl`), how
 *   many a tcp peer acknowledged, each one's send buffer (read and set), each one's identity; and
 *   `shutdown`, which makes libzmq drop a connection (and free its queue) as if the peer had gone.
 *
 * @module
 */

import type { ConnectionLook } from "./subscriber_guard.ts";

const SYMBOLS = {
  malloc_trim: { parameters: ["usize"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  // ioctl is variadic; on x86_64 and aarch64 its third argument passes like a fixed one.
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | null | undefined;

function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | null {
  if (lib === undefined) {
    lib = null;
    if (Deno.build.os === "linux") {
      try {
        lib = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
      } catch { /* musl, or no libc.so.6 */ }
    }
  }
  return lib;
}

/** Calls glibc's `malloc_trim(0)`; returns `false` where there is none (not Linux, not glibc). */
export function mallocTrim(): boolean {
  const c = libc();
  if (!c) return false;
  c.malloc_trim(0n);
  return true;
}

const TIOCOUTQ = 0x5411n; // also SIOCOUTQ
const POLLOUT = 0x004;
const POLLERR_HUP = 0x008 | 0x010;
const POLLNVAL = 0x020;
const SOL_SOCKET = 1;
const SO_COOKIE = 57;
const SO_SNDBUF = 7;
const IPPROTO_TCP = 6;
const TCP_INFO = 11;
/** The offset of `tcpi_bytes_acked` in `struct tcp_info` (Linux 4.2 and later). */
const TCPI_BYTES_ACKED = 120;
const tcpInfo = new Uint8Array(256);
const tcpLen = new Uint32Array(1);
const tcpLenBytes = new Uint8Array(tcpLen.buffer);
const SHUT_RDWR = 2;
const int = new Int32Array(2);
const intBytes = new Uint8Array(int.buffer);
const len = new Uint32Array(1);
const lenBytes = new Uint8Array(len.buffer);

/** True where the connection calls below work (Linux with glibc). */
export function connectionCallsAvailable(): boolean {
  return libc() !== null;
}

/**
 * Each connection's kernel send queue: whether it is full (one `poll` with no wait for all), how
 * many bytes it holds (`TIOCOUTQ`), and for tcp how many have left the sender in all (acknowledged
 * plus held); `undefined` for a descriptor that is no longer open, and for all of them where these
 * calls are not available.
 */
export function connectionStates(fds: readonly number[]): (ConnectionLook | undefined)[] {
  return connectionsFull(fds).map((full, i) => {
    // Acknowledged first: bytes acknowledged between the two calls are then counted in neither,
    // never in both (what left is never overstated).
    const acked = full === undefined ? undefined : tcpBytesAcked(fds[i]);
    const queued = full === undefined ? undefined : queuedBytes(fds[i]);
    if (queued === undefined) return undefined;
    return acked === undefined
      ? { full: full!, queued }
      : { full: full!, queued, sent: Number(acked) + queued };
  });
}

/**
 * Bytes connection `fd` holds that its peer has not read (`TIOCOUTQ`; for tcp, not yet
 * acknowledged); `undefined` for a descriptor that is not open.
 */
export function queuedBytes(fd: number): number | undefined {
  const c = libc();
  if (!c || c.ioctl(fd, TIOCOUTQ, intBytes) !== 0) return undefined;
  return int[0];
}

function connectionsFull(fds: readonly number[]): (boolean | undefined)[] {
  const c = libc();
  const items = new Int32Array(fds.length * 2); // struct pollfd { int fd; short events, revents; }
  const shorts = new Int16Array(items.buffer);
  fds.forEach((fd, i) => {
    items[i * 2] = fd;
    shorts[i * 4 + 2] = POLLOUT;
  });
  if (!c || !fds.length || c.poll(new Uint8Array(items.buffer), BigInt(fds.length), 0) < 0) {
    return fds.map(() => undefined);
  }
  return fds.map((_, i) => {
    const revents = shorts[i * 4 + 3];
    if (revents & POLLNVAL) return undefined;
    // A connection in error or hung up is libzmq's to close, not full.
    return (revents & (POLLOUT | POLLERR_HUP)) === 0;
  });
}

/**
 * Bytes of connection `fd` its tcp peer has acknowledged so far (`tcpi_bytes_acked`, which only
 * grows); `undefined` for a connection that is not tcp.
 */
export function tcpBytesAcked(fd: number): bigint | undefined {
  const c = libc();
  if (!c) return undefined;
  tcpLen[0] = tcpInfo.byteLength;
  if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcpInfo, tcpLenBytes) !== 0) return undefined;
  if (tcpLen[0] < TCPI_BYTES_ACKED + 8) return undefined; // a kernel older than 4.2
  return new DataView(tcpInfo.buffer).getBigUint64(TCPI_BYTES_ACKED, true); // x86_64, aarch64
}

/** Connection `fd`'s kernel send buffer in bytes (`SO_SNDBUF`, as the kernel counts it). */
export function sendBuffer(fd: number): number | undefined {
  const c = libc();
  if (!c) return undefined;
  len[0] = 4;
  if (c.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, intBytes, lenBytes) !== 0) return undefined;
  return int[0];
}

/**
 * Sets connection `fd`'s send buffer so that {@linkcode sendBuffer} reads `bytes` (Linux doubles
 * what it is given), or to the kernel's least with 0. Returns whether the call succeeded.
 */
export function setSendBuffer(fd: number, bytes: number): boolean {
  const c = libc();
  if (!c) return false;
  int[0] = Math.floor(bytes / 2);
  return c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, intBytes, 4) === 0;
}

/**
 * The kernel's identity of the socket at `fd` (`SO_COOKIE`, unique while the system runs), to
 * tell a connection from a later one that reuses its descriptor; `undefined` if none.
 */
export function connectionCookie(fd: number): bigint | undefined {
  const c = libc();
  if (!c) return undefined;
  len[0] = 8;
  if (c.getsockopt(fd, SOL_SOCKET, SO_COOKIE, intBytes, lenBytes) !== 0) return undefined;
  return new BigUint64Array(int.buffer)[0];
}

/** Shuts connection `fd` down in both directions; its owner (libzmq) then closes it. */
export function shutdownConnection(fd: number): boolean {
  const c = libc();
  return c !== null && c.shutdown(fd, SHUT_RDWR) === 0;
}
