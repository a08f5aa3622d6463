/**
 * The C library's `poll(2)` on the file descriptors libzmq signals (`ZMQ_FD`), in-thread and
 * on another thread (a nonblocking FFI call). The reactor waits with it instead of `zmq_poll`,
 * which checks every socket's `ZMQ_EVENTS` before and after each wait: a `getpid` and a `poll`
 * system call per socket each time, most of a one-message wake-up's system calls (measured: the
 * Subject made ~70 `getpid` and ~70 `poll` calls per request, one at a time). Linux with glibc
 * only; elsewhere {@linkcode fdPoll} is `null` and the reactor keeps `zmq_poll`.
 *
 * @module
 */

const SYMBOLS = {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  poll_async: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** `poll(2)`, in-thread and off-thread. */
export type FdPoll = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: FdPoll | null | undefined;

/**
 * `poll(2)` from libc, or `null` where it cannot be loaded (not Linux, not glibc) or
 * `ZMANAGER_ZMQ_POLL=1` asks for libzmq's `zmq_poll` (to compare the two).
 */
export function fdPoll(): FdPoll | null {
  if (lib === undefined) {
    lib = null;
    let zmqPoll = false;
    try {
      zmqPoll = Deno.env.get("ZMANAGER_ZMQ_POLL") === "1";
    } catch { /* no env permission: the default */ }
    if (Deno.build.os === "linux" && !zmqPoll) {
      try {
        lib = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
      } catch { /* musl, or no libc.so.6 */ }
    }
  }
  return lib;
}

/** Size of one `struct pollfd` (int fd; short events; short revents). */
export const POLLFD_SIZE = 8;
