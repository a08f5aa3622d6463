/**
 * The wire format (see PROTOCOL.md). Pure: encoding and decoding of frames, no sockets.
 *
 * Data messages are three frames: `topic`, `header` (JSON), `values` (JSON).
 *
 * @module
 */

import type { ActionKey } from "../topic/action_key.ts";

/** The protocol version carried in every header as `v`. */
export const PROTOCOL_VERSION = 1;
/** Default largest accepted frame, in bytes. */
export const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024;

/** Error codes of error publications (SPEC §6, plus `no_step` and `bad_request`). */
export type ErrorCode =
  | "unknown_flow"
  | "no_step"
  | "no_handler"
  | "handler_error"
  | "timeout"
  | "step_limit"
  | "bad_resume"
  | "bad_request"
  | "overloaded"
  | "poisoned"
  | "forgotten";

/** The JSON header frame. */
export interface Header {
  /** Protocol version, {@linkcode PROTOCOL_VERSION}. */
  v: number;
  /** The request id; every publication of a request carries it. */
  id: string;
  /** Position of the step in its flow, when known. */
  pos?: number;
  /** Steps run so far for this request (the step-limit counter). */
  n?: number;
  /**
   * Message kind: absent for requests and results; `ping` for a readiness probe; `hello` for
   * a Subject's announcement of its incarnation (the `id`).
   */
  k?: "ping" | "hello";
  /** On error publications. */
  error?: { code: ErrorCode; message: string };
  /** On pause publications: the token that resumes the flow; on a resume: the token. */
  resume?: string;
  /** Set (1) on a step resumed at its `@ASYNC` step. */
  r?: 1;
  /**
   * On a request: keep its final publication, and publish it again (marked `replay`) for a copy
   * of the request sent after it (PROTOCOL.md, _Replayed finals_).
   */
  keep?: 1;
  /** On a final publication published again for a copy of its request (see `keep`). */
  replay?: 1;
  /**
   * On an error publication answering a message refused before anything ran (a new request or a
   * resume: `overloaded`, `unknown_flow`, `no_step`, ...), which was not acknowledged either
   * (PROTOCOL.md, _Acknowledgements_).
   */
  refused?: 1;
  /**
   * On a service's message: the Subject incarnation it was sent to (the last one the service saw
   * announced). A Subject drops a message that names another one (`stale`): a copy sent to a
   * Subject that has since died, still in the service's socket queue (PROTOCOL.md, _Subject restarts_).
   */
  s?: string;
  /**
   * On a service's message: which send of it this is, a whole number from 1 that grows with
   * every message the service sends (resends included). The Subject echoes it in a refusal
   * (`NACK`), so the service knows which send was refused (PROTOCOL.md, _Acknowledgements_).
   */
  t?: number;
}

/**
 * The send number of a service's message (`Header.t`), when it carries a whole number from 1;
 * anything else is ignored (not echoed).
 */
export function sendNumber(h: Header): number | undefined {
  const t = h.t;
  return Number.isSafeInteger(t) && (t as number) >= 1 ? t : undefined;
}

/** The five fields of a topic. */
export interface TopicFields {
  /** The flow (config) name. */
  readonly flow: string;
  /** Decorator. */
  readonly decorator: string;
  /** Sender. */
  readonly sender: string;
  /** Context. */
  readonly context: string;
  /** Action. */
  readonly action: string;
}

