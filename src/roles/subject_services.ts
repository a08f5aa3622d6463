/**
 * The Subject's side towards services: it reads their messages (a request, or a batch of them),
 * lets the intake (`intake.ts`) decide what each comes to, hands the Subject what to route,
 * resume or publish, and sends each service connection its acknowledgements and refusals
 * (`ACK`, `NACK`, `RESUMED`; PROTOCOL.md, _Acknowledgements_).
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { BatchView } from "../wire/batch.ts";
import { CONTROL_FRAMES, isControl } from "../wire/control.ts";
import { decodeHeader, type Header, sendNumber, utf8 } from "../wire/protocol.ts";
import type { ReactorSocket } from "../zmq/reactor.ts";
import { AckBook, type AckList, type ErrorSpec, Intake } from "./intake.ts";
import { METRICS_TOPIC } from "./metrics.ts";
import { ConnectionQuota } from "./connection_quota.ts";
import type { RequestTable } from "./request_table.ts";

/** What the service side asks of the Subject. */
export interface ServiceSideHost {
  /** Routes request `id` at `position` of `flow`, after `n` steps, with `values`. */
  route(flow: Flow, position: number, id: string, n: number, values: Uint8Array): void;
  /**
   * Resumes a paused flow (a resume message on a topic of flow `topicFlow`, from service
   * connection `connection`); returns the id of the request whose token it took, if it took one.
   * A flow that runs again is admitted against `connection`'s cap (`quota.admit`) before it is
   * dispatched.
   */
  resume(topicFlow: string, header: Header, values: Uint8Array, connection: string): string | undefined;
  /** Publishes a ping as it came, after the Subject's announcement. */
  ping(topic: Uint8Array, header: Uint8Array, values: Uint8Array): void;
  /** Makes an error publication. */
  errorPublish(error: ErrorSpec): void;
  /** Counts (and first warns of) a message dropped for `reason`. */
  drop(reason: string, detail?: string): void;
  /** Something waits to be sent at the end of the turn. */
  scheduleFlush(): void;
  /** A new request `id` was accepted (for its end-to-end latency); `keep`: it asked for its final to be kept. */
  accepted(id: string, keep: boolean): void;
  /**
   * A copy of new request `id` came after the request (dropped as a duplicate) on a topic of
   * `flow`; `keep`: the copy asked for its final to be kept.
   */
  duplicate(id: string, keep: boolean, flow: string): void;
  /** A `RELOAD` from the service with routing id `idFrame` (see `subject_reload.ts`). */
  reload(idFrame: Uint8Array, body: Uint8Array): void;
}

/** Options of {@linkcode ServiceSide}. */
export interface ServiceSideOptions {
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** The flows a message is routed with (see `IntakeOptions.flowsFor`). */
  readonly flowsFor?: (header: Header | undefined) => ReadonlyMap<string, Flow>;
  /** See `SubjectOptions.duplicateWindow`. */
  readonly duplicateWindow: number;
  /** Largest accepted frame in bytes (for the refusal of a larger one). */
  readonly maxMessageSize?: number;
  /** See `SubjectOptions.maxInFlightPerConnection`. */
  readonly maxInFlightPerConnection: number;
  /** The Subject's incarnation (see `IntakeOptions.incarnation`). */
  readonly incarnation?: string;
  /** Whether a final of a request is kept (see `IntakeOptions.kept`). */
  readonly kept?: (id: string) => boolean;
  /** Where the cap keeps each request's count: the Subject's table of requests in flight. */
  readonly requests?: RequestTable;
}

const { ACK, NACK, RESUMED } = CONTROL_FRAMES;
const METRICS_TOPIC_FRAME = utf8(METRICS_TOPIC).slice();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The Subject's services, on its service ROUTER socket. */
export class ServiceSide {
  /** Decides what each request comes to. */
  readonly intake: Intake;
  /** The requests each connection has in flight (released by the Subject: final publication or pause). */
  readonly quota: ConnectionQuota;
  /** While true, requests are answered with an `overloaded` error (the Subject is draining). */
  draining = false;
  readonly #sock: ReactorSocket;
  readonly #host: ServiceSideHost;
  readonly #acks: AckBook;
  readonly #maxMessageSize: number | undefined;
  readonly #each = (ack: AckList, frames: readonly Uint8Array[]) => this.#onRequest(ack, frames);
  #received = 0;

