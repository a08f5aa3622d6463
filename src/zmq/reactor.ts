/**
 * A reactor per process: every socket of a role waited on together by one `zmq_poll`, either
 * off-thread (woken early through an inproc signal socket when JavaScript wants to send,
 * change a socket, or stop) or, for the roles while messages keep coming, in-thread (see
 * {@linkcode ReactorOptions.syncWaitMs}). Between polls, ready sockets are drained synchronously in
 * batches, which is where the speed comes from: a thread hop per message manages ~15k/s,
 * a synchronous `zmq_recv` over a million.
 *
 * Thread safety: while the poll runs off-thread, no code touches the polled sockets. Every
 * socket operation goes through the reactor, which runs it at once when it is not polling
 * and otherwise queues it and wakes the poll. Sends are the exception when the reactor waits
 * on the sockets' descriptors (`poll(2)`, the default): that wait touches no libzmq socket, so
 * a send goes to libzmq at once (see `ReactorSocket.sendNow`).
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { i64, libzmq, POLLIN, POLLOUT } from "./ffi.ts";
import { fdPoll, POLLFD_SIZE } from "./fd_poll.ts";
import { Context, type Socket, type SocketOptions } from "./socket.ts";
import type { SocketTypeName } from "./ffi.ts";
import { ReactorSocket, type SocketHost } from "./reactor_socket.ts";

export { ReactorSocket } from "./reactor_socket.ts";

/** Options of a {@linkcode Reactor}. */
export interface ReactorOptions {
  /** Most messages drained from one socket per pass, for fairness. @default {256} */
  readonly batch?: number;
  /**
   * Longest time, in milliseconds, the reactor keeps draining without letting the event
   * loop run timers and I/O. @default {4}
   */
  readonly yieldMs?: number;
  /**
   * When a pass finds nothing to do, wait up to this long in a synchronous (in-thread)
   * `zmq_poll`, then let the event loop run a turn, and wait again. Waking an off-thread poll
   * costs ~0.2 ms per message; an in-thread wait wakes in microseconds and uses no CPU, but
   * holds other JavaScript (timers, I/O callbacks, promise continuations) for at most this
   * long, so it suits processes whose work is done in `onMessage` callbacks (the roles). After
   * 1 s without a message the reactor waits off-thread until one comes, and it waits off-thread
   * whenever another reactor runs on the same thread (whose messages the wait would hold up). 0
   * disables it; {@linkcode Reactor.holdSyncWait} cuts it to 1 ms while async work is pending.
   * @default {0}
   */
  readonly syncWaitMs?: number;
  /**
   * While messages keep coming (one arrived in the last this many milliseconds), work queued
   * with {@linkcode Reactor.execSend} during the off-thread wait does not wake it: it runs with
   * the pass that the next message starts, at most this long later, together with what was
   * queued meanwhile (the client gathers its requests into one batch that way). Under
   * `zmq_poll` (`ZMANAGER_ZMQ_POLL=1`) this holds every send made during the wait; a wait on
   * the descriptors lets plain sends go at once, which wakes nothing. Each wake-up costs a
   * thread hop each way; a process that sends one message per event-loop turn (the HTTP
   * gateway: one request per turn) would pay one per message. 0 wakes the wait at once.
   * @default {0}
   */
  readonly coalesceSendsMs?: number;
  /** Called when a message callback throws; by default the error is logged to stderr. */
  readonly onError?: (error: unknown) => void;
  /** Context options, when the reactor creates its own context. */
  readonly ioThreads?: number;
}

type Op = () => void;

/**
 * The in-thread wait of the roles' reactors: their work happens in message callbacks and their
 * timers (heartbeats, stats, expiry) are coarse, so a timer may run up to this late.
 */
export const ROLE_SYNC_WAIT_MS = 10;

/**
 * Microtask turns the reactor yields before it waits: enough for an async function that awaits
 * an already settled promise to finish and for a send it defers to a microtask to leave.
 */
const IDLE_TICKS = 4;