/** A publication as shown outside the wire (CLI, tap, client API). */
export interface Publication extends TopicFields {
  /** The topic frame. */
  readonly topic: string;
  /** The request id. */
  readonly id: string;
  /** The values. */
  readonly values: Record<string, unknown>;
  /** Position of the step, on step publications. */
  readonly position?: number;
  /** Steps run so far, on step publications (a continuation carries `n + 1`). */
  readonly n?: number;
  /** On error publications. */
  readonly error?: { readonly code: ErrorCode; readonly message: string };
  /** On pause publications. */
  readonly resume?: string;
  /** On a final published again for a copy of its request (the request was sent with `keep`). */
  readonly replay?: true;
  /** On an error answering a request (or resume) refused before anything ran: it did not run. */
  readonly refused?: true;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Encoded strings are written into a shared slab and handed out as views: `encode()` makes a
// new ArrayBuffer each time, which costs ~0.4 µs in Deno, four times `encodeInto` a slab.
const ENCODE_SLAB = 64 * 1024;
let encodeSlab = new Uint8Array(ENCODE_SLAB);
let encodeOffset = 0;
/**
 * Where `max` more bytes can be written in the shared slab: its offset now, or 0 in a new slab
 * when they would not fit (views handed out keep the old one).
 */
function slabRoom(max: number): number {
  if (encodeOffset + max > ENCODE_SLAB) {
    encodeSlab = new Uint8Array(ENCODE_SLAB);
    encodeOffset = 0;
  }
  return encodeOffset;
}

/** Longest string {@linkcode utf8} encodes by hand when it is ASCII (beyond this `encodeInto` is as fast). */
const ASCII_BY_HAND = 32;

/**
 * UTF-8 encode. Short strings come back as views into a shared buffer: read them through
 * their `byteOffset` (as `subarray`, `TextDecoder` and FFI calls do), and never write to them.
 */
export function utf8(s: string): Uint8Array {
  const max = s.length * 3;
  if (max > ENCODE_SLAB / 16) return encoder.encode(s);
  const start = slabRoom(max);
  const slab = encodeSlab;
  const n = s.length;
  // Short ASCII text (topics, small headers) is copied by hand: `encodeInto` is a call into
  // the runtime, 126 ns for 14 characters here against 50 by hand, 133 against 73 for 26;
  // from about 40 characters on it is as fast.
  if (n <= ASCII_BY_HAND) {
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      slab[start + i] = c;
    }
    if (i === n) {
      encodeOffset = start + n;
      return slab.subarray(start, encodeOffset);
    }
  }
  const { written } = encoder.encodeInto(s, slab.subarray(start));
  encodeOffset = start + written;
  return slab.subarray(start, encodeOffset);
}

/**
 * UTF-8 decode, for frames that are text: JSON, topics, numbers. Like every WHATWG decoder it
 * drops a leading U+FEFF (a byte-order mark) and reads bytes that are not UTF-8 as U+FFFD, so it
 * is no key for bytes that may be anything: see {@linkcode routingKey}.
 */
export function text(b: Uint8Array): string {
  return decoder.decode(b);
}

/** Decodes UTF-8 keeping a leading U+FEFF (for {@linkcode routingKey}: "\uFEFFa" and "a" are two ids). */
const keyDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * A ROUTER socket's routing id as a map key: two ids are the same key only when they are the same
 * bytes, and an id that is UTF-8 text (a worker's name) reads as that text, so that it matches the
 * name a worker gives in a report and reads well in logs. Any other id (libzmq names a peer that
 * sets none with 5 bytes, a 0 and a counter) is a lone U+D800, which no UTF-8 text decodes to,
 * and then one character per byte. {@linkcode text} was no such key: it decodes every byte that
 * is not UTF-8 to U+FFFD, so 40 connections to one ROUTER gave 26 keys (measured), and two services
 * shared their acknowledgements and their cap on requests in flight.
 *
 * @example
 * ```ts
 * import { routingKey } from "./protocol.ts";
 * routingKey(new Uint8Array([0, 1, 2, 3, 0x80])) === routingKey(new Uint8Array([0, 1, 2, 3, 0x81])); // false
 * routingKey(new TextEncoder().encode("wörker-7")); // "wörker-7"
 * ```
 */
export function routingKey(id: Uint8Array): string {
  if (isUtf8(id)) return keyDecoder.decode(id);
  // A routing id is at most 255 bytes (libzmq), well within the arguments a call may take.
  return "\uD800" + String.fromCharCode.apply(null, id as unknown as number[]);
}

/**
 * True if `b` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF). By hand because the platform's only check is a `fatal` decoder, which throws for
 * every id that is not UTF-8: most of libzmq's, on every message the Subject and the IM take.
 */
export function isUtf8(b: Uint8Array): boolean {
  const n = b.length;
  for (let i = 0; i < n;) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let more: number, lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) more = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      more = 2;
      if (c === 0xe0) lo = 0xa0; // overlong
      else if (c === 0xed) hi = 0x9f; // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      more = 3;
      if (c === 0xf0) lo = 0x90; // overlong
      else if (c === 0xf4) hi = 0x8f; // past U+10FFFF
    } else return false;
    if (i + more >= n || b[i + 1] < lo || b[i + 1] > hi) return false;
    for (let k = 2; k <= more; k++) if (b[i + k] < 0x80 || b[i + k] > 0xbf) return false;
    i += more + 1;
  }
  return true;
}

