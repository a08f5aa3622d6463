/**
 * The Integration Manager: pulls results and publishes every message unchanged, on its
 * topic (its first frame). No business logic; payloads are never decoded.
 *
 * @module
 */

import { connectionCallsAvailable } from "./_libc.ts";
import { publicationBytes, SubscriberGuard } from "./subscriber_guard.ts";
import { TrimScheduler, watchSubscribers } from "./subscriber_watch.ts";
import { CONTROL_FRAMES, isControl } from "../wire/control.ts";
import { BatchView, internalFrameLimit, isBatch } from "../wire/batch.ts";
import { queueHwm, subscriberHwm } from "./byte_budget.ts";
import { DEFAULT_SUBSCRIBER_BUFFER } from "../config.ts";
import { logger } from "../log.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, routingKey, text, utf8 } from "../wire/protocol.ts";
import { Opt } from "../zmq/ffi.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";
import { bindSecure, type Security } from "./security.ts";

/** Options of {@linkcode IntegrationManager.start}. */
export interface IntegrationManagerOptions {
  /** CURVE keys and allowlists for tcp endpoints (`security.ts`); none: plaintext. */
  readonly security?: Security;
  /** Endpoint to bind for results (only the Subject pushes here). */
  readonly pullAddress: string;
  /** Endpoint to bind for publications. */
  readonly pubAddress: string;
  /**
   * Largest accepted frame of a three-frame message in bytes; larger messages are dropped and
   * counted (`oversize`). A batch from the Subject may be larger by the batch headroom (see
   * {@linkcode internalFrameLimit}).
   */
  readonly maxMessageSize?: number;
  /**
   * Bytes the IM may publish while a subscriber reads nothing: past it the IM disconnects it
   * (see {@linkcode IntegrationManagerStats.subscribersCut}). Its queue also holds at most this
   * / 4 KiB publications; past that it loses publications
   * ({@linkcode IntegrationManagerStats.subscriberFull}).
   * @default {DEFAULT_SUBSCRIBER_BUFFER}
   */
  readonly subscriberBuffer?: number;
  /** A reactor to share (for inproc deployments); by default the IM makes its own. */
  readonly reactor?: Reactor;
  /**
   * An `inproc://` endpoint the pull socket binds too, besides `pullAddress`: the link of a
   * Subject that shares this IM's process and reactor (`integration_manager_in_subject`).
   */
  readonly localPullAddress?: string;
  /** Milliseconds between binding the publish endpoint and the pull endpoint. @default {IM_WARMUP_MS} */
  readonly warmupMs?: number;
}

/**
 * Milliseconds a starting IM waits between binding its publish endpoint and its pull endpoint:
 * subscribers reconnect (every 100 ms) and subscribe again meanwhile, so a restarted IM does not
 * publish to nobody (a PUB drops what it sends before a subscription arrives). Every start of
 * the IM, the first included, is this much slower to be ready.
 */
export const IM_WARMUP_MS = 400;

/** Sequence numbers of batches an IM remembers having published (the last this many). */
export const SEQ_WINDOW = 65_536;

const ACK = CONTROL_FRAMES.ACK;

/** The last `size` numbers added, for membership tests. */
class SeqWindow {
  readonly #set = new Set<number>();
  readonly #ring: Float64Array;
  #at = 0;

  constructor(size: number) {
    this.#ring = new Float64Array(size);
  }

  has(n: number): boolean {
    return this.#set.has(n);
  }

  add(n: number): void {
    const old = this.#ring[this.#at];
    if (old) this.#set.delete(old);
    this.#ring[this.#at] = n;
    this.#at = (this.#at + 1) % this.#ring.length;
    this.#set.add(n);
  }
}

/** Counters of an Integration Manager. */
export interface IntegrationManagerStats {
  /** Messages pulled. */
  received: number;
  /** Messages published. */
  published: number;
  /** Messages dropped: not three frames, or oversize. */
  dropped: number;
  /** Batches received again after their publication (acknowledged, not published again). */
  repeated: number;
  /** Of those, messages with a frame over `max_message_size`. */
  oversize: number;
  /**
   * Times a publication found a subscriber's queue full (`subscriber_buffer` reached): each starts
   * a run of one or more publications that subscriber loses. libzmq does not report how many.
   */
  subscriberFull: number;
  /** The publish socket's high-water mark, in messages: `subscriber_buffer` / 4 KiB (16,384 by default). */
  publishHighWaterMark: number;
  /** Subscriber connections now open. */
  subscribers: number;
  /**
   * Subscribers disconnected because they read nothing (their connection full and not falling)
   * while the IM published `subscriber_buffer` bytes (see subscriber_guard.ts).
   */
  subscribersCut: number;
}

