/**
 * The Integration Manager's side of the subscriber guard (`subscriber_guard.ts` decides): it
 * follows the publish socket's connections through a libzmq socket monitor (each one's file
 * descriptor), looks at them every {@linkcode GUARD_INTERVAL_MS}, and `shutdown`s those the guard
 * names; and it hands freed memory back to the system after a cut and after a burst.
 *
 * @module
 */

import { connectionCookie, connectionStates, mallocTrim, shutdownConnection } from "./_libc.ts";
import { GUARD_INTERVAL_MS, type SubscriberGuard } from "./subscriber_guard.ts";
import { logger } from "../log.ts";
import { MonitorEvent } from "../zmq/ffi.ts";
import { monitorSocket } from "../zmq/monitor.ts";
import type { Reactor, ReactorSocket } from "../zmq/reactor.ts";

/**
 * Hands freed memory back to the system a second after it is asked to, at most once every 10 s
 * (a trim stalls the thread for ~2 ms, or up to ~200 ms when 170 MiB come back): a V8 collection
 * first (received frames are views into buffers only a collection frees; `gc` exists when the
 * process runs with --expose-gc, as `start` runs the IM), then glibc's `malloc_trim`.
 */
export class TrimScheduler {
  #timer?: ReturnType<typeof setTimeout>;
  #last = -Infinity;

  /** Asks for a trim (one is pending at most). */
  schedule(): void {
    if (this.#timer !== undefined) return;
    const wait = Math.max(1000, this.#last + 10_000 - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#last = performance.now();
      (globalThis as { gc?: () => void }).gc?.();
      mallocTrim();
    }, wait);
    Deno.unrefTimer(this.#timer);
  }

  /** Cancels a pending trim. */
  stop(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * Follows `pub`'s connections and cuts those `guard` names, counting them in `stats`; returns a
 * function that stops. Watch before binding: connections made before are not seen.
 */
export async function watchSubscribers(
  reactor: Reactor,
  pub: ReactorSocket,
  guard: SubscriberGuard,
  stats: { subscribers: number; subscribersCut: number },
  trim: TrimScheduler,
): Promise<() => void> {
  const log = logger("integration-manager");
  /** Each connection's kernel identity, so a reused descriptor is never cut by mistake. */
  const cookies = new Map<number, bigint | undefined>();
  const events = MonitorEvent.ACCEPTED | MonitorEvent.DISCONNECTED | MonitorEvent.CLOSED;
  await monitorSocket(reactor, pub, events, (event, _endpoint, fd) => {
    if (event === MonitorEvent.ACCEPTED) {
      cookies.set(fd, connectionCookie(fd));
      guard.connected(fd);
    } else if (cookies.delete(fd)) {
      guard.disconnected(fd);
    }
    stats.subscribers = guard.size;
  });
  /** Bytes published at the last look, when that count last changed, and at the last trim. */
  let seen = 0;
  let quietSince = performance.now();
  let trimmedAt = 0;
  const timer = setInterval(() => {
    // After a burst of publications (`subscriber_buffer` bytes or more), once quiet for a second:
    // hand back what the burst's queues freed.
    if (guard.total !== seen) {
      seen = guard.total;
      quietSince = performance.now();
    } else if (seen - trimmedAt >= guard.budget && performance.now() - quietSince >= 1000) {
      trimmedAt = seen;
      trim.schedule();
    }
    for (const { id, behind } of guard.sample(connectionStates)) {
      const cookie = cookies.get(id);
      cookies.delete(id);
      // The descriptor may have been closed and reused since the monitor reported it.
      if (connectionCookie(id) !== cookie) continue;
      if (!shutdownConnection(id)) continue;
      stats.subscribersCut++;
      trim.schedule();
      log.warn(
        "Disconnected a subscriber that reads nothing: {behind} bytes published since it last read " +
          "(subscriber_buffer {budget}); it will connect again and miss what was published meanwhile",
        { behind, budget: guard.budget },
      );
    }
    stats.subscribers = guard.size;
  }, GUARD_INTERVAL_MS);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
