/**
 * The Integration Manager: pulls results and publishes every message unchanged, on its
 * topic (its first frame). No business logic; payloads are never decoded.
 *
 * @module
 */

import { internalFrameLimit, isBatch, readBatch } from "../batch.ts";
import { logger } from "../log.ts";
import { text, utf8 } from "../protocol.ts";
import { Reactor, type ReactorSocket, ROLE_SYNC_WAIT_MS } from "../zmq/reactor.ts";

/** Options of {@linkcode IntegrationManager.start}. */
export interface IntegrationManagerOptions {
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
  /** A reactor to share (for inproc deployments); by default the IM makes its own. */
  readonly reactor?: Reactor;
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

const ACK = utf8("ACK");

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
}

/** A running Integration Manager. */
export class IntegrationManager {
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #sockets: ReactorSocket[] = [];
  readonly #stats = { received: 0, published: 0, dropped: 0, repeated: 0 };
  /** Three-frame messages with a frame over `maxMessageSize` (but under the batch limit). */
  #oversize = 0;
  #pull?: ReactorSocket;
  #oversizeWarned = false;
  #closed?: Promise<void>;

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
    const pub = reactor.socket("PUB", { sendHighWaterMark: 100_000, linger: 2000 });
    await pub.bind(options.pubAddress);
    im.#sockets.push(pub);
    const warmup = options.warmupMs ?? IM_WARMUP_MS;
    if (warmup > 0) await new Promise((r) => setTimeout(r, warmup));
    const max = options.maxMessageSize;
    const pull = reactor.socket("ROUTER", {
      receiveHighWaterMark: 100_000,
      sendHighWaterMark: 100_000,
      maxMessageSize: max === undefined ? undefined : internalFrameLimit(max),
    });
    await pull.bind(options.pullAddress);
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
    const publish = (frames: Uint8Array[]) => {
      // PUB never blocks (a slow subscriber loses messages at its high-water mark), so
      // `sendNow` fails only while another send is queued. Received frames are never written
      // again, so they can wait in the queue as they are.
      if (!pub.sendNow(frames)) void pub.send(frames).catch(() => {});
      stats.published++;
    };
    const ack = (idFrame: Uint8Array, seqFrame: Uint8Array): number | undefined => {
      const seq = Number(text(seqFrame));
      if (!Number.isSafeInteger(seq) || seq <= 0) return undefined;
      const k = text(idFrame);
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
        const records = readBatch(frames[2]);
        if (!records) return drop(n);
        const seq = ack(frames[0], frames[1]);
        if (seq === undefined) return drop(n);
        if (published.has(seq)) {
          stats.repeated++;
          return;
        }
        published.add(seq);
        stats.received += records.length;
        for (const r of records) publish(r.frames);
        return;
      }
      if (n === 2 && frames[1].length === 4 && text(frames[1]) === "PING") {
        if (ack(frames[0], frames[2]) === undefined) drop(n);
        return;
      }
      // A batch without a sequence number, or one message: published, not acknowledged.
      const records = n === 1 ? readBatch(frames[1]) : undefined;
      if (records) {
        stats.received += records.length;
        for (const r of records) publish(r.frames);
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
    this.#closed ??= this.#ownsReactor
      ? this.#reactor.close()
      : Promise.all(this.#sockets.map((s) => s.close())).then(() => {});
    return this.#closed;
  }
}