/**
 * A reactor with in-thread waits that received no message for this long waits on another
 * thread instead: an idle role then sleeps until a message or a timer, instead of waking every
 * `syncWaitMs` (an idle deployment of four roles: 420 context switches a second before, ~130
 * after; the Subject, which hears the workers' heartbeats, stays in-thread). A role that gets a
 * message at least this often keeps its fast wake-ups: with 100 ms, a request every 300 ms took
 * 2.8 ms at p50 and 6 ms at p90 through the five hops, against 1.7 and 2.0 ms.
 */
const IDLE_HANDOFF_MS = 1000;

/**
 * Longest wait on the reactor's thread for events a hold is for (see
 * {@linkcode Reactor.waitForEventsWith}); messages that come meanwhile wait at most this long.
 */
const EVENT_WAIT_MS = 0.5;

/** One turn of the event loop: timers, I/O callbacks and promise chains run, in microseconds. */
function eventLoopTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

let reactorCount = 0;

/**
 * The reactors whose loop runs on this thread (module state is per isolate: a Web Worker has its
 * own). A reactor blocks the thread in a wait only while it is the only one: during such a wait
 * another reactor's messages, its completed off-thread wait and every timer wait for the wait's
 * end (a request through a Subject, an IM and a worker in one process took 22.6 ms at p50 with
 * the client on a reactor of its own, against 1.2 ms with one shared; docs/performance.md, round
 * 15). Two or more wait off-thread, each woken through the event loop.
 */
const running = new Set<Reactor>();

/** Runs sockets on one off-thread poll. Create sockets with {@linkcode Reactor.socket}. */
export class Reactor implements SocketHost {
  /** The context all of this reactor's sockets belong to. */
  readonly context: Context;
  readonly #sockets = new Set<ReactorSocket>();
  readonly #ops: Op[] = [];
  readonly #batch: number;
  readonly #yieldMs: number;
  readonly #syncWaitMs: number;
  readonly #coalesceSendsMs: number;
  /** When the last message arrived (ms). */
  #lastMessage = performance.now();
  /** Wakes the poll for sends that were left to coalesce. */
  #sendTimer?: ReturnType<typeof setTimeout>;
  readonly #onError: (error: unknown) => void;
  readonly #signalIn: Socket;
  readonly #signalOut: Socket;
  #polling = false;
  #holds = 0;
  #eventHolds = 0;
  #eventWait?: (ms: number) => boolean;
  #signalled = false;
  #closing = false;
  #loop?: Promise<void>;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();
  #items = new Uint8Array(0);
  readonly #afterReceive: (() => void)[] = [];
  readonly #onIdle: (() => void)[] = [];
  /** Messages delivered by the current pass. */
  #delivered = 0;
  /** When the current pass began (ms), while one runs. */
  #passAt: number | undefined;
  #view = new DataView(new ArrayBuffer(0));
  /** `poll(2)`, when the reactor waits on the sockets' descriptors (else `zmq_poll`). */
  readonly #fdPoll = fdPoll();
  #fds = new Uint8Array(0);
  #fdView = new DataView(new ArrayBuffer(0));
  /** The sockets of the `#fds` entries, in order; `null` for the wake-up socket. */
  readonly #fdSockets: (ReactorSocket | null)[] = [];

  /** Creates a reactor with its own context. */
  constructor(options: ReactorOptions = {}) {
    this.context = new Context({ ioThreads: options.ioThreads ?? 1 });
    this.#batch = options.batch ?? 256;
    this.#yieldMs = options.yieldMs ?? 4;
    this.#syncWaitMs = options.syncWaitMs ?? 0;
    this.#coalesceSendsMs = options.coalesceSendsMs ?? 0;
    this.#onError = options.onError ?? ((e) => console.error("reactor: message callback failed:", e));
    const ep = `inproc://zmanager-reactor-${Deno.pid}-${++reactorCount}`;
    this.#signalIn = this.context.socket("PAIR", { linger: 0 });
    this.#signalIn.bind(ep);
    this.#signalOut = this.context.socket("PAIR", { linger: 0, sendHighWaterMark: 4 });
    this.#signalOut.connect(ep);
  }

