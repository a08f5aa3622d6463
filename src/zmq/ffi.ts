/**
 * Loading libzmq through `Deno.dlopen`. By default the library is a system libzmq built with
 * CURVE when there is one (Debian's `libzmq5`), else the prebuilt libzmq inside the pinned
 * npm:zeromq package (its addon exports the whole C API, but has no CURVE); the
 * `ZMANAGER_LIBZMQ` environment variable names another file. npm:zeromq's JavaScript API is
 * never used: it hangs under Deno.
 *
 * @module
 */

// Importing the package's package.json (data, no code) makes Deno fetch the package, so the
// addon file is on disk, and lets import.meta.resolve locate it.
import zeromqPackage from "zeromq/package.json" with { type: "json" };

/** The libzmq C functions this project calls. */
const SYMBOLS = {
  zmq_version: { parameters: ["buffer", "buffer", "buffer"], result: "void" },
  zmq_has: { parameters: ["buffer"], result: "i32" },
  zmq_errno: { parameters: [], result: "i32" },
  zmq_strerror: { parameters: ["i32"], result: "pointer" },
  zmq_ctx_new: { parameters: [], result: "pointer" },
  zmq_ctx_set: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  zmq_ctx_shutdown: { parameters: ["pointer"], result: "i32" },
  zmq_ctx_term_async: { name: "zmq_ctx_term", parameters: ["pointer"], result: "i32", nonblocking: true },
  zmq_socket: { parameters: ["pointer", "i32"], result: "pointer" },
  zmq_close: { parameters: ["pointer"], result: "i32" },
  zmq_bind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_connect: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_unbind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_disconnect: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_setsockopt: { parameters: ["pointer", "i32", "buffer", "usize"], result: "i32" },
  zmq_getsockopt: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "i32" },
  zmq_send: { parameters: ["pointer", "buffer", "usize", "i32"], result: "i32" },
  zmq_recv: { parameters: ["pointer", "buffer", "usize", "i32"], result: "i32" },
  zmq_poll: { parameters: ["buffer", "i32", "i64"], result: "i32" },
  zmq_curve_keypair: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_curve_public: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_socket_monitor: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  zmq_z85_encode: { parameters: ["buffer", "buffer", "usize"], result: "pointer" },
  zmq_z85_decode: { parameters: ["buffer", "buffer"], result: "pointer" },
  zmq_poll_async: {
    name: "zmq_poll",
    parameters: ["buffer", "i32", "i64"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's symbols. */
export type ZmqSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** A loaded libzmq. */
export interface LibZmq {
  /** Its functions. */
  readonly symbols: ZmqSymbols;
  /** The file it was loaded from. */
  readonly path: string;
  /** `major.minor.patch`. */
  readonly version: string;
  /** Whether it was built with CURVE (`zmq_has("curve")`). */
  readonly curve: boolean;
  /** Where it came from: `ZMANAGER_LIBZMQ`, the system, or the npm:zeromq addon. */
  readonly source: "env" | "system" | "npm";
}

/** What to do to get a libzmq with CURVE, for `doctor` and start-up errors. */
export const CURVE_ADVICE =
  "install a libzmq built with CURVE (Debian/Ubuntu: apt-get install libzmq5; macOS: brew install zeromq) " +
  "and run again (it is preferred when present), or point ZMANAGER_LIBZMQ at one " +
  "(e.g. /usr/lib/x86_64-linux-gnu/libzmq.so.5)";

/** Socket types (`ZMQ_*`). */
export const SocketType = Object.freeze({
  PAIR: 0,
  PUB: 1,
  SUB: 2,
  REQ: 3,
  REP: 4,
  DEALER: 5,
  ROUTER: 6,
  PULL: 7,
  PUSH: 8,
  XPUB: 9,
  XSUB: 10,
});
/** A socket type name. */
export type SocketTypeName = keyof typeof SocketType;

/** Socket option numbers used here (from zmq.h, libzmq 4.3). */
export const Opt = Object.freeze({
  ROUTING_ID: 5,
  SUBSCRIBE: 6,
  UNSUBSCRIBE: 7,
  RCVMORE: 13,
  FD: 14,
  EVENTS: 15,
  TYPE: 16,
  LINGER: 17,
  RECONNECT_IVL: 18,
  RECONNECT_IVL_MAX: 21,
  MAXMSGSIZE: 22,
  SNDHWM: 23,
  RCVHWM: 24,
  LAST_ENDPOINT: 32,
  ROUTER_MANDATORY: 33,
  IMMEDIATE: 39,
  CURVE_SERVER: 47,
  CURVE_PUBLICKEY: 48,
  CURVE_SECRETKEY: 49,
  CURVE_SERVERKEY: 50,
  ZAP_DOMAIN: 55,
  HANDSHAKE_IVL: 66,
  XPUB_NODROP: 69,
  HEARTBEAT_IVL: 75,
  HEARTBEAT_TTL: 76,
  HEARTBEAT_TIMEOUT: 77,
  XPUB_VERBOSER: 78,
  CONNECT_TIMEOUT: 79,
});

/**
 * Socket monitor events (`ZMQ_EVENT_*`) used here. `ACCEPTED`, `CLOSED` and `DISCONNECTED` carry
 * the connection's file descriptor as their value.
 */
export const MonitorEvent = Object.freeze({
  ACCEPTED: 0x0020,
  CLOSED: 0x0080,
  DISCONNECTED: 0x0200,
  MONITOR_STOPPED: 0x0400,
  HANDSHAKE_FAILED_NO_DETAIL: 0x0800,
  HANDSHAKE_SUCCEEDED: 0x1000,
  HANDSHAKE_FAILED_PROTOCOL: 0x2000,
  HANDSHAKE_FAILED_AUTH: 0x4000,
});

/** Send and receive flags. */
export const DONTWAIT = 1;
/** More frames follow. */
export const SNDMORE = 2;
/** Poll events. */
export const POLLIN = 1;
/** Poll events. */
export const POLLOUT = 2;
/** Context option: number of I/O threads. */
export const CTX_IO_THREADS = 1;
/** Context option: block `zmq_ctx_term` on lingering sockets. */
export const CTX_BLOCKY = 70;

const HAUSNUMERO = 156384712;
/** errno values libzmq reports. */
export const Errno = Object.freeze({
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  EINVAL: 22,
  ENAMETOOLONG: 36,
  ENOTSOCK: 88,
  EPROTONOSUPPORT: 93,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EFSM: HAUSNUMERO + 51,
  ENOCOMPATPROTO: HAUSNUMERO + 52,
  ETERM: HAUSNUMERO + 53,
  EMTHREAD: HAUSNUMERO + 54,
});
const ERRNO_NAMES = new Map(Object.entries(Errno).map(([k, v]) => [v, k]));

/** A libzmq call failed. */
export class ZmqError extends Error {
  /** The errno value. */
  readonly errno: number;
  /** Its name, e.g. `EADDRINUSE`, or `E<number>` for an unlisted one. */
  readonly code: string;
  /** Builds the error from an errno and the name of the call that failed. */
  constructor(call: string, errno: number, detail: string) {
    const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
    super(`${call} failed: ${detail} (${code})`);
    this.name = "ZmqError";
    this.errno = errno;
    this.code = code;
  }
}

/** No libzmq could be loaded. */
export class LibZmqNotFoundError extends Error {
  /** Every file tried, with the reason it failed. */
  readonly tried: readonly { path: string; reason: string }[];
  /** What kind of error this is, for programs: `libzmq_not_found`. */
  readonly code = "libzmq_not_found";
  /** Builds the error listing what was tried. */
  constructor(tried: readonly { path: string; reason: string }[]) {
    super(
      "Could not load libzmq. Tried:\n" + tried.map((t) => `  ${t.path}: ${t.reason}`).join("\n") +
        "\nSet ZMANAGER_LIBZMQ to the path of a libzmq 4.x shared library (e.g. Debian's " +
        "/usr/lib/x86_64-linux-gnu/libzmq.so.5 from the libzmq5 package)",
    );
    this.name = "LibZmqNotFoundError";
    this.tried = tried;
  }
}

function packageDir(): string | undefined {
  try {
    const url = import.meta.resolve("zeromq/package.json");
    if (!url.startsWith("file:")) return undefined;
    return decodeURIComponent(new URL(".", url).pathname).replace(/\/$/, "");
  } catch {
    return undefined;
  }
}

function addonCandidates(): string[] {
  const dir = packageDir();
  if (!dir) return [];
  const platform = Deno.build.os === "windows" ? "win32" : Deno.build.os;
  const arch = Deno.build.arch === "x86_64" ? "x64" : "arm64";
  const base = `${dir}/build/${platform}/${arch}/node`;
  let names: string[] = [];
  try {
    names = [...Deno.readDirSync(base)].filter((e) => e.isDirectory).map((e) => e.name);
  } catch {
    return [];
  }
  const rank = (n: string) => (/^\d+$/.test(n) ? 0 : n.startsWith("glibc") || n.startsWith("libc") ? 1 : 2);
  const num = (n: string) => Number(n.match(/\d+/)?.[0] ?? 0);
  names.sort((a, b) => rank(a) - rank(b) || num(b) - num(a));
  return names.map((n) => `${base}/${n}/addon.node`);
}

function systemCandidates(): string[] {
  if (Deno.build.os === "darwin") {
    return ["libzmq.5.dylib", "/opt/homebrew/lib/libzmq.5.dylib", "/usr/local/lib/libzmq.5.dylib"];
  }
  return ["libzmq.so.5", "libzmq.so"];
}

function tryOpen(path: string, source: LibZmq["source"]): LibZmq | string {
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (e) {
    return (e as Error).message.replace(/^Could not open library: /, "").split("\n")[0];
  }
  const v = [new Int32Array(1), new Int32Array(1), new Int32Array(1)];
  lib.symbols.zmq_version(v[0], v[1], v[2]);
  if (v[0][0] !== 4) {
    lib.close();
    return `libzmq ${v[0][0]}.${v[1][0]} found; 4.x is needed`;
  }
  const curve = lib.symbols.zmq_has(cstr("curve")) === 1;
  return { symbols: lib.symbols, path, version: `${v[0][0]}.${v[1][0]}.${v[2][0]}`, curve, source };
}

let loaded: LibZmq | undefined;

/**
 * Loads libzmq once per process: `ZMANAGER_LIBZMQ` when set (and only that); else a system
 * libzmq built with CURVE (Debian's `libzmq5`) when there is one; else the npm:zeromq addon for
 * this platform (libzmq 4.3.5, no CURVE); else a system libzmq without CURVE.
 *
 * @throws {LibZmqNotFoundError} listing every file tried.
 */
export function libzmq(): LibZmq {
  if (loaded) return loaded;
  const tried: { path: string; reason: string }[] = [];
  const override = Deno.env.get("ZMANAGER_LIBZMQ");
  if (override) {
    const r = tryOpen(override, "env");
    if (typeof r !== "string") return (loaded = r);
    throw new LibZmqNotFoundError([{ path: override, reason: r }]);
  }
  const withCurve = curveLibrary();
  if (withCurve) {
    const r = tryOpen(withCurve, "system");
    if (typeof r !== "string") return (loaded = r);
    tried.push({ path: withCurve, reason: r });
  }
  const addons = addonCandidates();
  if (addons.length === 0) {
    tried.push({
      path: `npm:zeromq@${zeromqPackage.version}`,
      reason: "package directory not found on disk",
    });
  }
  for (const path of [...addons, ...systemCandidates()]) {
    const r = tryOpen(path, addons.includes(path) ? "npm" : "system");
    if (typeof r === "string") tried.push({ path, reason: r });
    else return (loaded = r);
  }
  throw new LibZmqNotFoundError(tried);
}

let curvePath: string | null | undefined;

/** A system libzmq built with CURVE, if there is one (the one {@linkcode libzmq} prefers). */
export function curveLibrary(): string | undefined {
  if (curvePath !== undefined) return curvePath ?? undefined;
  curvePath = null;
  for (const path of systemCandidates()) {
    let lib: Deno.DynamicLibrary<{ zmq_has: { parameters: ["buffer"]; result: "i32" } }>;
    try {
      lib = Deno.dlopen(path, { zmq_has: { parameters: ["buffer"], result: "i32" } });
    } catch {
      continue;
    }
    const has = lib.symbols.zmq_has(cstr("curve")) === 1;
    lib.close();
    if (has) {
      curvePath = path;
      break;
    }
  }
  return curvePath ?? undefined;
}

/**
 * A size or timeout for a 64-bit FFI parameter. Deno accepts plain numbers for those at run
 * time (its types say `bigint`); converting to `bigint` on every call would cost an
 * allocation on the hot path.
 */
export function i64(n: number): bigint {
  return n as unknown as bigint;
}

const encoder = new TextEncoder();

/** A NUL-terminated C string. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(s.length * 3 + 1);
  const { written } = encoder.encodeInto(s, b);
  return b.subarray(0, written + 1);
}

/** The current errno as a {@linkcode ZmqError}. */
export function lastError(call: string): ZmqError {
  const { symbols } = libzmq();
  const errno = symbols.zmq_errno();
  const p = symbols.zmq_strerror(errno);
  const detail = p ? Deno.UnsafePointerView.getCString(p) : `errno ${errno}`;
  return new ZmqError(call, errno, detail);
}

/** What `zmq_has` reports for the capabilities of interest. */
export function capabilities(): Record<string, boolean> {
  const { symbols } = libzmq();
  const out: Record<string, boolean> = {};
  for (const cap of ["ipc", "pgm", "tipc", "norm", "curve", "gssapi", "draft"]) {
    out[cap] = symbols.zmq_has(cstr(cap)) === 1;
  }
  return out;
}
