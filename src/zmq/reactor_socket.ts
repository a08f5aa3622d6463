/**
 * A socket run by a `Reactor` (see `reactor.ts`): every operation goes through the
 * reactor, which runs it at once when it is not polling and otherwise queues it and wakes the
 * poll; sends that libzmq cannot take now wait in order for room (POLLOUT); received messages go
 * to a callback or an async iterable.
 *
 * @module
 */

import { POLLIN, POLLOUT, type SocketTypeName } from "./ffi.ts";
import type { Socket } from "./socket.ts";

/** What a {@linkcode ReactorSocket} needs of its reactor. */
export interface SocketHost {
  /** True while the off-thread poll runs (sockets must not be touched then, sends aside: see `sendsWait`). */
  readonly polling: boolean;
  /** True while a send must wait for the reactor's turn (an off-thread `zmq_poll` runs). */
  readonly sendsWait: boolean;
  /** A socket sent during an off-thread wait on the descriptors: wake the wait if it must receive. */
  sentDuringWait(s: ReactorSocket): void;
  /** Runs `fn` on the reactor's turn. */
  exec<T>(fn: () => T): Promise<T>;
  /** Wakes the poll so queued work runs. */
  wake(): void;
  /** Wakes the poll for a queued send (perhaps a little later, with others). */
  wakeForSend(): void;
  /** The socket closed: stop polling it. */
  forget(s: ReactorSocket): void;
}

interface PendingSend {
  readonly frames: readonly Uint8Array[];
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

const RESOLVED = Promise.resolve();

/** A socket run by a `Reactor`. Every method is safe to call at any time. */
export class ReactorSocket {
  readonly #reactor: SocketHost;
  /** @internal The underlying socket; only the reactor may use it. */
  readonly raw: Socket;
  readonly #sends: PendingSend[] = [];
  #onMessage?: (frames: Uint8Array[]) => void;
  #queue?: Uint8Array[][];
  #waiter?: (r: IteratorResult<Uint8Array[]>) => void;
  #queueLimit = 1000;
  #paused = false;
  #closed = false;
  /** The socket type. */
  readonly type: SocketTypeName;

  /** @internal Use `Reactor.socket`. */
  constructor(reactor: SocketHost, raw: Socket) {
    this.#reactor = reactor;
    this.raw = raw;
    this.type = raw.type;
  }