  /**
   * Cuts the in-thread wait to 1 ms until the returned function is called, and lets a whole
   * event-loop turn run before each wait (so promise chains finish and completed I/O is seen):
   * for async work (a handler awaiting I/O or a timer) that must not be held up by a blocked
   * thread.
   */
  holdSyncWait(): () => void {
    this.#holds++;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.#holds--;
      }
    };
  }

  /**
   * Waits off-thread until the returned function is called: for work whose results come as
   * messages to this thread's event loop (a Web Worker's `postMessage`), which an in-thread
   * wait would hold up. When the last such hold ends, a wait already under way off-thread is
   * woken, so the reactor goes back to in-thread waits (a message that comes next is then
   * picked up without a thread hop).
   */
  holdForEvents(): () => void {
    this.#eventHolds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.#eventHolds === 0 && this.#syncWaitMs > 0) this.wake();
    };
  }

  /**
   * Sets how to wait on this thread for the work {@linkcode Reactor.holdForEvents} holds for,
   * where it can be waited for without the event loop (results in shared memory): while such a
   * hold is on and nothing else is to do, the reactor calls `wait(ms)` before it waits
   * off-thread, and goes round again at once when it returns `true` (it handled something). A
   * thread hop and an event-loop turn each way are what the off-thread wait costs per wake-up.
   */
  waitForEventsWith(wait: (ms: number) => boolean): void {
    this.#eventWait = wait;
  }

  /**
   * Calls `fn` after every pass that delivered messages, before the reactor polls again:
   * where a consumer sends what those messages produced (a batch), while sends go straight
   * to libzmq. A microtask would run only once the reactor awaits, which may be its
   * off-thread poll, and a send then costs a wake-up of that poll.
   */
  afterReceive(fn: () => void): void {
    this.#afterReceive.push(fn);
  }

  /**
   * Calls `fn` whenever a pass found nothing to do, before the reactor waits: where a consumer
   * sends what it held back while busy (acknowledgements, say).
   */
  onIdle(fn: () => void): void {
    this.#onIdle.push(fn);
  }

  /**
   * The clock for what is counted per message (`performance.now()`, ms): while the reactor's
   * pass runs (its receive callbacks and `afterReceive` hooks), the time that pass began, read
   * once for all its messages; otherwise the time now. It is earlier than the moment a message
   * is handled by at most one pass (up to `batch` messages per socket); a reading per message
   * cost a Subject at peak about 3% of its thread (docs/performance.md, round 12).
   */
  now(): number {
    return this.#passAt ?? performance.now();
  }

  /** True while the off-thread poll runs (sockets must not be touched then, sends aside: see `sendsWait`). */
  get polling(): boolean {
    return this.#polling;
  }

  /**
   * True while a send must wait for the reactor's turn: an off-thread `zmq_poll`, which works
   * on the sockets themselves. An off-thread wait on their descriptors (`poll(2)`) does not, so
   * sends go to libzmq at once meanwhile (see `ReactorSocket.sendNow`).
   */
  get sendsWait(): boolean {
    return this.#polling && !this.#fdPoll;
  }

  /**
   * @internal A send during an off-thread wait on the descriptors may have taken in libzmq's
   * "a pipe became readable" command, after which a message can wait with the descriptor quiet
   * (see `Socket.maybeInput`): ask the socket, and wake the wait if it has input.
   */
  sentDuringWait(s: ReactorSocket): void {
    if (!s.wantsInput || !s.raw.maybeInput || this.#signalled) return;
    if (s.raw.events() & POLLIN) this.wake();
  }

  /** Creates a socket run by this reactor. */
  socket(type: SocketTypeName, options: SocketOptions = {}): ReactorSocket {
    if (this.#closing) throw new Error("Reactor is closed");
    const raw = this.context.socket(type, options);
    const s = new ReactorSocket(this, raw);
    this.#sockets.add(s);
    this.#start();
    return s;
  }

  /** Runs `fn` on the reactor's turn: at once when not polling, else after waking the poll. */
  exec<T>(fn: () => T): Promise<T> {
    if (!this.#polling) {
      try {
        return Promise.resolve(fn());
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.#ops.push(() => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      });
      this.wake();
    });
  }

  /**
   * Runs `fn`, which sends, on the reactor's turn: at once when not polling; else at the start
   * of the next pass, the poll woken as for a queued send (see
   * {@linkcode ReactorOptions.coalesceSendsMs}). What a sender gathers until then leaves together.
   */
  execSend(fn: () => void): void {
    if (!this.#polling) return fn();
    this.#ops.push(() => {
      try {
        fn();
      } catch (e) {
        this.#onError(e);
      }
    });
    this.wakeForSend();
  }

  /** @internal Wakes the poll so queued work runs. */
  wake(): void {
    if (this.#polling && !this.#signalled) {
      this.#signalled = true;
      this.#signalOut.trySend([new Uint8Array(0)]);
    }
  }

  /** @internal Wakes the poll for a queued send, or leaves it to coalesce (see `coalesceSendsMs`). */
  wakeForSend(): void {
    if (!this.#polling || this.#signalled || this.#sendTimer !== undefined) return;
    const ms = this.#coalesceSendsMs;
    if (ms > 0 && performance.now() - this.#lastMessage < ms) {
      this.#sendTimer = setTimeout(() => {
        this.#sendTimer = undefined;
        this.wake();
      }, ms);
    } else this.wake();
  }

  /** @internal */
  forget(s: ReactorSocket): void {
    this.#sockets.delete(s);
  }

  #start(): void {
    if (this.#loop) return;
    running.add(this);
    this.#loop = this.#run().catch((e) => this.#onError(e)).finally(() => running.delete(this));
  }

  /** True while this is the only reactor running on this thread (see `running`). */
  get #alone(): boolean {
    return running.size === 1;
  }

  async #run(): Promise<void> {
    const z = libzmq().symbols;
    let lastYield = performance.now();
    for (;;) {
      this.#delivered = 0;
      this.#passAt = performance.now();
      let work: number;
      try {
        work = this.#turn(true);
        if (this.#closing) break;
        if (this.#delivered > 0) this.#callAll(this.#afterReceive);
        // Sends queued by the callbacks of that turn. Not another receive pass: each socket's
        // receive pass ends with a zmq_recv that finds nothing, which costs libzmq a system call.
        work += this.#turn(false);
      } finally {
        this.#passAt = undefined; // (an onError that throws must not leave the clock stopped)
      }
      const now = performance.now();
      if (this.#delivered > 0) this.#lastMessage = now;
      if (work > 0 && now - lastYield < this.#yieldMs) {
        await null; // let promise continuations (awaiting consumers) run, then drain again
        continue;
      }
      if (work === 0) {
        // Before the thread may block in an in-thread wait: let the promise chains the last
        // pass set off run first (a consumer awaiting a message, a send deferred to a
        // microtask), or what they send would wait for the end of that wait.
        // While async work is pending (holdSyncWait), yield a whole event-loop turn instead: its
        // promise chains may be longer than a few turns (an async handler per step), and I/O that
        // has completed runs too.
        if (this.#holds > 0) await eventLoopTurn();
        else for (let i = 0; i < IDLE_TICKS; i++) await null;
        if (this.#closing) break;
        this.#callAll(this.#onIdle);
      }
      if (work === 0 && this.#ops.length === 0) {
        const inThread = this.#syncWaitMs > 0 && this.#eventHolds === 0 && this.#alone &&
          (this.#holds > 0 || now - this.#lastMessage < IDLE_HANDOFF_MS);
        const fp = this.#fdPoll;
        if (inThread) {
          // Nothing to do: wait in-thread (JavaScript cannot run meanwhile, so nothing can race
          // with this poll). A message arriving now is picked up in microseconds; if none comes,
          // let the event loop run a turn below (timers, I/O callbacks), then wait again.
          // While async work is pending (holdSyncWait) the wait is cut to 1 ms, so its timers and
          // I/O run at most that late.
          const wait = this.#holds > 0 ? Math.min(1, this.#syncWaitMs) : this.#syncWaitMs;
          if (fp) {
            const n = this.#prepareFds(false);
            if (n < 0 || this.#fired(n, fp.poll(this.#fds, BigInt(n), wait))) continue;
          } else {
            const n = this.#buildPollItems(false);
            if (z.zmq_poll(this.#items, n, i64(wait)) > 0) {
              this.#anyInput();
              continue;
            }
          }
        } else {
          // Held for events that can be waited for here (a sandbox's results): a short wait on
          // this thread first.
          if (this.#eventHolds > 0 && this.#alone && this.#waitForEvents()) {
            // Messages that came meanwhile: the sockets are looked at again (a poll that does not
            // wait), as the wait on them would have.
            if (fp) {
              const n = this.#prepareFds(false);
              if (n > 0) this.#fired(n, fp.poll(this.#fds, BigInt(n), 0));
            } else this.#anyInput();
            // Results that keep coming this way must not hold timers and I/O back for long.
            if (performance.now() - lastYield >= this.#yieldMs) {
              await eventLoopTurn();
              lastYield = performance.now();
            }
            continue;
          }
          // No in-thread waits, or none for a while: wait on another thread with no timeout, so
          // the event loop runs timers as they fall due, and this thread sleeps until a message
          // or an operation (wake()) comes.
          if (fp) {
            const n = this.#prepareFds(true);
            if (n < 0) continue;
            this.#polling = true;
            this.#fired(n, await fp.poll_async(this.#fds, BigInt(n), -1));
          } else {
            const n = this.#buildPollItems(true);
            this.#polling = true;
            await z.zmq_poll_async(this.#items, n, i64(-1));
            this.#anyInput();
          }
          this.#polling = false;
          lastYield = performance.now();
          if (this.#sendTimer !== undefined) {
            clearTimeout(this.#sendTimer);
            this.#sendTimer = undefined;
          }
          if (this.#signalled) {
            while (this.#signalIn.tryReceive()) { /* drain wake-ups */ }
            this.#signalled = false;
          }
          continue;
        }
      }
      // Busy for yieldMs, or an in-thread wait that found nothing: one event-loop turn, so
      // timers, I/O callbacks and promise chains run. A zero-timeout off-thread poll did this
      // before, at the price of two thread hops: an idle role woke three threads every 10 ms,
      // and on a loaded 2-core machine the hop alone took 4-15 ms now and then (measured).
      await eventLoopTurn();
      lastYield = performance.now();
    }
    for (const s of [...this.#sockets]) s.closeNow();
    this.#signalOut.close();
    this.#signalIn.close();
  }

  /** Calls the `waitForEventsWith` hook; one that throws is reported and counts as nothing found. */
  #waitForEvents(): boolean {
    try {
      return this.#eventWait?.(EVENT_WAIT_MS) ?? false;
    } catch (e) {
      this.#onError(e);
      return false;
    }
  }

  #callAll(hooks: readonly (() => void)[]): void {
    for (const fn of hooks) {
      try {
        fn();
      } catch (e) {
        this.#onError(e);
      }
    }
  }

  /** One pass: queued operations, pending sends, then (if asked) receives. Returns the work done. */
  #turn(receive: boolean): number {
    let work = 0;
    while (this.#ops.length) {
      this.#ops.shift()!();
      work++;
    }
    for (const s of this.#sockets) work += s.flushSends();
    if (!receive) return work;
    for (const s of this.#sockets) {
      // A socket drained since anything else touched it, whose descriptor has not fired since:
      // nothing to read, and a zmq_recv would cost libzmq two system calls to say so.
      if (!s.wantsInput || !s.raw.maybeInput) continue;
      try {
        const n = s.receiveUpTo(this.#batch);
        this.#delivered += n;
        work += n;
      } catch (e) {
        this.#onError(e);
      }
    }
    return work;
  }

  /**
   * Before a wait on the sockets' descriptors: a socket whose descriptor may not tell (see
   * `Socket.maybeInput`) or that waits for room to send is asked what it can do now. Returns -1
   * when one can act (do not wait), else how many descriptors `#fds` holds (with `signal`, the
   * wake-up socket's first).
   */
  #prepareFds(signal: boolean): number {
    const list = this.#fdSockets;
    list.length = 0;
    if (signal) {
      // Wake-ups are drained after each off-thread wait; this only settles its commands.
      if (this.#signalIn.maybeInput) { while (this.#signalIn.tryReceive()) { /* a stale wake-up */ } }
      list.push(null);
    }
    for (const s of this.#sockets) {
      const want = s.pollEvents;
      if (!want) continue;
      if ((s.raw.maybeInput || want & POLLOUT) && s.raw.events() & want) return -1;
      list.push(s);
    }
    const size = POLLFD_SIZE * list.length;
    if (this.#fds.length < size) {
      this.#fds = new Uint8Array(size * 2);
      this.#fdView = new DataView(this.#fds.buffer);
    }
    const view = this.#fdView;
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      view.setInt32(i * POLLFD_SIZE, s ? s.raw.fd : this.#signalIn.fd, true);
      view.setInt16(i * POLLFD_SIZE + 4, POLLIN, true); // libzmq signals any change as readable
      view.setInt16(i * POLLFD_SIZE + 6, 0, true);
    }
    return list.length;
  }

  /** After `poll(2)` returned `rc` over `n` descriptors: marks the sockets that fired; true if any did. */
  #fired(n: number, rc: number): boolean {
    if (rc <= 0) return false;
    for (let i = 0; i < n; i++) {
      if (this.#fdView.getInt16(i * POLLFD_SIZE + 6, true) !== 0) {
        const s = this.#fdSockets[i];
        (s ? s.raw : this.#signalIn).maybeInput = true;
      }
    }
    return true;
  }

  /** After a `zmq_poll` (which reads no descriptor state into the sockets): receive from all again. */
  #anyInput(): void {
    for (const s of this.#sockets) s.raw.maybeInput = true;
  }

  /**
   * Fills the poll items; with `signal`, the wake-up socket first. An in-thread wait leaves it
   * out: no JavaScript runs meanwhile, so nothing can signal, and libzmq would check it twice
   * per wait (`ZMQ_EVENTS`: a `getpid` and a `poll` system call each).
   */
  #buildPollItems(signal: boolean): number {
    const list: (ReactorSocket | null)[] = signal ? [null] : [];
    for (const s of this.#sockets) if (s.pollEvents) list.push(s);
    const size = 16 * list.length;
    if (this.#items.length < size) {
      this.#items = new Uint8Array(size * 2);
      this.#view = new DataView(this.#items.buffer);
    }
    const view = this.#view;
    list.forEach((s, i) => {
      const ptr = s ? s.raw.pointer : this.#signalIn.pointer;
      view.setBigUint64(i * 16, BigInt(Deno.UnsafePointer.value(ptr)), true);
      view.setInt32(i * 16 + 8, 0, true);
      view.setInt16(i * 16 + 12, s ? s.pollEvents : POLLIN, true);
      view.setInt16(i * 16 + 14, 0, true);
    });
    return list.length;
  }

  /**
   * Stops the loop, closes every socket and terminates the context. Pending receives end;
   * pending sends are rejected. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      this.wake();
      if (this.#loop) await this.#loop;
      else {
        for (const s of [...this.#sockets]) s.closeNow();
        this.#signalOut.close();
        this.#signalIn.close();
      }
      await this.context.terminate();
    })().finally(() => this.#done.resolve());
    return this.#closed;
  }

  /**
   * Finishes accepted work, then closes: a reactor holds none of its own (pending sends leave
   * during each socket's linger), so this is {@linkcode Reactor.close}.
   */
  drain(): Promise<void> {
    return this.close();
  }

  /** Resolves once closed. */
  closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Same as {@linkcode Reactor.drain}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.drain();
  }
}