  /** The service side on `sock` (bound). */
  constructor(sock: ReactorSocket, host: ServiceSideHost, options: ServiceSideOptions) {
    this.#sock = sock;
    this.#host = host;
    this.#acks = new AckBook(() => host.scheduleFlush());
    this.#maxMessageSize = options.maxMessageSize;
    this.intake = new Intake(options);
    this.quota = new ConnectionQuota({ limit: options.maxInFlightPerConnection, table: options.requests });
    sock.raw.onOversize = (f) => this.#onOversize(f);
    sock.onMessage((f) => this.#onMessage(f));
  }

  /** Requests received from services (including continuations and pings, not the roles' metrics). */
  get received(): number {
    return this.#received;
  }

  /** Sends the acknowledgements owed if they are due (at most once per `ACK_EVERY_MS` while busy). */
  flushIfDue(): void {
    if (this.#acks.due()) this.flush();
  }

  /** Sends every acknowledgement and refusal owed. */
  flush(): void {
    if (this.#sock.closed) return; // a flush scheduled before the Subject closed
    const send = (frames: Uint8Array[]) => {
      if (!this.#sock.sendNow(frames)) void this.#sock.send(frames).catch(() => {});
    };
    for (const { idFrame, ids, nacks, resumed } of this.#acks.take()) {
      // (no ids: a message whose requests were all dropped before they were read)
      if (ids.length) send([idFrame, ACK, utf8(JSON.stringify(ids))]);
      if (nacks) send([idFrame, NACK, utf8(JSON.stringify(nacks))]);
      if (resumed) send([idFrame, RESUMED, utf8(JSON.stringify(resumed))]);
    }
  }

  #onMessage(frames: Uint8Array[]): void {
    // [identity, topic, header, values], or [identity, batch of (topic, header, values)]
    if (frames.length === 2) {
      const view = BatchView.of(frames[1]);
      if (!view) {
        this.#received++;
        return this.#host.drop("bad_batch", "service message");
      }
      const ack = this.#acks.list(frames[0]);
      for (let i = 0; i < view.count; i++) this.#each(ack, view.frames(i));
      return;
    }
    if (frames.length === 3 && isControl(frames[1], "RELOAD")) return this.#host.reload(frames[0], frames[2]);
    if (frames.length !== 4) {
      this.#received++;
      // Answered when a header with an id can be read where it belongs (the second frame).
      const h = frames.length > 2 ? decodeHeader(frames[2]) : undefined;
      if (h && typeof h !== "string") {
        const why = `${frames.length - 1} frames, not 3`;
        this.#acks.refuse(this.#acks.list(frames[0]), h.id, "frame_count", why, sendNumber(h));
      }
      return this.#host.drop("frame_count", `${frames.length - 1} frames after the identity`);
    }
    this.#onRequest(this.#acks.list(frames[0]), [frames[1], frames[2], frames[3]]);
  }

  #onRequest(ack: AckList, frames: readonly Uint8Array[]): void {
    const a = this.intake.admit(this.#acks, ack, frames, this.draining);
    if (a.do !== "ping" || !sameBytes(frames[0], METRICS_TOPIC_FRAME)) this.#received++;
    switch (a.do) {
      case "drop":
        if (a.request !== undefined) this.#host.duplicate(a.request, a.keep === true, a.flow ?? "");
        return this.#host.drop(a.reason, a.detail);
      case "error":
        return this.#host.errorPublish(a.error);
      case "ping":
        return this.#host.ping(frames[0], frames[1], frames[2]);
      case "resume": {
        // A resumed flow counts against its resume's connection, as a new request does: over the
        // cap the token is left unused, and the resume is answered `overloaded` (send it again).
        if (!this.quota.room(ack.key)) return this.#overCap(a.flow, a.header, frames[2]);
        const request = this.#host.resume(a.flow, a.header, frames[2], ack.key);
        if (request !== undefined) this.#acks.resumed(ack, a.header.id, request);
        return;
      }
      case "route":
        // Counted against its connection's cap unless its request is already in flight (a
        // continuation): a message with a position may also start a request (PROTOCOL.md), and
        // went free of the cap before.
        if (!this.quota.admit(ack.key, a.header.id)) return this.#overCap(a.flow.name, a.header, frames[2]);
        if (a.header.pos === undefined && a.header.k === undefined) {
          this.#host.accepted(a.header.id, a.header.keep === 1);
        }
        return this.#host.route(a.flow, a.position, a.header.id, a.header.n ?? 0, frames[2]);
    }
  }

  /**
   * A new request (or a resume) over its connection's cap: refused (`NACK`, `answered`) and
   * answered `overloaded`, as while draining, and forgotten by the duplicate window: sent again,
   * it runs.
   */
  #overCap(flow: string, header: Header, values: Uint8Array): void {
    const message = `this connection has ${this.quota.limit} requests in flight ` +
      "(max_in_flight_per_connection): send again once some have ended";
    this.intake.refused("overloaded", message);
    this.#host.errorPublish({ flow, header, values, code: "overloaded", message, refusal: true });
  }

  /** A message from a service had a frame over max_message_size: refuse it if its header can be read. */
  #onOversize(frames: (Uint8Array | null)[]): void {
    const [idFrame, , headerFrame] = frames;
    if (!idFrame || !headerFrame || frames.length !== 4) return;
    const h = decodeHeader(headerFrame);
    if (typeof h === "string") return;
    const why = `a frame is over max_message_size (${this.#maxMessageSize} bytes)`;
    this.#acks.refuse(this.#acks.list(idFrame.slice()), h.id, "oversize", why, sendNumber(h));
  }
}
