/**
 * The service client: push requests to the Subject, wait for their final publication, subscribe
 * to Integration Manager topics, and handle `@PUBLISH` steps. The Subject acknowledges every
 * message it accepts ({@linkcode Client.drain} waits for that); subscriptions are confirmed by a
 * ping over the whole path before a request is sent (no slow-joiner losses); every request a
 * caller waits for is kept until its final publication and sent again to a new Subject
 * incarnation (PROTOCOL.md, _Subject restarts_), paused ones excepted.
 *
 * @module
 */

import { type ActionKey, formatActionKey, parseActionKey, PUBLISH } from "../topic/action_key.ts";
import type { Handler, Values } from "../handler.ts";
import { logger } from "../log.ts";
import { TIMED_OUT, withTimeout } from "../_async.ts";
import { BATCH_FLUSH_BYTES, EMPTY_BATCH_BYTES, recordBytes, TurnBatch } from "../wire/batch.ts";
import { decodeList, isControl } from "../wire/control.ts";
import {
  decodeHeader,
  decodeValues,
  encodeHeader,
  type ErrorCode,
  errorFrames,
  formatTopic,
  type Header,
  isFinal,
  parseToken,
  type Publication,
  text,
  toPublication,
  utf8,
} from "../wire/protocol.ts";
import { Reactor, type ReactorSocket } from "../zmq/reactor.ts";
import { RequestRefusedError, RequestTimeoutError } from "./errors.ts";
import { KeptRequests } from "./kept_requests.ts";
import { runPublishHandler, takesPublication } from "./publish_handler.ts";
import { PublicationStream, type Subscription } from "./subscription.ts";
import { type IncarnationRank, NO_INCARNATION, type Refusal, Unacked } from "./unacked.ts";
import { CopyAnswers } from "./copies.ts";
import {
  type ClientOptions,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_RESEND_AFTER,
  type RequestOptions,
  type Submission,
} from "./options.ts";
import { type Waiter, Waiters } from "./waiters.ts";
import {
  reloadAnswered,
  type ReloadOptions,
  reloadsInterrupted,
  type ReloadWaiters,
  sendReload,
} from "./reload.ts";
import type { SourceFile } from "../topic/catalog.ts";
import { connectRedialing, curveClientOptions, requireCurve } from "../zmq/curve.ts";

export { RequestRefusedError, RequestTimeoutError } from "./errors.ts";
export type { ClientOptions, RequestOptions, Submission } from "./options.ts";

const PING = "ping";
/** The topic of a Subject's announcement of its incarnation (`HELLO_TOPIC` of the Subject). */
const HELLO_TOPIC = "~~~~hello";
let clientCount = 0;

/** A connection to a deployment, for services. */
export class Client {
  readonly #reactor: Reactor;
  readonly #ownsReactor: boolean;
  readonly #timeout: number;
  readonly #maxMessageSize: number | undefined;
  /** The `max_message_size` the Subject last announced with its incarnation, if it did. */
  #announcedMax: number | undefined;

  readonly #log = logger("client");
  readonly #clientId = `${Deno.pid}-${++clientCount}-${crypto.randomUUID().slice(0, 8)}`;
  #dealer!: ReactorSocket;
  #sub!: ReactorSocket;
  /** Waiting callers by request id; several may wait for one id (`request` and `resume`). */
  readonly #waiters = new Waiters();
  readonly #pings = new Map<string, () => void>();
  /** Messages not yet acknowledged; a message sent again gets a new send number (`Header.t`). */
  readonly #unacked = new Unacked((frames, t) => rewritten(frames, { t }), () => this.#rank());
  #resendTimer?: ReturnType<typeof setInterval>;
  /** Messages pushed in this turn, sent as one batch at its end. */
  #out!: TurnBatch;
  /** Messages sent again because their acknowledgement was late. */
  resent = 0;
  /** Requests waited for, kept until their final publication, to send again after a Subject restart. */
  readonly #kept = new KeptRequests();
  /** Subject incarnations seen after the first (Subject restarts). */
  subjectRestarts = 0;
  /** Requests sent again because a new Subject incarnation announced itself. */
  resentAfterRestart = 0;
  /** Ids that `send()` / `sendResume()` / `submit()` wait to see accepted, with the refusal if one stood. */
  readonly #sending = new Map<string, { waiting: number; refused?: RequestRefusedError }>();
  /** Copies of one id answered differently (a refusal, then an acceptance): what they come to. */
  readonly #copies = new CopyAnswers();
  /** Subject incarnations' ranks: the order heard of, and when each started (unacked.ts `IncarnationRank`). */
  readonly #ranks = new Map<string, IncarnationRank>();
  /** `ClientOptions.resendAfter`. */
  #resendAfter = DEFAULT_RESEND_AFTER;
  /** Resumes waiting to learn whether they took their token: by resume id, what to do if so. */
  readonly #resumes = new Map<string, Set<() => void>>();
  readonly #subscribed = new Map<string, Promise<void>>();
  readonly #subs = new Set<Subscription>();
  readonly #handlers = new Set<Promise<unknown>>();
  readonly #reloads: ReloadWaiters = new Map();
  #closed?: Promise<void>;
  readonly #done = Promise.withResolvers<void>();