/**
 * The topic of a key in a flow: `flow~decorator~sender~context~action`.
 *
 * @example
 * ```ts
 * import { formatTopic } from "./protocol.ts";
 * formatTopic("Chat", { sender: "", context: "Chat", decorator: "PUBLISH", action: "Send" });
 * // "Chat~PUBLISH~~Chat~Send"
 * ```
 */
export function formatTopic(flow: string, key: ActionKey): string {
  return `${flow}~${key.decorator}~${key.sender}~${key.context}~${key.action}`;
}

/** The topic of a flow's end: `Flow~~~~done`. */
export function doneTopic(flow: string): string {
  return `${flow}~~~~done`;
}

/** The topic of a flow's error publications: `Flow~~~~error`. */
export function errorTopic(flow: string): string {
  return `${flow}~~~~error`;
}

/** Longest error message a publication carries; a longer one is cut, saying how much was. */
export const MAX_ERROR_MESSAGE = 4096;

/** `message`, cut to {@linkcode MAX_ERROR_MESSAGE} characters. */
export function capErrorMessage(message: string): string {
  if (message.length <= MAX_ERROR_MESSAGE) return message;
  const cut = MAX_ERROR_MESSAGE - 40;
  return `${message.slice(0, cut)}…(${message.length - cut} more characters)`;
}

/**
 * The three frames of an error publication (PROTOCOL.md): on `Flow~~~~error` (`~~~~error` for a
 * flow name a topic cannot carry), the request's id and the step's position, the error's code
 * and its message (cut to {@linkcode MAX_ERROR_MESSAGE}), and `values`, which the caller has
 * made sure is a JSON object that fits.
 *
 * @example
 * ```ts
 * import { errorFrames, text } from "./protocol.ts";
 * const [topic, header] = errorFrames("Order", { id: "r1", pos: 2 }, "timeout", "too slow", new Uint8Array());
 * [text(topic), JSON.parse(text(header)).error.code]; // ["Order~~~~error", "timeout"]
 * ```
 */
export function errorFrames(
  flow: string,
  h: Pick<Header, "id" | "pos">,
  code: ErrorCode,
  message: string,
  values: Uint8Array,
  refused = false,
): [Uint8Array, Uint8Array, Uint8Array] {
  const header: Header = { v: 1, id: h.id, error: { code, message: capErrorMessage(message) } };
  if (h.pos !== undefined) header.pos = h.pos;
  if (refused) header.refused = 1;
  const topicFlow = /^[A-Za-z0-9_.^-]*$/.test(flow) ? flow : "";
  return [utf8(errorTopic(topicFlow)), encodeHeader(header), values];
}

/**
 * Splits a topic into its five fields; `undefined` unless there are exactly five.
 *
 * @example
 * ```ts
 * import { parseTopic } from "./protocol.ts";
 * parseTopic("Echo~~~~done")?.action; // "done"
 * ```
 */
export function parseTopic(topic: string): TopicFields | undefined {
  const p = topic.split("~");
  if (p.length !== 5) return undefined;
  return { flow: p[0], decorator: p[1], sender: p[2], context: p[3], action: p[4] };
}

/**
 * The subscription prefix for a flow, optionally narrowed to a decorator, as ZeroMQ prefix
 * subscriptions see it. Always ends at a `~`, so `Flow~` never matches `FlowX~`.
 *
 * @example
 * ```ts
 * import { subscriptionPrefix } from "./protocol.ts";
 * subscriptionPrefix("Chat"); // "Chat~"
 * subscriptionPrefix("Chat", "PUBLISH"); // "Chat~PUBLISH~"
 * ```
 */
export function subscriptionPrefix(flow: string, decorator?: string): string {
  return decorator === undefined ? `${flow}~` : `${flow}~${decorator}~`;
}

/** Why a message was dropped. */
export type DropReason = "frame_count" | "bad_topic" | "bad_header" | "bad_json" | "oversize" | "stale";

