/**
 * The Integration Manager's side of the subscriber guard (`subscriber_guard.ts` decides): it
 * follows the publish socket's connections through a libzmq socket monitor (each one's file
 * descriptor), looks at them every {@linkcode GUARD_INTERVAL_MS}, watches those the guard names
 * for {@linkcode WATCH_MS} (did their reader take anything?), and `shutdown`s those it says to
 * cut; and it hands freed memory back to the system after a cut and after a burst.
 *
 * @module
 */

import {
  connectionCookie,
  connectionStates,
  mallocTrim,
  queuedBytes,
  sendBuffer,
  setSendBuffer,
  shutdownConnection,
  tcpBytesAcked,
} from "./_libc.ts";
import { GUARD_INTERVAL_MS, type SubscriberGuard, WATCH_MS } from "./subscriber_guard.ts";
import { collectGarbage, TRIM_AFTER_GC_MS } from "./_gc.ts";
import { logger } from "../log.ts";
import { MonitorEvent } from "../zmq/ffi.ts";
import { monitorSocket } from "../zmq/monitor.ts";
import type { Reactor, ReactorSocket } from "../zmq/reactor.ts";

/**
 * Hands freed memory back to the system a second after it is asked to, at most once every 10 s
 * (a trim stalls the thread for ~2 ms, or up to ~200 ms when 170 MiB come back): a V8 collection
 * first (received frames are views into buffers only a collection frees; see `collectGarbage`),
 * then, {@linkcode TRIM_AFTER_GC_MS} later, glibc's `malloc_trim`.
 */
export class TrimScheduler {
  #timer?: ReturnType<typeof setTimeout>;
  #last = -Infinity;

  /** Asks for a trim (one is pending at most). */
  schedule(): void {
    if (this.#timer !== undefined) return;
    const wait = Math.max(1000, this.#last + 10_000 - performance.now());
    const first = setTimeout(() => {
      this.#last = performance.now();
      void collectGarbage().then(() => {
        if (this.#timer !== first) return; // stopped meanwhile
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          mallocTrim();
        }, TRIM_AFTER_GC_MS);
        Deno.unrefTimer(this.#timer);
      });
    }, wait);
    this.#timer = first;
    Deno.unrefTimer(first);
  }

  /** Cancels a pending trim. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
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
  /** The watch under way: when it began, and the connections it watches. */
  let watching: { at: number; watched: Watched[] } | undefined;
  /** Ends the watch under way; its results go to the guard unless `report` is false. */
  const endWatches = (report: boolean) => {
    const ending = watching?.watched ?? [];
    watching = undefined;
    for (const { id, seen, cookie, start } of ending) {
      if (cookies.get(id) !== cookie || connectionCookie(id) !== cookie) continue; // gone since
      const reading = endWatch(id, start);
      if (!report) continue;
      log.debug("Watched subscriber connection {id}: {result}", {
        id,
        result: reading === undefined ? "unknown" : reading ? "reading" : "took nothing",
      });
      if (reading) guard.reading(id);
      else if (reading === false) guard.unread(id, seen);
    }
  };
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
    // A watch lasts from one look to the first look WATCH_MS or more after it, and ends before
    // that look: a connection that took nothing is cut as soon as enough watches in a row saw
    // it, and the next watch begins at once (while it grows by what is published meanwhile).
    if (watching && performance.now() - watching.at >= WATCH_MS) endWatches(true);
    const { cut, watch } = guard.sample(connectionStates);
    for (const { id, behind } of cut) {
      const cookie = cookies.get(id);
      cookies.delete(id);
      // The descriptor may have been closed and reused since the monitor reported it.
      if (connectionCookie(id) !== cookie || !shutdownConnection(id)) continue;
      stats.subscribersCut++;
      trim.schedule();
      log.warn(
        "Disconnected a subscriber that reads nothing: {behind} bytes published since it last read " +
          "(subscriber_buffer {budget}); it will connect again and miss what was published meanwhile",
        { behind, budget: guard.budget },
      );
    }
    stats.subscribers = guard.size;
    if (watching || !watch.length) return;
    // Is a full connection whose figure did not fall reading all the same? (subscriber_guard.ts)
    const watched = watch.flatMap((w) => {
      const cookie = cookies.get(w.id);
      if (connectionCookie(w.id) !== cookie) return [];
      const start = beginWatch(w.id);
      return start ? [{ ...w, cookie, start }] : [];
    });
    if (watched.length) watching = { at: performance.now(), watched };
  }, GUARD_INTERVAL_MS);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    endWatches(false); // give watched Unix sockets their send buffers back
  };
}

/** A connection under watch. */
interface Watched {
  readonly id: number;
  readonly seen: number;
  readonly cookie: bigint | undefined;
  readonly start: WatchStart;
}

/** What a watched connection showed when its watch began. */
type WatchStart = { readonly acked: bigint } | { readonly queued: number; readonly sendBuffer: number };

/**
 * Begins watching connection `fd` for a reader that takes bytes. A tcp connection reports what its
 * peer acknowledged, a count that only grows. A Unix socket has no such count, and its queued
 * bytes may show the same figure after its reader took a publication (libzmq writes the next at
 * once, and the kernel counts it the same): so for the watch its send buffer is set to the
 * kernel's least (4,608 bytes). libzmq can then queue no more than about that much, so a reader
 * that takes what was queued leaves a figure that cannot be the one before; a reader that takes
 * nothing leaves it as it was. `undefined` if the calls fail.
 */
export function beginWatch(fd: number): WatchStart | undefined {
  const acked = tcpBytesAcked(fd);
  if (acked !== undefined) return { acked };
  const queued = queuedBytes(fd);
  const buffer = sendBuffer(fd);
  if (queued === undefined || buffer === undefined || !setSendBuffer(fd, 0)) return undefined;
  return { queued, sendBuffer: buffer };
}

/**
 * Ends a watch begun with {@linkcode beginWatch} (giving a Unix socket its send buffer back):
 * whether the reader took bytes meanwhile; `undefined` if that cannot be told.
 */
export function endWatch(fd: number, start: WatchStart): boolean | undefined {
  if ("acked" in start) {
    const acked = tcpBytesAcked(fd);
    return acked === undefined ? undefined : acked > start.acked;
  }
  const queued = queuedBytes(fd);
  setSendBuffer(fd, start.sendBuffer);
  return queued === undefined ? undefined : queued !== start.queued;
}
