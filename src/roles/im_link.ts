/**
 * The Subject's link to the Integration Manager: publications gathered into a batch during a
 * turn, each batch held in the outbox (`im_outbox.ts`) under a sequence number until the IM
 * acknowledges it, sent again when the acknowledgements show it lost, and pings while anything
 * waits (PROTOCOL.md, _The Integration Manager hop_). It is handed the socket the Subject made.
 *
 * @module
 */

import { BATCH_FLUSH_BYTES, type BatchView, BatchWriter } from "../wire/batch.ts";
import { CONTROL_FRAMES, isControl } from "../wire/control.ts";
import { encodeHeader, text, utf8 } from "../wire/protocol.ts";
import type { ReactorSocket } from "../zmq/reactor.ts";
import type { logger } from "../log.ts";
import { ImOutbox, type OutboxEntry } from "./im_outbox.ts";
import type { KnownFinals } from "./request_metrics.ts";
import { HELLO_TOPIC } from "./subject_options.ts";

/** What {@linkcode ImLink} tells the Subject. */
export interface ImLinkOptions {
  /** The outbox's held bytes changed (for back-pressure). */
  readonly changed: () => void;
  /** A publication waits in this turn's batch: call {@linkcode ImLink.flush} at the end of the turn. */
  readonly scheduleFlush: () => void;
  /** A message from the IM was dropped, counted under `reason` (and warned of once). */
  readonly drop: (reason: string) => void;
  /** A batch the IM would not take was dropped (counted as `im_refused`; the link logs it). */
  readonly refused: () => void;
  /** The Subject's logger. */
  readonly log: ReturnType<typeof logger>;
  /**
   * Sees each batch as it leaves for the IM (the request metrics find final publications in it),
   * with the records published with {@linkcode ImLink.publishDone} (`finals`, valid only during the call).
   */
  readonly onBatch?: (batch: Uint8Array, finals: KnownFinals) => void;
  /** The Subject's incarnation, announced on `~~~~hello`. */
  readonly incarnation: string;
  /** The Subject's `max_message_size`, announced with it (services size their batches by it). */
  readonly maxMessageSize?: number;
}