  /** Messages dropped because a frame exceeded the receive buffer. */
  get oversizeDrops(): number {
    return this.raw.oversizeDrops;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** @internal */
  get wantsInput(): boolean {
    return !this.#closed && !this.#paused && (this.#onMessage !== undefined || this.#queue !== undefined);
  }

  /** @internal */
  get pollEvents(): number {
    if (this.#closed) return 0;
    return (this.wantsInput ? POLLIN : 0) | (this.#sends.length ? POLLOUT : 0);
  }

  /** Binds (`ipc://` paths over 107 bytes are refused with a clear error). */
  bind(endpoint: string): Promise<void> {
    return this.#reactor.exec(() => this.raw.bind(endpoint));
  }

  /** Connects. */
  connect(endpoint: string): Promise<void> {
    return this.#reactor.exec(() => this.raw.connect(endpoint));
  }

  /** Unbinds. */
  unbind(endpoint: string): Promise<void> {
    return this.#reactor.exec(() => this.raw.unbind(endpoint));
  }

  /** Disconnects. */
  disconnect(endpoint: string): Promise<void> {
    return this.#reactor.exec(() => this.raw.disconnect(endpoint));
  }

  /** Subscribes (SUB sockets). */
  subscribe(prefix: string | Uint8Array): Promise<void> {
    return this.#reactor.exec(() => this.raw.subscribe(prefix));
  }

  /** Unsubscribes (SUB sockets). */
  unsubscribe(prefix: string | Uint8Array): Promise<void> {
    return this.#reactor.exec(() => this.raw.unsubscribe(prefix));
  }

  /** The bound endpoint with its port or path filled in. */
  lastEndpoint(): Promise<string> {
    return this.#reactor.exec(() => this.raw.lastEndpoint);
  }

  /**
   * Sends without waiting when possible; returns `false` if the message could not be handed
   * to libzmq right now (an off-thread `zmq_poll` running, earlier sends queued, or high-water
   * mark reached). Nothing is sent on `false`; use {@linkcode ReactorSocket.send} to wait.
   *
   * While the reactor waits off-thread on the sockets' descriptors, a send goes to libzmq at
   * once from this thread: that wait is a `poll(2)` on descriptors and touches no libzmq socket,
   * so the two cannot race, and the send costs no wake-up of the waiting thread (two thread
   * hops, ~0.1-0.2 ms each on these guests).
   */
  sendNow(frames: readonly Uint8Array[]): boolean {
    if (this.#closed) throw new Error(`${this.type} socket is closed`);
    const host = this.#reactor;
    if (host.sendsWait || this.#sends.length) return false;
    try {
      return this.raw.trySend(frames);
    } finally {
      // Also after a send that failed (EHOSTUNREACH, say): it may have taken in libzmq's commands too.
      if (host.polling) host.sentDuringWait(this);
    }
  }

  /**
   * Sends a multipart message. Resolves once libzmq has taken it; while the high-water mark
   * is reached it waits for room (POLLOUT) instead of queueing without bound in JavaScript.
   */
  send(frames: readonly Uint8Array[]): Promise<void> {
    try {
      if (this.sendNow(frames)) return RESOLVED;
    } catch (e) {
      return Promise.reject(e); // a send that fails at once (EHOSTUNREACH, closed) rejects like a later one
    }
    return new Promise<void>((resolve, reject) => {
      this.#sends.push({ frames, resolve, reject });
      this.#reactor.wakeForSend();
    });
  }

  /** @internal Sends what was queued, in order, until the socket is full. */
  flushSends(): number {
    let n = 0;
    while (this.#sends.length) {
      const p = this.#sends[0];
      try {
        if (!this.raw.trySend(p.frames)) break;
        p.resolve();
      } catch (e) {
        p.reject(e);
      }
      this.#sends.shift();
      n++;
    }
    return n;
  }

  /** @internal Receives up to `max` messages and hands them to the consumer. */
  receiveUpTo(max: number): number {
    let n = 0;
    while (n < max && this.wantsInput) {
      const frames = this.raw.tryReceive();
      if (!frames) break;
      n++;
      if (this.#onMessage) this.#onMessage(frames);
      else this.#push(frames);
    }
    return n;
  }

  #push(frames: Uint8Array[]): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w({ value: frames, done: false });
      return;
    }
    this.#queue!.push(frames);
    if (this.#queue!.length >= this.#queueLimit) this.#paused = true;
  }

  /**
   * Delivers every message to `callback`, synchronously, on the reactor's turn. The
   * fastest way to consume; a callback that throws is reported to `onError`.
   */
  onMessage(callback: (frames: Uint8Array[]) => void): void {
    if (this.#queue) throw new Error("socket is already consumed by an iterator");
    this.#onMessage = callback;
    this.#reactor.wake();
  }

  /** Stops receiving (messages wait in libzmq, pushing back on senders at the high-water mark). */
  pause(): void {
    this.#paused = true;
  }

  /** Resumes receiving. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#reactor.wake();
  }

  /**
   * Receives as an async iterable; iteration ends when the socket or reactor closes.
   * At most `queueLimit` messages are buffered before receiving pauses.
   */
  messages(queueLimit = 1000): AsyncIterableIterator<Uint8Array[]> {
    if (this.#onMessage) throw new Error("socket is already consumed by a callback");
    this.#queue ??= [];
    this.#queueLimit = queueLimit;
    this.#reactor.wake();
    const it: AsyncIterableIterator<Uint8Array[]> = {
      [Symbol.asyncIterator]: () => it,
      next: (): Promise<IteratorResult<Uint8Array[]>> => {
        const q = this.#queue!;
        if (q.length) {
          const value = q.shift()!;
          if (this.#paused && q.length < this.#queueLimit / 2 && !this.#closed) this.resume();
          return Promise.resolve({ value, done: false });
        }
        if (this.#closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => (this.#waiter = r));
      },
      return: (): Promise<IteratorResult<Uint8Array[]>> => {
        this.#queue = undefined;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
    return it;
  }

  /** Receives one message (for simple request/reply code and tests). */
  async receive(): Promise<Uint8Array[]> {
    const r = await this.messages().next();
    if (r.done) throw new Error(`${this.type} socket closed while receiving`);
    return r.value;
  }

  /** @internal Closes on the reactor's turn. */
  closeNow(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.raw.close();
    this.#reactor.forget(this);
    for (const p of this.#sends.splice(0)) p.reject(new Error(`${this.type} socket closed before sending`));
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w({ value: undefined, done: true });
    }
  }

  /** Closes the socket; a pending receive ends, pending sends are rejected. Safe twice. */
  close(): Promise<void> {
    if (this.#closed) return RESOLVED;
    return this.#reactor.exec(() => this.closeNow());
  }
}