/** A running Integration Manager. */
export class IntegrationManager {
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #sockets: ReactorSocket[] = [];
  readonly #stats = {
    received: 0,
    published: 0,
    dropped: 0,
    repeated: 0,
    subscriberFull: 0,
    publishHighWaterMark: 0,
    subscribers: 0,
    subscribersCut: 0,
  };
  /** Stops following the subscribers (see subscriber_watch.ts). */
  #stopWatch?: () => void;
  /** Hands freed memory back to the system. */
  readonly #trim = new TrimScheduler();
  /** Three-frame messages with a frame over `maxMessageSize` (but under the batch limit). */
  #oversize = 0;
  #pull?: ReactorSocket;
  #oversizeWarned = false;
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();

  private constructor(reactor: Reactor, owns: boolean) {
    this.#reactor = reactor;
    this.#ownsReactor = owns;
  }

  /**
   * Binds the publish endpoint, waits {@linkcode IM_WARMUP_MS} (or `warmupMs`) so that
   * subscribers reconnect and subscribe again, then binds the pull endpoint and starts
   * forwarding.
   */
  static async start(options: IntegrationManagerOptions): Promise<IntegrationManager> {
    const reactor = options.reactor ?? new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
    const im = new IntegrationManager(reactor, !options.reactor);
    const log = logger("integration-manager");
    const maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    const budget = options.subscriberBuffer ?? DEFAULT_SUBSCRIBER_BUFFER;
    // Each subscriber's queue holds at most `budget` / 4 KiB publications (16,384 by default):
    // `budget` bytes while they average 4 KiB or less. The mark is set once, at bind, and never
    // changed: libzmq applies a changed SNDHWM to existing connections, but a connection whose
    // mark is lowered while its reader has already reported all it read is taken for full for
    // good (the reader reports only every half mark it reads), and that subscriber goes deaf.
    const hwm = subscriberHwm(budget);
    const pub = reactor.socket("XPUB", { sendHighWaterMark: hwm, maxMessageSize, linger: 2000 });
    im.#sockets.push(pub);
    const raw = pub.raw;
    const guard = new SubscriberGuard(budget, hwm);
    if (connectionCallsAvailable()) {
      im.#stopWatch = await watchSubscribers(reactor, pub, guard, im.#stats, im.#trim);
    } else log.info("No C library calls here: a subscriber that stops reading is not disconnected");
    await bindSecure(reactor, pub, options.pubAddress, "subscribers", options.security);
    await reactor.exec(() => {
      // Every subscription and unsubscription, not just the first and last of a topic.
      raw.setInt(Opt.XPUB_VERBOSER, 1);
      raw.setInt(Opt.XPUB_NODROP, 1); // a send fails when a subscriber's queue is full: counted
    });
    im.#stats.publishHighWaterMark = hwm;
    pub.onMessage((frames) => {
      // Anything an XSUB sends other than (un)subscriptions is ignored, as PUB would.
      if (frames.length !== 1) return;
      // An unsubscription (also sent when a subscriber leaves, whose queue libzmq then frees):
      // hand the freed memory back to the system a second later, at most once every 10 s (a
      // trim stalls this thread for ~2 ms, or up to ~200 ms when 170 MiB come back).
      if (frames[0][0] === 0) im.#trim.schedule();
    });
    const warmup = options.warmupMs ?? IM_WARMUP_MS;
    if (warmup > 0) await new Promise((r) => setTimeout(r, warmup));
    const max = options.maxMessageSize;
    const pull = reactor.socket("ROUTER", {
      receiveHighWaterMark: queueHwm(maxMessageSize),
      sendHighWaterMark: 100_000,
      maxMessageSize: max === undefined ? undefined : internalFrameLimit(max),
    });
    await bindSecure(reactor, pull, options.pullAddress, "subject", options.security);
    if (options.localPullAddress) await pull.bind(options.localPullAddress);
    im.#sockets.push(pull);
    im.#pull = pull;
    const stats = im.#stats;
    const incarnation = utf8(crypto.randomUUID().replaceAll("-", "").slice(0, 16));
    /** Sequence numbers published, for acknowledging a repeat without publishing it again. */
    const published = new SeqWindow(SEQ_WINDOW);
    /** Sequence numbers to acknowledge at the end of this pass, by sender. */
    let acks = new Map<string, { idFrame: Uint8Array; seqs: number[] }>();
    let warned = false;
    const drop = (count: number) => {
      stats.dropped++;
      if (!warned) {
        warned = true;
        log.warn(
          "Dropped a message with {count} frames (expected a batch or 3 frames); further drops are only counted",
          { count },
        );
      }
    };
    // Runs on the reactor's turn (publications come from `onMessage`), so it may use the raw socket.
    const send = (frames: Uint8Array[]) => {
      if (raw.trySend(frames)) return;
      // XPUB_NODROP: a matching subscriber's queue is full. Count it, and send to the others
      // (libzmq then skips that subscriber, silently, until its queue has room again).
      stats.subscriberFull++;
      raw.setInt(Opt.XPUB_NODROP, 0);
      try {
        raw.trySend(frames);
      } finally {
        raw.setInt(Opt.XPUB_NODROP, 1);
      }
    };
    const publish = (frames: Uint8Array[]) => {
      guard.published(publicationBytes(frames));
      // XPUB never blocks (a slow subscriber loses messages at its high-water mark). Received
      // frames are never written again, so they can wait for the reactor's turn as they are.
      if (reactor.polling) void reactor.exec(() => send(frames)).catch(() => {});
      else send(frames);
      stats.published++;
    };
    const ack = (idFrame: Uint8Array, seqFrame: Uint8Array): number | undefined => {
      const seq = Number(text(seqFrame));
      if (!Number.isSafeInteger(seq) || seq <= 0) return undefined;
      const k = routingKey(idFrame);
      let a = acks.get(k);
      if (!a) acks.set(k, a = { idFrame, seqs: [] });
      a.seqs.push(seq);
      return seq;
    };
    pull.onMessage((frames) => {
      // [sender, ...]: [seq, batch] (the Subject), ["PING", seq] (the Subject), [batch], or
      // [topic, header, values]; see PROTOCOL.md.
      const n = frames.length - 1;
      if (n === 2 && isBatch(frames[2])) {
        const view = BatchView.of(frames[2]);
        if (!view) return drop(n);
        const seq = ack(frames[0], frames[1]);
        if (seq === undefined) return drop(n);
        if (published.has(seq)) {
          stats.repeated++;
          return;
        }
        published.add(seq);
        stats.received += view.count;
        for (let i = 0; i < view.count; i++) publish(view.frames(i));
        return;
      }
      if (n === 2 && isControl(frames[1], "PING")) {
        if (ack(frames[0], frames[2]) === undefined) drop(n);
        return;
      }
      // A batch without a sequence number, or one message: published, not acknowledged.
      const view = n === 1 ? BatchView.of(frames[1]) : undefined;
      if (view) {
        stats.received += view.count;
        for (let i = 0; i < view.count; i++) publish(view.frames(i));
        return;
      }
      stats.received++;
      if (n !== 3) return drop(n);
      if (max !== undefined && (frames[1].length > max || frames[2].length > max || frames[3].length > max)) {
        im.#oversize++;
        return;
      }
      publish([frames[1], frames[2], frames[3]]);
    });
    // One acknowledgement per sender per pass, after the pass's publications were handed to PUB.
    reactor.afterReceive(() => {
      if (!acks.size || pull.closed) return;
      const now = acks;
      acks = new Map();
      for (const { idFrame, seqs } of now.values()) {
        const frames = [idFrame, ACK, incarnation, utf8(JSON.stringify(seqs))];
        if (!pull.sendNow(frames)) void pull.send(frames).catch(() => {});
      }
    });
    log.info("Integration Manager pulling on {pull}, publishing on {pub}", {
      pull: options.pullAddress,
      pub: options.pubAddress,
    });
    return im;
  }

  /** A snapshot of the counters. */
  stats(): IntegrationManagerStats {
    const oversize = (this.#pull?.oversizeDrops ?? 0) + this.#oversize;
    if (oversize > 0 && !this.#oversizeWarned) {
      this.#oversizeWarned = true;
      logger("integration-manager").warn(
        "Dropped a message with a frame over max_message_size; further drops are only counted",
      );
    }
    return { ...this.#stats, dropped: this.#stats.dropped + oversize, oversize };
  }

  /** Stops and closes the sockets. Safe to call twice. */
  close(): Promise<void> {
    this.#trim.stop();
    this.#stopWatch?.();
    this.#closed ??=
      (this.#ownsReactor
        ? this.#reactor.close()
        : Promise.all(this.#sockets.map((s) => s.close())).then(() => {})).finally(() =>
          this.#done.resolve()
        );
    return this.#closed;
  }

  /**
   * Finishes accepted work, then closes. The IM holds no work of its own: what it took is
   * handed to its publish socket at once (and leaves during the socket's linger), so this is
   * {@linkcode IntegrationManager.close}.
   */
  drain(): Promise<void> {
    return this.close();
  }

  /** Resolves once closed (by {@linkcode IntegrationManager.close}, {@linkcode IntegrationManager.drain} or disposal). */
  closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Same as {@linkcode IntegrationManager.drain}: disposal finishes accepted work first. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.drain();
  }
}