  private constructor(options: ClientOptions) {
    if (options.curve) requireCurve(); // a clear error before any socket
    this.#reactor = options.reactor ?? new Reactor();
    this.#ownsReactor = !options.reactor;
    this.#timeout = options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT;
    this.#maxMessageSize = options.maxMessageSize;
  }

  /** Connects to the Subject and the Integration Manager. */
  static async connect(options: ClientOptions): Promise<Client> {
    const c = new Client(options);
    c.#dealer = c.#reactor.socket("DEALER", {
      ...curveClientOptions(options.curve, options.subject),
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
      linger: 2000,
    });
    // A batch to send while the reactor polls off-thread waits for its next pass, gathering the
    // requests of the turns until then (one per turn for the HTTP gateway) into one message.
    c.#out = new TurnBatch(
      c.#dealer,
      [],
      "client closed",
      (flush) => queueMicrotask(() => c.#reactor.execSend(flush)),
    );
    if (options.curve) await connectRedialing(c.#reactor, c.#dealer, options.subject);
    else await c.#dealer.connect(options.subject);
    c.#dealer.onMessage((f) => c.#onDealer(f));
    const resendAfter = options.resendAfter ?? DEFAULT_RESEND_AFTER;
    c.#resendAfter = resendAfter;
    if (resendAfter > 0) {
      const timer = setInterval(() => c.#resend(resendAfter), Math.max(10, resendAfter / 2));
      Deno.unrefTimer(timer);
      c.#resendTimer = timer;
    }
    c.#sub = c.#reactor.socket("SUB", {
      ...curveClientOptions(options.curve, options.publisher),
      receiveHighWaterMark: 100_000,
      linger: 0,
    });
    // Before any ping: the Subject announces itself ahead of each ping it forwards, so once a
    // first ping is back the client knows the incarnation its requests go to.
    await c.#sub.subscribe(HELLO_TOPIC);
    if (options.curve) await connectRedialing(c.#reactor, c.#sub, options.publisher);
    else await c.#sub.connect(options.publisher);
    c.#sub.onMessage((f) => c.#onPublication(f));
    return c;
  }

  #onDealer(frames: Uint8Array[]): void {
    if (frames.length === 2 && isControl(frames[0], "NACK")) return this.#onRefused(frames[1]);
    if (frames.length === 2 && isControl(frames[0], "RELOADED")) {
      return reloadAnswered(this.#reloads, frames[1]);
    }
    if (frames.length === 2 && isControl(frames[0], "RESUMED")) {
      for (const r of decodeList(frames[1])) {
        if (typeof r?.id === "string") { for (const took of this.#resumes.get(r.id) ?? []) took(); }
      }
      return;
    }
    if (frames.length === 2 && isControl(frames[0], "ACK")) {
      let ids: unknown;
      try {
        ids = JSON.parse(text(frames[1]));
      } catch {
        return;
      }
      if (!Array.isArray(ids)) return;
      const now = performance.now();
      for (const id of ids) {
        if (typeof id !== "string") continue;
        // An id no longer kept was decided (accepted, or its final came): this answers a send
        // made again, and changes nothing (it would clear the mark of an acceptance, copies.ts).
        // Nor does one for an id whose messages wait to be sent again, none sent: it answers a
        // send to a Subject that has since died (read late, it took the place of the send to its
        // successor, which was never made).
        if (this.#unacked.awaits(id)) {
          const waited = this.#waiters.has(id);
          const sends = waited ? this.#unacked.sends(id) : undefined; // read before the answer forgets them
          this.#copies.ack(id, this.#unacked.answer(id, now), waited, sends);
        }
        // Accepted: a refusal of an earlier copy, told to a caller that waited then, is over.
        const sending = this.#sending.get(id);
        if (sending) sending.refused = undefined;
        this.#untrack(id);
      }
    }
  }

  /**
   * The Subject refused messages, one send each: once a refusal stands (copies.ts), stop sending
   * the message (it is not kept for a restarted Subject either) and tell whoever waits for it. A
   * refusal marked `answered` (a request refused before it ran: `overloaded`, `unknown_flow`, ...)
   * is a final too: a wait for the final gets it as an error publication.
   */
  #onRefused(frame: Uint8Array): void {
    const now = performance.now();
    for (const r of decodeList(frame)) {
      if (typeof r?.id !== "string") continue;
      const id = r.id;
      // An id no longer kept was decided: this refuses a send made again, and is moot (an outside
      // attack: ACKs of a send and of its copies, then a refusal of an earlier send, in one flush).
      // Unless it was accepted and is still to run for a caller, and this is a refusal by a Subject
      // it was sent again to (its acknowledgement, by the Subject before, read late): then it is
      // sent again (`#refused`). Not for a refusal of a send followed by one to the same Subject or
      // a successor (`CopyAnswers.refusedEarlier`): that one's answer decides, and sent again the
      // request would run twice if the Subject's duplicate window had let the id go by then.
      const t = typeof r.t === "number" ? r.t : undefined;
      const restartedRefused = this.#copies.running(id) && !this.#copies.refusedEarlier(id, t) &&
        this.#kept.frames(id) !== undefined;
      if (!this.#unacked.has(id) && !restartedRefused) {
        this.#untrack(id);
        continue;
      }
      const refusal = {
        reason: r.reason,
        message: r.message,
        answered: r.answered === true,
        copy: this.#unacked.oldest(id),
        t,
      };
      this.#refused(id, refusal, this.#unacked.answer(id, now, refusal));
    }
  }

  /**
   * One send of `id` refused; `waiting`: its sends still without an answer. Another copy of the id
   * (or the same, sent again) may wait for its answer, or have been accepted (its request runs):
   * then the refusal is moot (copies.ts).
   */
  #refused(id: string, refusal: Refusal, waiting: number): void {
    const stands = this.#copies.refuse(id, waiting);
    // A copy accepted before is to run, and this copy of it was refused: by a restarted Subject
    // over its connection's cap (the request sent again there), say; not when a later send to the
    // same Subject or a successor decides (two copies, the first over the cap and the second
    // accepted, in one flush, say): then it is moot, and sent again it could run twice.
    const accepted = !stands && this.#copies.running(id) && !this.#unacked.has(id) &&
      !this.#copies.refusedEarlier(id, refusal.t);
    // Without resends nothing would send it again: it stands (its callers would wait out their
    // timeout instead).
    if (stands || (accepted && this.#resendAfter === 0)) {
      this.#copies.ended(id);
      const e = new RequestRefusedError(id, String(refusal.reason), String(refusal.message ?? ""));
      this.#unacked.delete(id);
      this.#kept.forget(id);
      const sending = this.#sending.get(id);
      if (sending) sending.refused = e;
      // Answered: an error publication answers it too, by another path and to every
      // subscriber; its callers get the same from the refusal, as their final.
      if (refusal.answered) {
        this.#waiters.resolve(id, refusalPublication(id, refusal.copy, refusal.reason, refusal.message));
      } else this.#waiters.reject(id, e);
    } else if (accepted) {
      // Kept until its final: sent again after `resendAfter` (before, its callers got
      // `overloaded` though it had been accepted).
      const kept = this.#kept.frames(id);
      if (kept) this.#unacked.add(id, kept, performance.now(), false);
    }
    this.#untrack(id);
  }

  /** The rank of the incarnation messages are named for now. */
  #rank(): IncarnationRank {
    const s = this.#kept.incarnation;
    return (s === undefined ? undefined : this.#ranks.get(s)) ?? NO_INCARNATION;
  }

  /** Forgets what `id`'s copies came to once nobody waits to hear it. */
  #untrack(id: string): void {
    if (!this.#waiters.has(id) && !this.#sending.has(id) && !this.#unacked.has(id)) this.#copies.ended(id);
  }

  /**
   * A Subject announced its incarnation. A new one (after another) means the Subject restarted
   * and lost what it held: send again every request still waited for (not paused), and every
   * message not yet acknowledged, at once. The same id, position and step count: a request the
   * new Subject already has is dropped as a duplicate.
   *
   * Messages name the incarnation last announced (`Header.s`), and a Subject drops those that
   * name another. So whenever the announced incarnation changes (a restart; or an announcement
   * of the dead Subject still queued in the IM, read after its successor's, and then the
   * successor's next one a second later), what is kept and unacknowledged is named for it again
   * and the unacknowledged messages are sent at once.
   */
  #onHello(incarnation: string, started?: number): void {
    if (!this.#ranks.has(incarnation)) {
      const heard = this.#ranks.size + 1;
      this.#ranks.set(incarnation, started === undefined ? { heard } : { heard, started });
    }
    const previous = this.#kept.incarnation;
    if (previous === undefined || previous === incarnation) {
      this.#kept.hello(incarnation);
      return;
    }
    // Renamed first, so that what hello() hands back to send again names the new incarnation.
    const to = (frames: readonly Uint8Array[]) => rewritten(frames, { s: incarnation });
    // What was sent named for the incarnation before is answered by nobody: a dead Subject, or
    // its successor, which drops it as stale. All is sent again below.
    for (const [id, refusal] of this.#unacked.restarted()) this.#refused(id, refusal, 0);
    this.#unacked.restamp(to);
    this.#kept.restamp(to);
    const again = this.#kept.hello(incarnation);
    const now = performance.now();
    if (again) {
      this.subjectRestarts++;
      reloadsInterrupted(this.#reloads);
      this.#log.info("Subject restarted ({incarnation}): sending {n} unfinished requests again", {
        incarnation,
        n: again.length,
      });
      for (const [id, frames] of again) {
        if (!this.#unacked.has(id)) this.#unacked.add(id, frames, now, false);
        this.resentAfterRestart++;
      }
    }
    if (this.#dealer.closed) return;
    this.#sendAgain(this.#unacked.due(now));
  }

  /**
   * Sends messages again, except those of an id one of whose messages has values over the
   * Subject's `max_message_size` (a Subject restarted with a smaller one would drop it unread and
   * unanswered, and its caller, told before that it was accepted, waited out its timeout: an
   * outside attack). Such an id ends refused `oversize`, and none of its messages is sent (its
   * callers are told refused, so none may run).
   */
  #sendAgain(messages: readonly (readonly Uint8Array[])[]): void {
    const max = this.#limit;
    const over = new Map<string, number>();
    if (max !== undefined) {
      for (const m of messages) {
        const header = m[2].length > max ? decodeHeader(m[1]) : undefined;
        if (header && typeof header !== "string") over.set(header.id, m[2].length);
      }
    }
    for (const m of messages) {
      if (over.size) {
        const header = decodeHeader(m[1]);
        if (typeof header !== "string" && over.has(header.id)) continue;
      }
      void this.#dealer.send(m).catch(() => {});
    }
    for (const [id, size] of over) {
      const why = `the values are ${size} bytes, over the Subject's max_message_size (${max} bytes)`;
      const e = new RequestRefusedError(id, "oversize", why, "The client");
      this.#copies.ended(id);
      this.#unacked.delete(id);
      this.#kept.forget(id);
      const sending = this.#sending.get(id);
      if (sending) sending.refused = e;
      this.#waiters.reject(id, e);
    }
  }

  #onPublication(frames: Uint8Array[]): void {
    if (frames.length !== 3) return;
    const header = decodeHeader(frames[1]);
    if (typeof header === "string") return;
    if (header.k === "ping") {
      this.#pings.get(header.id)?.();
      return;
    }
    if (header.k === "hello") {
      if (text(frames[0]) !== HELLO_TOPIC) return;
      const values = decodeValues(frames[2]);
      const max = typeof values === "string" ? undefined : values.max_message_size;
      this.#announcedMax = Number.isSafeInteger(max) && (max as number) > 0 ? max as number : undefined;
      const started = typeof values === "string" ? undefined : values.started;
      this.#onHello(
        header.id,
        Number.isSafeInteger(started) && (started as number) > 0 ? started as number : undefined,
      );
      return;
    }
    const p = toPublication(frames);
    if (typeof p === "string") return;
    if (p.resume !== undefined && !isFinal(p)) this.#kept.paused(p.id);
    if (isFinal(p)) this.#onFinal(p);
    for (const s of this.#subs) if (p.topic.startsWith(s.prefix)) s.push(p);
  }

  #onFinal(p: Publication): void {
    // A copy refused before it ran (this client's, or another's with the same id): its sender
    // was told by its refusal (NACK), which answers its callers (copies.ts).
    if (p.refused) return;
    this.#copies.ended(p.id);
    this.#kept.forget(p.id);
    // Accepted (or refused), whatever happened to its acknowledgement: sending it again (to a
    // restarted Subject, which has not seen it) would run it twice.
    this.#unacked.delete(p.id);
    this.#waiters.resolve(p.id, p);
  }

  /** The Subject's `max_message_size`, as configured here or announced (the smaller), if known. */
  get #limit(): number | undefined {
    const [a, b] = [this.#maxMessageSize, this.#announcedMax];
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }

  /**
   * Sends one message to the Subject; requests (not pings) are kept until acknowledged. What
   * one turn of the caller pushes leaves as one batch (PROTOCOL.md); resolves once libzmq has
   * taken it.
   */
  #push(topic: string, header: Header, values: Uint8Array, keep = false): Promise<void> {
    const max = this.#limit;
    if (max !== undefined && values.length > max) {
      // Refused here as the Subject would refuse it (an outside attack: a 20 MB body waited 30 s
      // for a 504, the Subject's socket dropping it with the connection, again at each resend).
      const why = `the values are ${values.length} bytes, over max_message_size (${max} bytes)`;
      throw new RequestRefusedError(header.id, "oversize", why, "The client");
    }
    // Named for the Subject last announced: a copy still queued when it dies is not run again
    // by its successor (PROTOCOL.md, _Subject restarts_).
    // Numbered (`Header.t`), so that a refusal says which send it was for (unacked.ts).
    const to = this.#kept.incarnation;
    const t = header.k === "ping" ? undefined : this.#unacked.nextSend();
    const frames = [
      utf8(topic),
      encodeHeader(t === undefined ? header : to ? { ...header, s: to, t } : { ...header, t }),
      values,
    ];
    if (keep) this.#kept.keep(header.id, frames);
    if (t !== undefined) this.#unacked.add(header.id, frames, performance.now(), t);
    // A batch is one frame, which must be within the Subject's max_message_size.
    const record = recordBytes(frames[0], frames[1], frames[2]);
    if (values.length >= BATCH_FLUSH_BYTES || (max !== undefined && EMPTY_BATCH_BYTES + record > max)) {
      // A large request leaves alone, as three frames (after what is batched before it): in a
      // batch, its one frame would be larger than its values, and values just under the
      // Subject's max_message_size would go over it.
      this.#out.flush();
      return this.#dealer.send(frames);
    }
    if (max !== undefined && this.#out.size + record > max) this.#out.flush();
    return this.#out.addAndWait(0, 0, frames[0], frames[1], frames[2]);
  }

  /** Sends again the messages whose acknowledgement is more than `after` ms late. */
  #resend(after: number): void {
    if (this.#dealer.closed) return;
    const now = performance.now();
    // Refused, and the answers to its other sends never came: the refusal is the answer.
    for (const [id, refusal] of this.#unacked.lost(now, after)) this.#refused(id, refusal, 0);
    const again = this.#unacked.due(now, after);
    this.resent += again.length;
    this.#sendAgain(again);
  }

  /**
   * Subscribes to a topic prefix and resolves once publications on it are known to arrive:
   * a fresh ping subscription, sent after it on the same connection, must see its ping.
   */
  #subscribe(prefix: string): Promise<void> {
    let p = this.#subscribed.get(prefix);
    if (p) return p;
    p = (async () => {
      await this.#sub.subscribe(prefix);
      // A flow's finals: its pause publications too, so that a request paused at an @ASYNC
      // step is not sent again from its start after a Subject restart.
      const flow = /^([^~]+)~~~~$/.exec(prefix)?.[1];
      if (flow) await this.#sub.subscribe(`${flow}~ASYNC~`);
      const nonce = crypto.randomUUID();
      const pingTopic = `~~~~${PING}-${this.#clientId}-${nonce.slice(0, 8)}`;
      await this.#sub.subscribe(pingTopic);
      try {
        const seen = new Promise<void>((r) => this.#pings.set(nonce, r));
        for (let i = 0;; i++) {
          await this.#push(pingTopic, { v: 1, id: nonce, k: "ping" }, utf8("{}"));
          if ((await withTimeout(seen, Math.min(50 * (i + 1), 500))) !== TIMED_OUT) break;
          if (this.#closed) throw new Error("client closed");
        }
      } finally {
        this.#pings.delete(nonce);
        await this.#sub.unsubscribe(pingTopic).catch(() => {});
      }
    })();
    this.#subscribed.set(prefix, p);
    p.catch(() => this.#subscribed.delete(prefix));
    return p;
  }

  /**
   * Pushes a request and resolves with its final publication (`done` or `error`), matched by
   * request id. Error publications resolve too: check `error` on the result.
   *
   * @throws {RequestTimeoutError} when no final publication arrives in time.
   */
  request(flow: string, values: Values = {}, options: RequestOptions = {}): Promise<Publication> {
    return this.#request(flow, values, options.id ?? crypto.randomUUID(), options);
  }

  /**
   * Pushes a request as {@linkcode Client.request} does (kept, and sent again to a restarted
   * Subject, until its final publication or its timeout), and tells apart its two moments:
   * `accepted` resolves with its id once the Subject has acknowledged it (it rejects with a
   * {@linkcode RequestRefusedError} if the Subject refuses it), `final` with its final
   * publication. {@linkcode Client.send} keeps nothing: a Subject that dies before finishing a
   * request sent so loses it. Handle both promises.
   *
   * @example
   * ```ts ignore
   * const { accepted, final } = client.submit("Hello", { name: "Ada" });
   * await accepted; // answer "202 Accepted" now: the request survives a Subject restart
   * console.log((await final).values);
   * ```
   */
  submit(flow: string, values: Values = {}, options: RequestOptions = {}): Submission {
    const id = options.id ?? crypto.randomUUID();
    const pushed = Promise.withResolvers<void>();
    const final = this.#request(flow, values, id, options, pushed.resolve);
    // (pushed once the subscription is made; a final that fails before, a timeout, fails this too)
    const accepted = Promise.race([
      this.#accepted(id, () => Promise.race([pushed.promise, final]).then(() => {})),
      // A final that fails (its timeout: no Subject acknowledged it) fails this too; one that
      // comes settles the acknowledgement's wait.
      final.then(() => new Promise<never>(() => {})),
    ]);
    return { id, accepted, final };
  }

  async #request(
    flow: string,
    values: Values,
    id: string,
    options: RequestOptions,
    onPushed?: () => void,
  ): Promise<Publication> {
    const ms = options.timeout ?? this.#timeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    let waiter!: Waiter;
    const result = new Promise<Publication>((resolve, reject) => {
      waiter = { resolve, reject };
      timer = setTimeout(() => reject(new RequestTimeoutError(id, ms)), ms);
      if (options.signal) {
        onAbort = () => reject(options.signal!.reason);
        if (options.signal.aborted) onAbort();
        options.signal.addEventListener("abort", onAbort, { once: true });
      }
    });
    try {
      // The timeout covers the subscription handshake too (no deployment: no ping comes back).
      await Promise.race([this.#subscribe(`${flow}~~~~`), result]);
      // Waits for a final from here, in the same turn as the push: a final that came before was
      // an earlier copy's (its request ended, or its copy was refused), not this one's.
      this.#waiters.add(id, waiter);
      await this.#push(
        this.#requestTopic(flow, options.key),
        options.keep ? { v: 1, id, keep: 1 } : { v: 1, id },
        utf8(JSON.stringify(values)),
        true,
      );
      onPushed?.();
      return await result;
    } finally {
      clearTimeout(timer);
      this.#waiters.remove(id, waiter);
      if (!this.#waiters.has(id)) this.#kept.forget(id);
      this.#untrack(id);
      if (onAbort) options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Resumes a flow paused at an `@ASYNC` step, with `values` merged into its values, and
   * resolves with the final publication of the original request (or a `bad_resume` error
   * publication when the token is unknown, expired or used by another resume). The resume is
   * kept, and sent again to a restarted Subject, until that final or the timeout: if the Subject
   * dies while the flow runs, the same resume takes the token again and the flow runs again from
   * its `@ASYNC` step. Called again with the `id` of a resume whose flow has ended, it runs nothing
   * and waits out its timeout (the final was published once, to the first call); calls with one
   * `id` waiting at once are copies of one resume, and each gets the final.
   */
  async resume(
    token: string,
    values: Values = {},
    options: Pick<RequestOptions, "timeout" | "signal" | "id"> = {},
  ): Promise<Publication> {
    const named = parseToken(token);
    const flow = named?.flow ?? "";
    const resumeId = options.id ?? crypto.randomUUID();
    const ms = options.timeout ?? this.#timeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // An error under the resume's own id (`bad_resume`, …) ends the wait. The original request's
    // final counts only once the Subject said this resume took the token (`RESUMED`, on the
    // DEALER): it may arrive first, and then waits for that word.
    const ids = named ? [resumeId, named.id] : [resumeId];
    let own!: Waiter;
    let original!: Waiter;
    let took!: () => void;
    const result = new Promise<Publication>((resolve, reject) => {
      let won = false;
      let final: Publication | undefined;
      own = { resolve, reject };
      original = {
        resolve: (p) => won ? resolve(p) : final = p,
        reject,
      };
      this.#waiters.add(resumeId, own);
      if (named) this.#waiters.add(named.id, original);
      // Copies of one resume (two calls with its id) are one: the word that it took the token
      // counts for each (before, the second call's wait replaced the first's, which then waited
      // out its timeout).
      took = () => {
        won = true;
        if (final) resolve(final);
      };
      const calls = this.#resumes.get(resumeId);
      if (calls) calls.add(took);
      else this.#resumes.set(resumeId, new Set([took]));
      timer = setTimeout(() => reject(new RequestTimeoutError(resumeId, ms)), ms);
      options.signal?.addEventListener("abort", () => reject(options.signal!.reason), { once: true });
    });
    try {
      await Promise.race([this.#subscribe(`${flow}~~~~`), result]);
      // Kept, and sent again to a restarted Subject, like a request: if the Subject dies while the
      // flow it resumed runs, the same resume takes the token again (PROTOCOL.md, _Subject restarts_).
      const header = { v: 1, id: resumeId, resume: token };
      await this.#push(`${flow}~~~~`, header, utf8(JSON.stringify(values)), true);
      return await result;
    } finally {
      clearTimeout(timer);
      const calls = this.#resumes.get(resumeId);
      if (calls?.delete(took) && calls.size === 0) this.#resumes.delete(resumeId);
      this.#waiters.remove(resumeId, own);
      if (named) this.#waiters.remove(named.id, original);
      for (const id of ids) {
        if (!this.#waiters.has(id)) this.#kept.forget(id); // a request() that ended while this waited
        this.#untrack(id); // the resume's id is acknowledged, and its final comes under the request's
      }
    }
  }

  /**
   * Sends a resume without waiting for the flow to finish; resolves once accepted. It keeps
   * nothing, as {@linkcode Client.send}: a Subject that dies while the flow runs ends it with
   * `timeout` after `async_timeout`. Use {@linkcode Client.resume} to survive that.
   */
  async sendResume(
    token: string,
    values: Values = {},
    options: Pick<RequestOptions, "id"> = {},
  ): Promise<string> {
    const id = options.id ?? crypto.randomUUID();
    return await this.#accepted(
      id,
      () =>
        this.#push(
          `${parseToken(token)?.flow ?? ""}~~~~`,
          { v: 1, id, resume: token },
          utf8(JSON.stringify(values)),
        ),
    );
  }

  #requestTopic(flow: string, key?: string): string {
    const k = key ? parseActionKey(key) : { sender: "", context: "", decorator: "", action: "" };
    return formatTopic(flow, k);
  }

  /**
   * Pushes a request without waiting for its result; resolves with its id once the Subject
   * has accepted it.
   */
  async send(
    flow: string,
    values: Values = {},
    options: Pick<RequestOptions, "key" | "id"> = {},
  ): Promise<string> {
    const id = options.id ?? crypto.randomUUID();
    return await this.#accepted(
      id,
      () => this.#push(this.#requestTopic(flow, options.key), { v: 1, id }, utf8(JSON.stringify(values))),
    );
  }

  /**
   * Sends with `push` and resolves with `id` once accepted; rejects if the Subject refuses it.
   * Copies sent with one id wait on one entry (acknowledgements name ids, not copies), until
   * every copy of the id has its answer: accepted if any copy was (the request runs), refused
   * only if none was (copies.ts). (Each had its own entry once, deleted by the first to end: the
   * others took the refusals that came after for acceptances.)
   */
  async #accepted(id: string, push: () => Promise<void>): Promise<string> {
    let sending = this.#sending.get(id);
    if (!sending) this.#sending.set(id, sending = { waiting: 0 });
    sending.waiting++;
    try {
      await push();
      await this.#unacked.settled(id);
      if (sending.refused) throw sending.refused;
      return id;
    } finally {
      if (--sending.waiting === 0 && this.#sending.get(id) === sending) this.#sending.delete(id);
      this.#untrack(id);
    }
  }

  /**
   * Publications whose topic starts with `prefix`, as an async iterable. Subscribe by flow
   * with `Flow~`, by flow and decorator with `Flow~PUBLISH~`, or to everything with `""`;
   * see {@linkcode subscriptionPrefix}. Resolves once the subscription is active.
   */
  async subscribe(
    prefix: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<AsyncIterableIterator<Publication>> {
    const stream: PublicationStream = new PublicationStream(prefix, () => this.#subs.delete(stream));
    this.#subs.add(stream);
    await this.#subscribe(prefix);
    options.signal?.addEventListener("abort", stream.end, { once: true });
    return stream;
  }

  /**
   * Handles a `@PUBLISH` step: runs `handler` for each publication of a step matching `key`
   * (its decorator taken as PUBLISH) and pushes the continuation of the flow back to the
   * Subject. With `flow`, the subscription is a ZeroMQ prefix of that flow's step topic;
   * without it, every publication is received and filtered here. A handler that throws
   * produces a `handler_error` publication for the request. Resolves once active.
   */
  async handle(key: string, handler: Handler, options: { flow?: string } = {}): Promise<void> {
    const parsed = parseActionKey(key);
    const k: ActionKey = { ...parsed, decorator: PUBLISH };
    const prefix = options.flow ? formatTopic(options.flow, k) : "";
    const sub: Subscription = {
      prefix,
      push: (p) => {
        if (!takesPublication(k, p)) return;
        const run = runPublishHandler(handler, p)
          .then(({ header, values }) => this.#push(p.topic, header, utf8(JSON.stringify(values))))
          .finally(() => this.#handlers.delete(run));
        this.#handlers.add(run);
      },
    };
    this.#subs.add(sub);
    await this.#subscribe(prefix);
    this.#log.debug("Handling {key}", { key: formatActionKey(k) });
  }

  /** Rolls out new flow and mapping files without a restart (see `reload.ts`); resolves with the new version. */
  reload(files: readonly (string | SourceFile)[], options: ReloadOptions): Promise<number> {
    return sendReload(files, options, this.#reloads, (frames) => this.#dealer.send(frames));
  }

  /**
   * Waits until every handler has finished and every message sent has been accepted by the
   * Subject; the client stays open.
   */
  async flush(): Promise<void> {
    while (this.#handlers.size) await Promise.allSettled([...this.#handlers]);
    await this.#unacked.settled();
  }

  /**
   * Finishes accepted work (see {@linkcode Client.flush}, up to 5 s), then closes: a service
   * that exits right after its last reply loses nothing.
   */
  async drain(): Promise<void> {
    await withTimeout(this.flush(), 5000);
    await this.close();
  }

  /**
   * Closes at once: messages not yet accepted may be lost, pending `request()` calls reject.
   * Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#resendTimer);
      this.#waiters.rejectAll(new Error("client closed"));
      for (const s of [...this.#subs]) s.end?.();
      this.#subs.clear();
      if (this.#ownsReactor) await this.#reactor.close();
      else await Promise.all([this.#dealer.close(), this.#sub.close()]);
    })().finally(() => this.#done.resolve());
    return this.#closed;
  }

  /** Resolves once closed (by {@linkcode Client.close}, {@linkcode Client.drain} or disposal). */
  closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Same as {@linkcode Client.drain}: disposal at the end of a scope loses nothing sent. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.drain();
  }
}

/** A message as kept, with `fields` written into its header (`s`, `t`: see `Header`). */
function rewritten(frames: readonly Uint8Array[], fields: Partial<Header>): Uint8Array[] {
  const header = decodeHeader(frames[1]);
  if (typeof header === "string") return [...frames];
  return [frames[0], encodeHeader({ ...header, ...fields }), frames[2]];
}

/**
 * The error publication that answers a refused copy (`errorFrames`, as the Subject makes it: the
 * values sent when they are a JSON object), made from its refusal and the copy as sent.
 */
function refusalPublication(
  id: string,
  copy: readonly Uint8Array[] | undefined,
  reason: unknown,
  message: unknown,
): Publication {
  const topic = copy ? text(copy[0]) : "";
  const flow = topic.slice(0, Math.max(0, topic.indexOf("~")));
  const values = copy && typeof decodeValues(copy[2]) !== "string" ? copy[2] : utf8("{}");
  const code = String(reason) as ErrorCode;
  const p = toPublication(errorFrames(flow, { id }, code, String(message ?? ""), values, true));
  if (typeof p !== "string") return p;
  // (values the Subject took and this cannot read back: none, as in its own publication then)
  return toPublication(
    errorFrames(flow, { id }, code, String(message ?? ""), utf8("{}"), true),
  ) as Publication;
}
