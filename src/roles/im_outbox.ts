/**
 * The Subject's side of the acknowledged hop to the Integration Manager (see PROTOCOL.md,
 * _The Integration Manager hop_): every batch of publications is held, under a sequence
 * number, until the IM acknowledges it. Pure bookkeeping: no sockets, no clock.
 *
 * The IM takes the messages of one connection in order and acknowledges them in order (one
 * `ACK` per pass over its sockets, listing what the pass took). So when an acknowledgement
 * arrives for something sent after a batch that is still not acknowledged, that batch was lost
 * on the way (a connection torn down with it, an IM that died with it in its buffers): it is
 * sent again, oldest first. The Subject pings the IM periodically (a ping is an empty entry
 * that is acknowledged like a batch and never sent again), so a loss is found within a ping
 * interval even when no other traffic flows, and once a restarted IM answers. No timeout is
 * needed, so a slow IM never gets a batch twice: a batch is sent again only once something
 * sent after it came back.
 *
 * The IM remembers the sequence numbers it published and acknowledges a repeat without
 * publishing it again, so sending again never duplicates a publication of the same IM.
 *
 * @example
 * ```ts
 * import { ImOutbox } from "./im_outbox.ts";
 * const box = new ImOutbox(1000);
 * const a = box.add(new Uint8Array(10)), b = box.add(new Uint8Array(20));
 * box.sent(box.next()!); // a
 * box.sent(box.next()!); // b (a was lost on the way)
 * const r = box.ack("inc-1", [b.seq]);
 * console.log(r.resent, box.next() === a, box.bytes); // 1 true 10
 * ```
 *
 * @module
 */

/** A batch (or a ping) held until the IM acknowledges it. */
export interface OutboxEntry {
  /** Its sequence number. */
  readonly seq: number;
  /** The batch; `undefined` for a ping. */
  readonly body: Uint8Array | undefined;
  /** Send order of its last send (0: not sent since it was added or found lost). */
  order: number;
  /** True while it waits in the send queue. */
  queued: boolean;
  /** The IM incarnation the Subject knew when it was last sent. */
  sentUnder: string | undefined;
  /** Times the IM it was sent to took later messages and not this one. */
  misses: number;
}

/** What an acknowledgement changed. */
export interface AckResult {
  /** True if it came from another IM incarnation than the last one (the IM restarted). */
  readonly restarted: boolean;
  /** The incarnation known before, if any. */
  readonly previous: string | undefined;
  /** Batches found lost and queued to be sent again. */
  readonly resent: number;
  /**
   * Batches given up: the same live IM took later messages and skipped each of them more than
   * `maxMisses` times (a batch it cannot take, e.g. over its `max_message_size`).
   */
  readonly givenUp: readonly OutboxEntry[];
}

/** The unacknowledged batches towards the Integration Manager. */
export class ImOutbox {
  readonly #bySeq = new Map<number, OutboxEntry>();
  /** Sent and not acknowledged, by send order (a Map iterates in insertion order: send order). */
  readonly #byOrder = new Map<number, OutboxEntry>();
  #queue: OutboxEntry[] = [];
  #head = 0;
  #bytes = 0;
  #nextSeq: number;
  #nextOrder = 1;
  #incarnation: string | undefined;
  #ping: OutboxEntry | undefined;
  readonly #maxMisses: number;

  /**
   * `firstSeq`: the first sequence number (the Subject takes its clock, milliseconds × 1000,
   * so a restarted Subject never reuses one). `maxMisses`: see {@linkcode AckResult.givenUp}.
   */
  constructor(firstSeq: number, maxMisses = 3) {
    this.#nextSeq = firstSeq;
    this.#maxMisses = maxMisses;
  }

  /** Bytes of the batches held (sent or not). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Batches held (sent or not). */
  get size(): number {
    return this.#bySeq.size;
  }

  /** The IM incarnation of the last acknowledgement. */
  get incarnation(): string | undefined {
    return this.#incarnation;
  }

  /** Holds a batch (the outbox keeps `body`: pass a copy) and queues it to be sent. */
  add(body: Uint8Array): OutboxEntry {
    const e: OutboxEntry = {
      seq: this.#nextSeq++,
      body,
      order: 0,
      queued: true,
      sentUnder: undefined,
      misses: 0,
    };
    this.#bySeq.set(e.seq, e);
    this.#bytes += body.length;
    this.#queue.push(e);
    return e;
  }

