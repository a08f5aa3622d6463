/**
 * The Subject's intake: what a service's message comes to (refused, dropped as a duplicate, an
 * error publication, a ping, a resume, or a request to route and where), the acknowledgements
 * and refusals owed to each service connection, and when to stop reading (back-pressure). Pure
 * decisions: no sockets; the Subject carries them out.
 *
 * @example
 * ```ts
 * import { AckBook, Intake } from "./intake.ts";
 * import { parseFlowFile } from "../topic/flow_file.ts";
 * import { utf8 } from "../wire/protocol.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\n??done\n", "f.ini").flows[0];
 * const intake = new Intake({ flows: new Map([["F", flow]]), duplicateWindow: 100 });
 * const acks = new AckBook(() => {});
 * const ack = acks.list(utf8("service-1"));
 * const request = [utf8("F~~~F~Push"), utf8('{"v":1,"id":"r1"}'), utf8("{}")];
 * const first = intake.admit(acks, ack, request, false), again = intake.admit(acks, ack, request, false);
 * console.log(first.do, again.do, ack.ids); // route drop [ "r1", "r1" ]: a duplicate is acknowledged, and dropped
 * ```
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { type Placement, placeRequest } from "../topic/flow_step.ts";
import {
  decodeHeader,
  type ErrorCode,
  type Header,
  parseTopic,
  routingKey,
  sendNumber,
  text,
  type TopicFields,
  TopicMemo,
} from "../wire/protocol.ts";
import { RecentKeys } from "./recent_keys.ts";

/** One refusal in a `NACK` (PROTOCOL.md, _Acknowledgements_). */
export interface Nack {
  readonly id: string;
  /** The refused message's send number (`Header.t`), echoed when it carried one. */
  readonly t?: number;
  readonly reason: string;
  readonly message: string;
  readonly answered?: true;
}

/** What one service connection is owed at the end of a turn. */
export interface AckList {
  /** Its routing id. */
  readonly idFrame: Uint8Array;
  /** Its routing id as a key (`routingKey`: the connection's key). */
  readonly key: string;
  /** Ids of the messages taken (`ACK`). */
  readonly ids: string[];
  /**
   * Messages refused (`NACK`), with why (PROTOCOL.md, _Acknowledgements_); `answered` when an error
   * publication answers the message too (a request refused before it ran: `overloaded`, ...).
   */
  nacks?: Nack[];
  /** Resume messages that took their token, with the request each continues (`RESUMED`). */
  resumed?: { id: string; request: string }[];
}

/** While busy, acknowledgements go at most this often, in ms (at once when the Subject is idle). */
export const ACK_EVERY_MS = 1;

/** Acknowledgements and refusals owed, by service connection, until the end of the turn. */
export class AckBook {
  #acks = new Map<string, AckList>();
  #sentAt = 0;
  readonly #changed: () => void;
  readonly #now: () => number;

  /** `changed` is called whenever something becomes owed; `now` is the clock, in ms. */
  constructor(changed: () => void, now: () => number = () => performance.now()) {
    this.#changed = changed;
    this.#now = now;
  }

  /** Connections owed something. */
  get size(): number {
    return this.#acks.size;
  }

  /** What the connection with routing id `idFrame` is owed. */
  list(idFrame: Uint8Array): AckList {
    const k = routingKey(idFrame);
    let a = this.#acks.get(k);
    if (!a) this.#acks.set(k, a = { idFrame, key: k, ids: [] });
    return a;
  }

  /** Message `id` was taken. */
  accept(ack: AckList, id: string): void {
    ack.ids.push(id);
    this.#changed();
  }

  /** Refuses message `id`: its service is told (NACK) instead of waiting for an ACK that never comes. */
  refuse(ack: AckList, id: string, reason: string, message: string, t?: number): void {
    (ack.nacks ??= []).push(t === undefined ? { id, reason, message } : { id, t, reason, message });
    this.#changed();
  }

