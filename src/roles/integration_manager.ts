/**
 * The Integration Manager: pulls results and publishes every message unchanged, on its
 * topic (its first frame). No business logic; payloads are never decoded.
 *
 * @module
 */

import { internalFrameLimit, readBatch } from "../batch.ts";
import { logger } from "../log.ts";
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
}

/** Counters of an Integration Manager. */
export interface IntegrationManagerStats {
  /** Messages pulled. */
  received: number;
  /** Messages published. */
  published: number;
  /** Messages dropped: not three frames, or oversize. */
  dropped: number;
  /** Of those, messages with a frame over `max_message_size`. */
  oversize: number;
}

/** A running Integration Manager. */
export class IntegrationManager {
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #sockets: ReactorSocket[] = [];
  readonly #stats = { received: 0, published: 0, dropped: 0 };
  /** Three-frame messages with a frame over `maxMessageSize` (but under the batch limit). */
  #oversize = 0;
  #pull?: ReactorSocket;
  #oversizeWarned = false;
  #closed?: Promise<void>;

  private constructor(reactor: Reactor, owns: boolean) {
    this.#reactor = reactor;
    this.#ownsReactor = owns;
  }

  /** Binds both endpoints and starts forwarding. */
  static async start(options: IntegrationManagerOptions): Promise<IntegrationManager> {
    const reactor = options.reactor ?? new Reactor({ syncWaitMs: ROLE_SYNC_WAIT_MS });
    const im = new IntegrationManager(reactor, !options.reactor);
    const log = logger("integration-manager");
    const pub = reactor.socket("PUB", { sendHighWaterMark: 100_000, linger: 2000 });
    await pub.bind(options.pubAddress);
    const max = options.maxMessageSize;
    const pull = reactor.socket("PULL", {
      receiveHighWaterMark: 100_000,
      maxMessageSize: max === undefined ? undefined : internalFrameLimit(max),
    });
    await pull.bind(options.pullAddress);
    im.#sockets.push(pull, pub);
    im.#pull = pull;
    const stats = im.#stats;
    let warned = false;
    const publish = (frames: Uint8Array[]) => {
      // PUB never blocks (a slow subscriber loses messages at its high-water mark), so
      // `sendNow` fails only while another send is queued. Received frames are never written
      // again, so they can wait in the queue as they are.
      if (!pub.sendNow(frames)) void pub.send(frames).catch(() => {});
      stats.published++;
    };
    pull.onMessage((frames) => {
      // The Subject sends batches (one frame, see batch.ts); three frames are one message.
      const records = frames.length === 1 ? readBatch(frames[0]) : undefined;
      if (records) {
        stats.received += records.length;
        for (const r of records) publish(r.frames);
        return;
      }
      stats.received++;
      if (frames.length !== 3) {
        stats.dropped++;
        if (!warned) {
          warned = true;
          log.warn(
            "Dropped a message with {count} frames (expected a batch or 3 frames); further drops are only counted",
            { count: frames.length },
          );
        }
        return;
      }
      if (max !== undefined && (frames[0].length > max || frames[1].length > max || frames[2].length > max)) {
        im.#oversize++;
        return;
      }
      publish(frames);
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