/** Publications on their way to the Integration Manager, until it acknowledges them. */
export class ImLink {
  readonly #sock: ReactorSocket;
  readonly #o: ImLinkOptions;
  /** Publications to send at the end of this turn. */
  readonly #batch = new BatchWriter();
  /** The records of `#batch` published with `publishDone`, the first `count` of each array (reused). */
  readonly #finals: { count: number; at: number[]; ids: string[]; flows: string[] } = {
    count: 0,
    at: [],
    ids: [],
    flows: [],
  };
  /** Batches until the IM acknowledges them. */
  readonly #outbox = new ImOutbox(Date.now() * 1000);
  /** A batch waiting in the socket's queue for room (at most one: the others wait in the outbox). */
  #sending = false;
  #resent = 0;
  #published = 0;
  /** Callbacks for the batch in the making ({@linkcode ImLink.whenTaken}). */
  #tail: (() => void)[] = [];
  /** Callbacks by the batch they wait for, in send order. */
  readonly #waiting: { seq: number; fns: (() => void)[] }[] = [];
  /**
   * The Subject's incarnation announcement: a client that sees a new one sends again the requests
   * it still waits for, which died with the Subject before (PROTOCOL.md, _Subject restarts_).
   */
  readonly #hello: Uint8Array[];

  /** A link over `sock`, a DEALER connected to the IM. */
  constructor(sock: ReactorSocket, options: ImLinkOptions) {
    this.#sock = sock;
    this.#o = options;
    this.#hello = [
      utf8(HELLO_TOPIC).slice(),
      encodeHeader({ v: 1, id: options.incarnation, k: "hello" }).slice(),
      // `started` (the link is made as the Subject starts) orders incarnations for a client that
      // hears a dead one's last announcement late; an undefined max_message_size is left out.
      utf8(JSON.stringify({ max_message_size: options.maxMessageSize, started: Date.now() })).slice(),
    ];
    sock.onMessage((f) => this.#onAck(f));
  }

  /** Batches not yet acknowledged. */
  get unacked(): number {
    return this.#outbox.size;
  }

  /** Bytes of those batches. */
  get backlog(): number {
    return this.#outbox.bytes;
  }

  /** Batches sent again (lost on the way, or in an IM that died). */
  get resent(): number {
    return this.#resent;
  }

  /** Publications sent (the announcements not counted). */
  get published(): number {
    return this.#published;
  }

  /**
   * Publishes a message: it goes in this turn's batch (sent now if the batch is full). `kind`
   * marks the record for the Subject's own reading of the batch (`RequestMetrics.published`:
   * {@linkcode REFUSAL_KIND}); the IM publishes every record alike.
   */
  publish(topic: Uint8Array, header: Uint8Array, values: Uint8Array, kind = 0): void {
    this.#batch.add(0, kind, topic, header, values);
    this.#added();
  }

  /** Publishes record `i` of `view` as it came, without views of its frames. */
  publishRecord(view: BatchView, i: number): void {
    this.#batch.addRecord(view, i, 0, 0);
    this.#added();
  }

  /**
   * Publishes record `i` of `view` as it came, as {@linkcode publishRecord} does: the plain `done`
   * final of request `id` of flow `flow`, which `onBatch` is told of (`KnownFinals`) instead of
   * reading it from the batch again.
   */
  publishDone(view: BatchView, i: number, id: string, flow: string): void {
    this.#batch.addRecord(view, i, 0, 0);
    // Noted once the record is in (an add that throws leaves no name behind), before a full batch
    // leaves in `#added`.
    const f = this.#finals;
    const k = f.count++;
    f.at[k] = this.#batch.count - 1;
    f.ids[k] = id;
    f.flows[k] = flow;
    this.#added();
  }

  /** Publishes the Subject's incarnation announcement (PROTOCOL.md, _Subject restarts_). */
  announce(): void {
    this.#batch.add(0, 0, this.#hello[0], this.#hello[1], this.#hello[2]);
    this.#o.scheduleFlush();
  }

  #added(): void {
    this.#published++;
    if (this.#batch.size >= BATCH_FLUSH_BYTES) this.flush();
    else this.#o.scheduleFlush();
  }

  /**
   * Calls `fn` once the IM has acknowledged the batch that the publications of this turn go in
   * (or the next one, if this turn publishes nothing more), or has given it up. From `onBatch`:
   * the batch it is shown.
   */
  whenTaken(fn: () => void): void {
    this.#tail.push(fn);
  }

  /** Sends this turn's batch (held until acknowledged). */
  flush(): void {
    if (!this.#batch.count) return;
    const batch = this.#batch.take().slice(); // the writer reuses its buffer
    const finals = this.#finals;
    try {
      this.#o.onBatch?.(batch, finals);
    } finally {
      finals.count = 0; // they named this batch's records
    }
    const { seq } = this.#outbox.add(batch);
    if (this.#tail.length) {
      this.#waiting.push({ seq, fns: this.#tail });
      this.#tail = [];
    }
    this.#send();
    this.#o.changed();
  }

  /**
   * Every `IM_PING_MS`, on the reactor's turn, while batches wait for acknowledgement: a ping,
   * so the IM's answer shows losses. With nothing unacknowledged nothing can be lost, so an idle
   * Subject sends none (and wakes nobody).
   */
  ping(): void {
    if (this.#sock.closed || this.#outbox.size === 0) return;
    this.#send();
    if (this.#sending || this.#outbox.hasQueued) return; // the IM is away or full: no ping needed
    const p = this.#outbox.ping();
    if (this.#sock.sendNow([CONTROL_FRAMES.PING, utf8(String(p.seq))])) this.#outbox.sent(p);
    else this.#outbox.dropPing();
  }

  /**
   * Sends the outbox's queued batches, oldest first, each as `[seq, batch]`. When the socket
   * cannot take one now (the IM is away: ZMQ_IMMEDIATE; or its high-water mark), that one waits
   * in the socket's queue for room and the rest stay in the outbox.
   */
  #send(): void {
    if (this.#sending || this.#sock.closed) return;
    for (let e = this.#outbox.next(); e; e = this.#outbox.next()) {
      const frames = [utf8(String(e.seq)), e.body!];
      if (this.#sock.sendNow(frames)) {
        this.#outbox.sent(e);
        continue;
      }
      this.#sending = true;
      const entry: OutboxEntry = e;
      void this.#sock.send(frames).then(
        () => {
          this.#sending = false;
          this.#outbox.sent(entry);
          this.#send();
        },
        () => {
          this.#sending = false; // closed
        },
      );
      return;
    }
  }

  /** `["ACK", incarnation, "[seq, …]"]` from the IM. */
  #onAck(frames: Uint8Array[]): void {
    if (frames.length !== 3 || !isControl(frames[0], "ACK")) return this.#o.drop("bad_im_message");
    let seqs: unknown;
    try {
      seqs = JSON.parse(text(frames[2]));
    } catch { /* below */ }
    if (!Array.isArray(seqs)) return this.#o.drop("bad_im_message");
    const r = this.#outbox.ack(text(frames[1]), seqs as number[]);
    if (r.restarted) {
      this.#o.log.warn(
        "The Integration Manager restarted (incarnation {now}, was {was}): {n} unacknowledged batches sent again",
        { now: this.#outbox.incarnation, was: r.previous, n: r.resent },
      );
    }
    this.#resent += r.resent;
    for (const e of r.givenUp) {
      this.#o.refused();
      this.#o.log.error(
        "The Integration Manager did not take a batch of {bytes} bytes, {tries} times: dropped (over its max_message_size?)",
        { bytes: e.body!.length, tries: e.misses },
      );
    }
    if (r.resent) this.#send();
    this.#o.changed();
    if (this.#waiting.length) this.#taken();
  }

  /** Calls the callbacks of the batches no longer held (acknowledged, or given up). */
  #taken(): void {
    let kept = 0;
    for (const w of this.#waiting) {
      if (this.#outbox.holds(w.seq)) this.#waiting[kept++] = w;
      else for (const fn of w.fns) fn();
    }
    this.#waiting.length = kept;
  }
}