  /**
   * Message `id`, taken in this turn ({@linkcode AckBook.accept}), is refused after all, and an
   * error publication answers it: its acknowledgement becomes a refusal marked `answered`, so that
   * its sender stops sending it and does not take it for accepted.
   */
  unaccept(ack: AckList, id: string, reason: string, message: string, t?: number): void {
    const i = ack.ids.lastIndexOf(id);
    if (i >= 0) ack.ids.splice(i, 1);
    (ack.nacks ??= []).push(
      t === undefined ? { id, reason, message, answered: true } : { id, t, reason, message, answered: true },
    );
    this.#changed();
  }

  /** Resume message `id` took its token: it continues request `request`. */
  resumed(ack: AckList, id: string, request: string): void {
    (ack.resumed ??= []).push({ id, request });
  }

  /** True if something is owed and the last sending was {@linkcode ACK_EVERY_MS} ago or more. */
  due(): boolean {
    return this.#acks.size > 0 && this.#now() - this.#sentAt >= ACK_EVERY_MS;
  }

  /** Takes everything owed, to send now. */
  take(): AckList[] {
    if (!this.#acks.size) return [];
    this.#sentAt = this.#now();
    const acks = [...this.#acks.values()];
    this.#acks = new Map();
    return acks;
  }
}

/** An error publication to make (with `errorFrames`, `wire/protocol.ts`). */
export interface ErrorSpec {
  /** The flow of the topic it goes on. */
  readonly flow: string;
  /** The request it ends. */
  readonly header: Pick<Header, "id" | "pos" | "n">;
  /** The values to carry (left out unless a JSON object), if any. */
  readonly values: Uint8Array | undefined;
  readonly code: ErrorCode;
  readonly message: string;
  /**
   * An answer to a message that started no request (a new request or a resume refused before
   * anything ran, or a copy's answer): it ends no request, so one running under the same id goes
   * on, its connection's count and its kept final untouched.
   */
  readonly refusal?: boolean;
  /**
   * With `refusal`: the message was acknowledged (a copy taken as a duplicate), not refused, so
   * its publication is not marked `refused` (a `forgotten` answer).
   */
  readonly acknowledged?: boolean;
}

/** What a request comes to. */
export type Admission =
  /** Dropped (and refused, when its id could be read), counted under `reason`. */
  | {
    readonly do: "drop";
    readonly reason: string;
    readonly detail?: string;
    /** On a duplicate of a new request (no position, not a resume): its id. */
    readonly request?: string;
    /** On such a duplicate: whether the copy asked for its final to be kept (`keep`). */
    readonly keep?: boolean;
    /** On such a duplicate: the flow of the topic it came on. */
    readonly flow?: string;
  }
  /** Answered by an error publication. */
  | { readonly do: "error"; readonly error: ErrorSpec }
  /** A ping: published as it came, after the Subject's announcement. */
  | { readonly do: "ping" }
  /** A resume, whose errors go on flow `flow` (that of the topic it came on). */
  | { readonly do: "resume"; readonly flow: string; readonly header: Header }
  /** A request to route at `position` of `flow`. */
  | { readonly do: "route"; readonly flow: Flow; readonly position: number; readonly header: Header };

/** Options of {@linkcode Intake}. */
export interface IntakeOptions {
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Recent requests remembered to drop duplicates; 0 turns this off. */
  readonly duplicateWindow: number;
  /**
   * This Subject's incarnation: a message that names another one (`Header.s`) was sent to a
   * Subject that has since died, and is dropped (`stale`), neither acknowledged nor refused.
   */
  readonly incarnation?: string;
  /**
   * The flows a message is routed with (a continuation: its request's configuration version's,
   * see `config_versions.ts`; `undefined`: the current ones). @default {() => flows}
   */
  readonly flowsFor?: (header: Header | undefined) => ReadonlyMap<string, Flow>;
  /**
   * Whether a final (or pause) of request `id` is kept (`final_replay.ts`): a new request sent
   * with `keep` whose id has one is a copy of a request that has run, dropped as a duplicate
   * (and answered with what was kept) even when the duplicate window does not remember it (an
   * earlier Subject ran it). @default {() => false}
   */
  readonly kept?: (id: string) => boolean;
}

/** What the Subject works out once per request topic. */
interface TopicInfo {
  readonly fields: TopicFields;
  /** Why the topic cannot be routed (a field with a character no key may have), if so. */
  readonly invalid: string | undefined;
  /** Undefined for an unknown flow. */
  readonly flow: Flow | undefined;
  /** Where a request without a position starts (with a known flow). */
  readonly place: Placement | undefined;
}

/** The characters of a topic's key fields; a flow name may also have `.`. */
const KEY_FIELD = /^[A-Za-z0-9_^-]*$/;
const FLOW_NAME = /^[A-Za-z0-9_.^-]*$/;

/** The error codes of PROTOCOL.md, the only ones a service's error continuation may carry. */
const ERROR_CODES = new Set<string>([
  "unknown_flow",
  "no_step",
  "no_handler",
  "handler_error",
  "timeout",
  "step_limit",
  "bad_resume",
  "bad_request",
  "overloaded",
  "poisoned",
  "forgotten",
]);

/** Decides what each request from a service comes to. */
export class Intake {
  readonly #flowsFor: (header: Header | undefined) => ReadonlyMap<string, Flow>;
  readonly #window: number;
  readonly #incarnation: string | undefined;
  readonly #kept?: (id: string) => boolean;
  /** Keys of recent requests, for dropping duplicates (made when the window is not 0). */
  #recent?: RecentKeys;
  /** Whether the message `admit` looks at now was remembered by the window (see `refused`). */
  #took = false;
  /**
   * The message `admit` looks at now, as acknowledged (see `refused`): its book, list and id, kept
   * in fields rather than an object made for every request (the Subject's hot path).
   */
  #takenBook?: AckBook;
  #takenList?: AckList;
  #takenId = "";
  #takenT: number | undefined;
  /**
   * A request topic's fields, flow and, for a request without a position, where it starts: all
   * three depend on the topic alone, so they are worked out once per topic text.
   */
  readonly #memos = new WeakMap<ReadonlyMap<string, Flow>, TopicMemo<TopicInfo | undefined>>();

  /** The memo of a topic's fields, flow and start among `flows`. */
  #topicInfo(flows: ReadonlyMap<string, Flow>): TopicMemo<TopicInfo | undefined> {
    let m = this.#memos.get(flows);
    if (!m) this.#memos.set(flows, m = new TopicMemo((topic) => topicInfo(topic, flows)));
    return m;
  }

  /** An intake for `options.flows`. */
  constructor(options: IntakeOptions) {
    const flows = options.flows;
    this.#flowsFor = options.flowsFor ?? (() => flows);
    this.#window = options.duplicateWindow;
    this.#incarnation = options.incarnation;
    this.#kept = options.kept;
  }

  /** The flow of a step topic this Subject routes, if known. */
  flowOf(topic: string): Flow | undefined {
    return this.#topicInfo(this.#flowsFor(undefined)).get(topic)?.flow;
  }

  /** The flow name of a topic, if it has five fields. */
  flowName(topic: string): string | undefined {
    return this.#topicInfo(this.#flowsFor(undefined)).get(topic)?.fields.flow;
  }

  /**
   * What request `frames` (topic, header, values) comes to. The request is acknowledged or refused
   * on `ack` through `acks` (a duplicate is acknowledged, and dropped); while `draining`, a request
   * is answered with an `overloaded` error.
   */
  admit(acks: AckBook, ack: AckList, frames: readonly Uint8Array[], draining: boolean): Admission {
    this.#takenBook = undefined;
    const header = decodeHeader(frames[1]);
    if (typeof header === "string") {
      const id = readableId(frames[1]);
      if (id !== undefined) {
        acks.refuse(
          ack,
          id,
          header,
          "the header is not valid: v must be 1, pos and n whole numbers from 0, s a string of at most 64 characters",
        );
      }
      return { do: "drop", reason: header };
    }
    if (header.s !== undefined && this.#incarnation !== undefined && header.s !== this.#incarnation) {
      // Its sender has the request still (kept until its final publication) and sends it again,
      // naming this incarnation, once it sees this Subject announced. Acknowledged, the copy
      // would settle the new one's wait; refused, it would fail the request.
      return { do: "drop", reason: "stale", detail: `sent to Subject ${JSON.stringify(header.s)}` };
    }
    const t = this.#topicInfo(this.#flowsFor(header)).getBytes(frames[0]);
    if (!t || t.invalid) {
      const why = t?.invalid ?? "the topic is not five fields joined by ~";
      acks.refuse(ack, header.id, "bad_topic", why, sendNumber(header));
      return { do: "drop", reason: "bad_topic", detail: JSON.stringify(text(frames[0]).slice(0, 80)) };
    }
    const fields = t.fields;
    if (header.k === "ping" && !fields.action.startsWith("ping")) {
      acks.refuse(ack, header.id, "bad_topic", "a ping's action must start with ping", sendNumber(header));
      return { do: "drop", reason: "bad_topic", detail: "a ping's action must start with ping" };
    }
    acks.accept(ack, header.id);
    const isNew = header.pos === undefined && header.resume === undefined;
    this.#took = false;
    if (
      header.k !== "ping" &&
      ((this.#window > 0 && this.#isDuplicate(header)) ||
        (isNew && header.keep === 1 && this.#kept?.(header.id)))
    ) {
      return {
        do: "drop",
        reason: "duplicate",
        detail: `request ${JSON.stringify(header.id).slice(0, 60)} seen before`,
        request: isNew ? header.id : undefined,
        keep: isNew && header.keep === 1,
        flow: fields.flow,
      };
    }
    // Not a duplicate: it may yet be refused (`refused`), its acknowledgement with it.
    this.#takenBook = acks;
    this.#takenList = ack;
    this.#takenId = header.id;
    this.#takenT = sendNumber(header);
    const values = frames[2];
    if (draining) {
      return this.#refuse(header, fields.flow, values, "overloaded", "the Subject is shutting down");
    }
    if (header.k === "ping") return { do: "ping" };
    // A resume names its flow in its token; its errors go on the flow of the topic it came on.
    if (header.resume !== undefined) return { do: "resume", flow: fields.flow, header };
    const flow = t.flow;
    if (!flow) {
      return this.#refuse(header, fields.flow, values, "unknown_flow", `unknown flow "${fields.flow}"`);
    }
    if (header.error) {
      // A service's handler for a @PUBLISH step failed: publish the error for the request, with
      // one of the documented codes (anything else is a handler_error).
      const e = header.error as unknown;
      const o = e !== null && typeof e === "object" ? e as { code?: unknown; message?: unknown } : {};
      const code = typeof o.code === "string" && ERROR_CODES.has(o.code)
        ? o.code as ErrorCode
        : "handler_error";
      const message = typeof e === "string" ? e : typeof o.message === "string" ? o.message : "";
      return this.#refuse(header, flow.name, values, code, message);
    }
    const place = header.pos === undefined ? t.place! : placeRequest(flow, fields, header.pos);
    if ("error" in place) return this.#refuse(header, flow.name, values, "no_step", place.error);
    return { do: "route", flow, position: place.position, header };
  }

  /**
   * An error answer to `header`'s message. A new request or a resume (no position) answered here
   * ran nothing: it is a refusal (`ErrorSpec.refusal`), and sent again it is no duplicate (it is
   * looked at again: a flow a reload added since runs it).
   */
  #refuse(header: Header, flow: string, values: Uint8Array, code: ErrorCode, message: string): Admission {
    if (header.pos !== undefined) return error(flow, header, values, code, message);
    this.refused(code, message);
    return { do: "error", error: { flow, header, values, code, message, refusal: true } };
  }

  /**
   * The request (or resume) `admit` just took is refused after all, with an error publication of
   * `code` (over its connection's cap: `overloaded`, say): it is forgotten by the duplicate window,
   * so that it runs when sent again with its id, and its sender gets a refusal (`NACK`, marked
   * `answered`) instead of an acknowledgement: an acknowledged request is one that will run.
   */
  refused(code: ErrorCode, message: string): void {
    if (this.#took) this.#recent!.forgetLast();
    this.#took = false;
    const book = this.#takenBook;
    this.#takenBook = undefined;
    book?.unaccept(this.#takenList!, this.#takenId, code, message, this.#takenT);
  }

  /** True if a message with this header was seen among the last `duplicateWindow`. */
  #isDuplicate(h: Header): boolean {
    this.#recent ??= new RecentKeys(this.#window);
    const resume = h.resume === undefined || typeof h.resume === "string" ? h.resume : String(h.resume);
    const seen = this.#recent.seen(h.id, h.pos, h.n, resume);
    this.#took = !seen;
    return seen;
  }
}

function error(
  flow: string,
  header: Pick<Header, "id" | "pos" | "n">,
  values: Uint8Array | undefined,
  code: ErrorCode,
  message: string,
): Admission {
  return { do: "error", error: { flow, header, values, code, message } };
}

/** What the Subject holds, for back-pressure. */
export interface Load {
  /** Steps waiting for worker credit. */
  readonly queued: number;
  /** Bytes of publications the Integration Manager has not acknowledged. */
  readonly backlog: number;
  /** Bytes of steps held (waiting for credit, or at workers). */
  readonly held: number;
}

/** The limits of {@linkcode pressure}. */
export interface LoadLimits {
  /** `max_pending`. */
  readonly maxPending: number;
  /** Bytes of {@linkcode Load.backlog}. */
  readonly backlog: number;
  /** Bytes of {@linkcode Load.held}. */
  readonly held: number;
}

/**
 * Whether to stop reading requests (any of the load at its limit), read again (all below half
 * their limits), or leave things as they are.
 */
export function pressure(load: Load, limits: LoadLimits): "pause" | "resume" | undefined {
  if (load.queued >= limits.maxPending || load.backlog >= limits.backlog || load.held >= limits.held) {
    return "pause";
  }
  if (
    load.queued < limits.maxPending / 2 && load.backlog < limits.backlog / 2 && load.held < limits.held / 2
  ) {
    return "resume";
  }
  return undefined;
}

/** The id of a header that is not valid otherwise, when it has a usable one (to refuse it by). */
function readableId(frame: Uint8Array): string | undefined {
  try {
    const h = JSON.parse(text(frame));
    const id = h?.id;
    return typeof id === "string" && id.length > 0 && id.length <= 200 ? id : undefined;
  } catch {
    return undefined;
  }
}

/** What the Subject works out once per request topic, among `flows`. */
function topicInfo(topic: string, flows: ReadonlyMap<string, Flow>): TopicInfo | undefined {
  const fields = parseTopic(topic);
  if (!fields) return undefined;
  const invalid = !FLOW_NAME.test(fields.flow)
    ? `the flow name ${JSON.stringify(fields.flow)} has a character other than letters, digits, _ - ^ .`
    : [fields.decorator, fields.sender, fields.context, fields.action].some((f) => !KEY_FIELD.test(f))
    ? "a key field of the topic has a character other than letters, digits, _ - ^"
    : undefined;
  const flow = invalid ? undefined : flows.get(fields.flow);
  return { fields, invalid, flow, place: flow && placeRequest(flow, fields) };
}