  /** True while batch `seq` is held: not yet acknowledged (nor given up). */
  holds(seq: number): boolean {
    return this.#bySeq.has(seq);
  }

  /** The oldest batch waiting to be sent, or `undefined`. It stays queued until {@linkcode sent}. */
  next(): OutboxEntry | undefined {
    const q = this.#queue;
    while (this.#head < q.length && !q[this.#head].queued) q[this.#head++] = undefined as never;
    if (this.#head >= q.length) {
      if (q.length) this.#queue = [];
      this.#head = 0;
      return undefined;
    }
    if (this.#head > 1024 && this.#head * 2 > q.length) {
      this.#queue = q.slice(this.#head);
      this.#head = 0;
    }
    return this.#queue[this.#head];
  }

  /** True if a batch waits to be sent. */
  get hasQueued(): boolean {
    return this.next() !== undefined;
  }

  /**
   * A ping to send now: an entry that is acknowledged like a batch but never sent again. It
   * replaces the previous ping if that one is still unanswered. Call {@linkcode sent} once it
   * is sent, or {@linkcode dropPing} if it could not be.
   */
  ping(): OutboxEntry {
    this.dropPing();
    this.#ping = {
      seq: this.#nextSeq++,
      body: undefined,
      order: 0,
      queued: false,
      sentUnder: undefined,
      misses: 0,
    };
    return this.#ping;
  }

  /** Forgets the outstanding ping. */
  dropPing(): void {
    const p = this.#ping;
    if (!p) return;
    if (p.order) this.#byOrder.delete(p.order);
    this.#ping = undefined;
  }

  /** Records that `e` (a batch from {@linkcode next}, or a ping) was handed to the socket. */
  sent(e: OutboxEntry): void {
    if (e.body && !this.#bySeq.has(e.seq)) return; // acknowledged meanwhile
    if (e.order) this.#byOrder.delete(e.order);
    e.queued = false;
    e.order = this.#nextOrder++;
    e.sentUnder = this.#incarnation;
    this.#byOrder.set(e.order, e);
  }

  /**
   * Applies one acknowledgement of the IM `incarnation`: the sequence numbers it took. Every
   * batch sent before the latest of them and still not acknowledged was lost, and is queued to
   * be sent again (oldest first).
   */
  ack(incarnation: string, seqs: readonly number[]): AckResult {
    let high = 0;
    for (const s of seqs) {
      const e = this.#bySeq.get(s) ?? (this.#ping?.seq === s ? this.#ping : undefined);
      if (!e) continue; // a repeat's second acknowledgement, or an unknown number
      if (e.order > high) high = e.order;
      if (e.order) this.#byOrder.delete(e.order);
      e.queued = false;
      if (e === this.#ping) this.#ping = undefined;
      else {
        this.#bySeq.delete(s);
        this.#bytes -= e.body!.length;
      }
    }
    const previous = this.#incarnation;
    const restarted = previous !== undefined && previous !== incarnation;
    this.#incarnation = incarnation;
    const lost: OutboxEntry[] = [];
    for (const [order, e] of this.#byOrder) {
      if (order >= high) break;
      lost.push(e);
    }
    const again: OutboxEntry[] = [];
    const givenUp: OutboxEntry[] = [];
    const waiting = lost.length ? this.#queue.slice(this.#head).filter((e) => e.queued) : [];
    for (const e of lost) {
      this.#byOrder.delete(e.order);
      e.order = 0;
      if (e === this.#ping) {
        this.#ping = undefined;
        continue;
      }
      if (e.sentUnder === incarnation && ++e.misses > this.#maxMisses) {
        this.#bySeq.delete(e.seq);
        this.#bytes -= e.body!.length;
        givenUp.push(e);
        continue;
      }
      e.queued = true;
      again.push(e);
    }
    if (again.length) {
      this.#queue = [...again, ...waiting].sort((a, b) => a.seq - b.seq);
      this.#head = 0;
    }
    return { restarted, previous, resent: again.length, givenUp };
  }
}