/**
 * A new Subject incarnation: 16 hex digits, random per process. Services name it in what they
 * send (`Header.s`), so a Subject can tell copies meant for one that died from new messages.
 */
export function newIncarnation(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
}

/** A decoded header, or why it could not be. */
export function decodeHeader(frame: Uint8Array): Header | DropReason {
  let h: unknown = flatHeader(frame);
  if (h === undefined) {
    try {
      h = JSON.parse(text(frame));
    } catch {
      return "bad_header";
    }
  }
  if (h === null || typeof h !== "object" || Array.isArray(h)) return "bad_header";
  const o = h as Record<string, unknown>;
  if (o.v !== PROTOCOL_VERSION || typeof o.id !== "string" || o.id.length === 0 || o.id.length > 200) {
    return "bad_header";
  }
  if (o.pos !== undefined && (!Number.isInteger(o.pos) || (o.pos as number) < 0)) return "bad_header";
  if (o.n !== undefined && (!Number.isInteger(o.n) || (o.n as number) < 0)) return "bad_header";
  if (o.s !== undefined && (typeof o.s !== "string" || o.s.length > 64)) return "bad_header";
  return o as unknown as Header;
}

/**
 * `b[from..to)`, known to be ASCII, as a string: built a character at a time when it is short (V8
 * keeps strings of up to 12 characters built so flat; a longer one would be a chain of pieces,
 * slower to hash), else a slice of `b` decoded whole, once per header ({@linkcode flatWhole}:
 * offsets in it are those in `b` while everything before `to` is ASCII). Measured with the Map
 * operations an id goes through, fastest of 5 runs: 9-character ids 197 ns per header against
 * JSON.parse's 408; 36-character ones with `s` and `t` 354 against 484 (506 when each string was
 * decoded apart).
 */
function asciiText(b: Uint8Array, from: number, to: number): string {
  return to - from > 12 ? (flatWhole ??= decoder.decode(b)).slice(from, to) : shortAscii(b, from, to);
}

/**
 * `b[from..to)`, ASCII and at most 12 characters, built a character at a time: cheaper than a call
 * to decode it, and flat (see {@linkcode asciiText}).
 */
export function shortAscii(b: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let k = from; k < to; k++) s += String.fromCharCode(b[k]);
  return s;
}

/** The longest header {@linkcode flatHeader} reads (the usual ones are under 200 bytes). */
const FLAT_MAX = 512;

/** The header {@linkcode flatHeader} reads now, decoded, once a value needs it. */
let flatWhole: string | undefined;

/** The keys {@linkcode flatHeader} reads, as strings and as bytes. */
const FLAT_KEYS = ["v", "id", "pos", "n", "k", "resume", "r", "keep", "replay", "refused", "s", "t"] as const;
const FLAT_KEY_BYTES = FLAT_KEYS.map((k) => encoder.encode(k));

/** The key of {@linkcode FLAT_KEYS} spelt by `b[from..to)`, if any. */
function flatKey(b: Uint8Array, from: number, to: number): string | undefined {
  const n = to - from;
  for (let k = 0; k < FLAT_KEY_BYTES.length; k++) {
    const kb = FLAT_KEY_BYTES[k];
    if (kb.length !== n) continue;
    let j = 0;
    while (j < n && b[from + j] === kb[j]) j++;
    if (j === n) return FLAT_KEYS[k];
  }
  return undefined;
}

/**
 * What `JSON.parse` makes of a header as the roles and clients write it, read from its bytes
 * without decoding them to text first; `undefined` for anything else, to be parsed in full. It
 * reads only a flat object without whitespace whose keys are among `Header`'s plain ones
 * ({@linkcode FLAT_KEYS}: never `__proto__`) and whose values are strings of printable ASCII
 * without escapes or whole numbers of at most 15 digits (no sign, fraction or leading zero), in
 * at most 512 bytes: for that subset the result is the one `JSON.parse` gives (tests/protocol_test.ts compares
 * them on generated headers). A header is read once per request by the Subject and once per
 * step by a worker; this reads the usual one in about half the time (docs/performance.md, round 12).
 */
