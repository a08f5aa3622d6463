/**
 * The project's ZeroMQ layer: libzmq's C API over Deno FFI, and a reactor that runs a
 * process's sockets on one off-thread poll. Nothing else in the project touches libzmq.
 *
 * @example
 * ```ts
 * import { Reactor } from "./mod.ts";
 * const reactor = new Reactor();
 * const pull = reactor.socket("PULL");
 * await pull.bind("inproc://example");
 * const push = reactor.socket("PUSH");
 * await push.connect("inproc://example");
 * await push.send([new TextEncoder().encode("hi")]);
 * const [frame] = await pull.receive();
 * console.log(new TextDecoder().decode(frame)); // "hi"
 * await reactor.close();
 * ```
 *
 * @module
 */

export {
  capabilities,
  Errno,
  type LibZmq,
  libzmq,
  LibZmqNotFoundError,
  SocketType,
  type SocketTypeName,
  ZmqError,
} from "./ffi.ts";
export {
  checkEndpoint,
  Context,
  type ContextOptions,
  IPC_PATH_MAX,
  Socket,
  type SocketOptions,
} from "./socket.ts";
export { Reactor, type ReactorOptions, ReactorSocket } from "./reactor.ts";