export function flatHeader(b: Uint8Array): Record<string, unknown> | undefined {
  const len = b.length;
  // A longer header is parsed: its values are slices of its text (asciiText), and a short id kept
  // from a 1 MB header (padded with a first "id" key, say) would keep that megabyte alive.
  if (len > FLAT_MAX || len < 2 || b[0] !== 0x7b || b[len - 1] !== 0x7d) return undefined; // { … }
  const o: Record<string, unknown> = {};
  if (len === 2) return o;
  flatWhole = undefined;
  let i = 1;
  for (;;) {
    if (b[i] !== 0x22) return undefined; // "key"
    let j = i + 1;
    while (j < len && b[j] !== 0x22) j++;
    if (j + 1 >= len || b[j + 1] !== 0x3a) return undefined; // :
    const key = flatKey(b, i + 1, j);
    if (key === undefined) return undefined;
    i = j + 2;
    const c0 = b[i];
    if (c0 === 0x22) {
      let e = i + 1;
      for (; e < len; e++) {
        const c = b[e];
        if (c === 0x22) break;
        if (c < 0x20 || c > 0x7e || c === 0x5c) return undefined; // control, non-ASCII, escape
      }
      if (e >= len) return undefined;
      o[key] = asciiText(b, i + 1, e);
      i = e + 1;
    } else if (c0 >= 0x30 && c0 <= 0x39) {
      let e = i;
      let v = 0;
      for (; e < len && b[e] >= 0x30 && b[e] <= 0x39; e++) v = v * 10 + (b[e] - 0x30);
      if ((c0 === 0x30 && e > i + 1) || e - i > 15) return undefined;
      o[key] = v;
      i = e;
    } else return undefined;
    const c = b[i];
    if (c === 0x7d) return i === len - 1 ? o : undefined; // }
    if (c !== 0x2c) return undefined; // ,
    i++;
  }
}

/** How every header the roles write starts: the id comes first. */
export const ID_START: Uint8Array = encoder.encode('{"v":1,"id":"');

/**
 * Where the id of a header the roles wrote ends: the index of its closing quote, when the header
 * starts with {@linkcode ID_START} and the id has no escape or control character (so its bytes
 * are its text); -1 otherwise (parse it then).
 */
export function plainIdEnd(header: Uint8Array): number {
  const n = ID_START.length;
  if (header.length <= n) return -1;
  for (let i = 0; i < n; i++) if (header[i] !== ID_START[i]) return -1;
  for (let i = n; i < header.length; i++) {
    const c = header[i];
    if (c === 0x5c || c < 0x20) return -1;
    if (c === 0x22) return i;
  }
  return -1;
}

const N_KEY = encoder.encode(',"n":');

/**
 * Whether a header, `b[..to)`, ends from `from` on (just past its id's closing quote) as the roles
 * end the header of a final: `}` or `,"n":<a whole number>}`. With `{"v":1,"id":"` before the id,
 * such a header has one id and nothing nested, so the id read from the bytes is the one
 * `JSON.parse` (and every subscriber) reads; anything else after the id (a second `"id"` key,
 * which `JSON.parse` takes over the first) must be parsed. `b` may be the header itself or a batch
 * holding it (`to`: the header's end there), so that no view need be made.
 */
export function plainFinalEnd(b: Uint8Array, from: number, to: number = b.length): boolean {
  const end = to - 1;
  if (from > end || b[end] !== 0x7d) return false;
  if (from === end) return true;
  let i = from;
  for (let k = 0; k < N_KEY.length; k++) if (b[i++] !== N_KEY[k]) return false;
  if (i >= end || (b[i] === 0x30 && i + 1 < end)) return false; // no digit, or a leading zero
  for (; i < end; i++) if (b[i] < 0x30 || b[i] > 0x39) return false;
  return true;
}

/** Encodes a header. */
export function encodeHeader(h: Header): Uint8Array {
  return utf8(JSON.stringify(h));
}

const POS_KEY = encoder.encode(',"pos":');

/** Writes `v` (a safe whole number, not negative) in decimal at `b[at]`; returns where it ends. */
function writeWhole(b: Uint8Array, at: number, v: number): number {
  let end = at + 1;
  for (let x = v; x >= 10; x = Math.floor(x / 10)) end++;
  let x = v;
  for (let i = end - 1; i >= at; i--) {
    b[i] = 0x30 + (x % 10);
    x = Math.floor(x / 10);
  }
  return end;
}

/**
 * The header of a step (`pos` given) or of a final, as {@linkcode encodeHeader} encodes
 * `{ v: 1, id, pos, n }` or `{ v: 1, id, n }`: the same bytes, written by hand when the id is
 * printable ASCII without a quote or backslash (then its JSON text is its characters), which
 * takes about a third of the time of `JSON.stringify` and `encodeInto` and makes no object or
 * string; any other id goes through {@linkcode encodeHeader}. The Subject writes one per request
 * and a worker one per segment it runs (docs/performance.md, round 21). A view into the shared
 * slab, as {@linkcode utf8} returns.
 */
export function stepHeader(id: string, pos: number | undefined, n: number): Uint8Array {
  const len = id.length;
  // the id, its closing quote, both keys, two numbers of up to 16 digits (safe integers) and `}`
  const max = ID_START.length + len + 1 + POS_KEY.length + N_KEY.length + 2 * 16 + 1;
  const plain = max <= ENCODE_SLAB / 16 && Number.isSafeInteger(n) && n >= 0 &&
    (pos === undefined || (Number.isSafeInteger(pos) && pos >= 0));
  if (!plain) return stepHeaderJson(id, pos, n);
  const start = slabRoom(max);
  const b = encodeSlab;
  b.set(ID_START, start);
  let i = start + ID_START.length;
  for (let k = 0; k < len; k++) {
    const c = id.charCodeAt(k);
    // (what was written of it is left: the offset has not moved)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return stepHeaderJson(id, pos, n);
    b[i++] = c;
  }
  b[i++] = 0x22;
  if (pos !== undefined) {
    b.set(POS_KEY, i);
    i = writeWhole(b, i + POS_KEY.length, pos);
  }
  b.set(N_KEY, i);
  i = writeWhole(b, i + N_KEY.length, n);
  b[i++] = 0x7d;
  encodeOffset = i;
  return b.subarray(start, i);
}

/** {@linkcode stepHeader}'s header through `JSON.stringify`, for what it does not write by hand. */
function stepHeaderJson(id: string, pos: number | undefined, n: number): Uint8Array {
  return encodeHeader(pos === undefined ? { v: 1, id, n } : { v: 1, id, pos, n });
}

/** Parses a values frame: it must be a JSON object. */
export function decodeValues(frame: Uint8Array): Record<string, unknown> | DropReason {
  let v: unknown;
  try {
    v = JSON.parse(text(frame));
  } catch {
    return "bad_json";
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return "bad_json";
  return v as Record<string, unknown>;
}

/** Builds the JSON shape of a publication from its three frames. */
export function toPublication(frames: readonly Uint8Array[]): Publication | DropReason {
  if (frames.length !== 3) return "frame_count";
  const topic = text(frames[0]);
  const fields = parseTopic(topic);
  if (!fields) return "bad_topic";
  const header = decodeHeader(frames[1]);
  if (typeof header === "string") return header;
  const values = decodeValues(frames[2]);
  if (typeof values === "string") return values;
  return {
    topic,
    ...fields,
    id: header.id,
    values,
    ...(header.pos !== undefined && fields.action !== "done" && fields.action !== "error"
      ? { position: header.pos, n: header.n ?? 0 }
      : {}),
    ...(header.error ? { error: header.error } : {}),
    ...(header.resume ? { resume: header.resume } : {}),
    ...(header.replay === 1 ? { replay: true as const } : {}),
    ...(header.refused === 1 ? { refused: true as const } : {}),
  };
}

/** The JSON object SPEC §5 shows for a publication (key order fixed). */
export function publicationJson(p: Publication): Record<string, unknown> {
  return {
    topic: p.topic,
    flow: p.flow,
    sender: p.sender,
    context: p.context,
    decorator: p.decorator,
    action: p.action,
    id: p.id,
    values: p.values,
    ...(p.error ? { error: p.error } : {}),
    ...(p.resume ? { resume: p.resume } : {}),
    ...(p.replay ? { replay: true } : {}),
    ...(p.refused ? { refused: true } : {}),
  };
}

/** True for the publications that end a request: `done` and `error`. */
export function isFinal(p: Pick<Publication, "action" | "decorator" | "sender" | "context">): boolean {
  return (p.action === "done" || p.action === "error") && p.decorator === "" && p.sender === "" &&
    p.context === "";
}

/** What {@linkcode TopicCache} needs of a flow. */
export interface TopicSource {
  /** The flow name. */
  readonly name: string;
  /** Its steps' keys. */
  readonly steps: readonly { readonly key: ActionKey }[];
}

/**
 * The encoded topics of flows' steps and of their `done`, made once per flow and position:
 * the roles send them with every message.
 *
 * @example
 * ```ts
 * import { TopicCache } from "./protocol.ts";
 * const cache = new TopicCache();
 * const flow = { name: "F", steps: [{ key: { sender: "S", context: "F", decorator: "", action: "Go" } }] };
 * new TextDecoder().decode(cache.step(flow, 0)); // "F~~S~F~Go"
 * new TextDecoder().decode(cache.done(flow)); // "F~~~~done"
 * ```
 */
export class TopicCache {
  readonly #steps = new WeakMap<TopicSource, Uint8Array[]>();
  readonly #done = new WeakMap<TopicSource, Uint8Array>();

  /** The topic of the step at `position`. */
  step(flow: TopicSource, position: number): Uint8Array {
    let list = this.#steps.get(flow);
    if (!list) this.#steps.set(flow, list = []);
    return list[position] ??= encoder.encode(formatTopic(flow.name, flow.steps[position].key));
  }

  /** The topic of the flow's `done`. */
  done(flow: TopicSource): Uint8Array {
    let t = this.#done.get(flow);
    if (!t) this.#done.set(flow, t = encoder.encode(doneTopic(flow.name)));
    return t;
  }
}

/**
 * What a role works out from a topic's text alone (its fields, its flow, where a request
 * starts), made once per distinct text. Bounded: the memo is emptied when it holds `limit`
 * texts, so a stream of distinct topics costs recomputation, not memory.
 *
 * @example
 * ```ts
 * import { parseTopic, TopicMemo } from "./protocol.ts";
 * const memo = new TopicMemo((t) => parseTopic(t));
 * memo.get("Chat~~~Chat~Send")?.action; // "Send", parsed once
 * memo.get("Chat~~~Chat~Send") === memo.get("Chat~~~Chat~Send"); // true
 * ```
 */
export class TopicMemo<V> {
  readonly #made = new Map<string, V>();

  /** `make` works a topic text out; `limit` bounds the texts kept. */
  constructor(readonly make: (topic: string) => V, readonly limit = 10_000) {}

  /** `make(topic)`, from the memo when it is there. */
  get(topic: string): V {
    let v = this.#made.get(topic);
    if (v === undefined && !this.#made.has(topic)) {
      v = this.make(topic);
      if (this.#made.size >= this.limit) this.#made.clear();
      this.#made.set(topic, v);
    }
    return v as V;
  }

  #lastBytes: Uint8Array | undefined;
  #lastValue: V | undefined;

  /**
   * `make` of a topic's UTF-8 bytes: the value of the topic the call before was given when the
   * bytes are the same (a batch of requests shares its topic; comparing bytes is cheaper than
   * decoding them), else {@linkcode get} of their text.
   */
  getBytes(topic: Uint8Array): V {
    const last = this.#lastBytes;
    if (last !== undefined && last.length === topic.length) {
      let k = 0;
      while (k < topic.length && topic[k] === last[k]) k++;
      if (k === topic.length) return this.#lastValue as V;
    }
    const v = this.get(text(topic));
    this.#lastBytes = topic.slice();
    this.#lastValue = v;
    return v;
  }
}

/**
 * A resume token (PROTOCOL.md, _Pausing and resuming_): `flow~random~request id` (flow names never
 * contain `~`). Here, not with the paused flows' store, so a client does not load `node:sqlite`.
 */
export function makeToken(flow: string, id: string): string {
  const r = crypto.getRandomValues(new Uint8Array(16));
  return `${flow}~${Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")}~${id}`;
}

/** The flow and original request id a token names, if it is well formed. */
export function parseToken(token: string): { flow: string; id: string } | undefined {
  const m = /^([^~]*)~[0-9a-f]{32}~(.+)$/s.exec(token);
  return m ? { flow: m[1], id: m[2] } : undefined;
}
