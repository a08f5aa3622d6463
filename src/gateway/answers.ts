/**
 * What the gateway answers: an outcome as an HTTP status and body (`answerOf`, `failure`, the
 * problem documents), a request body read as values, and the byte-bounded sink an event-stream
 * client reads from.
 *
 * @module
 */

import type { Context as HonoContext } from "hono";
import { RequestRefusedError, RequestTimeoutError } from "../client/client.ts";
import type { Values } from "../handler.ts";
import type { logger } from "../log.ts";
import { type Publication, publicationJson } from "../wire/protocol.ts";
import type { Refusal } from "./auth.ts";
import { ByteQueue } from "./byte_queue.ts";
import { errorStatus, OVERLOADED_RETRY_AFTER } from "./status.ts";

/** One answer: status, JSON body, extra headers. */
export interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Record<string, string>;
  /** `body` as JSON, when already serialized (a remembered answer): sent as it is. */
  readonly json?: string;
}

/**
 * Chunks for one event-stream client, at most `limit` bytes queued: the response body pulls
 * from it at the client's pace, so a client that does not read fills it and is cut off (its
 * stream errors, which closes the connection), never growing the gateway's memory.
 */
export class StreamSink {
  readonly #q: ByteQueue;
  readonly #limit: number;
  readonly #onCut: () => void;
  readonly #log: ReturnType<typeof logger>;
  #wake?: () => void;
  #cut?: string;
  #ended = false;
  #onCutStream?: () => void;
  #close?: () => void;
  #closedEarly = false;
  onEnd?: () => void;

  constructor(limit: number, onCut: () => void, log: ReturnType<typeof logger>) {
    this.#q = new ByteQueue(limit);
    this.#limit = limit;
    this.#onCut = onCut;
    this.#log = log;
  }

  offer(chunk: Uint8Array): void {
    if (this.#cut || this.#ended) return;
    if (!this.#q.push(chunk)) {
      this.#cut = `slow client: more than ${this.#limit} bytes waiting to be sent`;
      this.#q.clear();
      this.#onCut();
      this.#log.warn("Event-stream client cut off: {reason}", { reason: this.#cut });
      this.#onCutStream?.();
    }
    this.#wake?.();
  }

  /**
   * Ends the stream made by {@linkcode StreamSink.stream} now: its response ends (`onEnd` runs).
   * Before that stream is made, it will be made ended.
   */
  close(): void {
    if (this.#close) this.#close();
    else this.#closedEarly = true;
  }

  stream(last: (reason: string) => Uint8Array): ReadableStream<Uint8Array> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let told = false;
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    // Erroring the body is what makes Deno drop the connection (closing it would end the
    // response and keep the connection alive for the next request).
    const abort = () => {
      if (this.#ended) return;
      try {
        controller.error(new Error(`event stream cut off: ${this.#cut}`));
      } catch { /* closed meanwhile */ }
      end();
    };
    const end = () => {
      if (this.#ended) return;
      this.#ended = true;
      clearTimeout(timer);
      this.#q.clear();
      this.onEnd?.();
    };
    this.#close = () => {
      if (this.#ended) return;
      try {
        controller.close();
      } catch { /* errored or closed meanwhile */ }
      end();
      this.#wake?.();
    };
    this.#onCutStream = () => {
      // A client that reads no more is not waited for: the connection goes within 2 s.
      timer = setTimeout(abort, 2000);
    };
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => void (controller = c),
      pull: async (c) => {
        for (;;) {
          if (this.#ended) return;
          if (this.#cut) {
            // The reason goes last, for a client that still reads; then the connection goes.
            if (told) return abort();
            told = true;
            return c.enqueue(last(this.#cut));
          }
          const chunk = this.#q.shift();
          if (chunk) return c.enqueue(chunk);
          await new Promise<void>((r) => this.#wake = r);
          this.#wake = undefined;
        }
      },
      cancel: () => end(),
    }, { highWaterMark: 0 });
    if (this.#closedEarly) this.#close();
    return stream;
  }
}

/** The longest request id a message may carry (`PROTOCOL.md`, headers). */
const MAX_ID = 200;

/**
 * The request id of an id a caller chose (an `Idempotency-Key`, a WebSocket `send`'s `id`): that
 * id (its first 167 characters), `~`, and 32 hex digits of the SHA-256 of the caller's token name,
 * the flow and the whole id, encoded so that no two triples read alike. Ids are one namespace at
 * the Subject, which drops a request whose id it has seen; so two callers, or one caller on two
 * flows, choosing the same id name two requests, never one (else a caller could keep another's
 * request from running, or be answered with it). The same three always give the same id, so a
 * retry, to this gateway or to one restarted, is the same request.
 */
export async function scopedId(caller: string, flow: string, chosen: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(scopeKey(caller, flow, chosen)),
  );
  const hex = Array.from(new Uint8Array(digest, 0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${chosen.slice(0, MAX_ID - hex.length - 1)}~${hex}`;
}

/** One string per (caller, flow, chosen id), and never the same one for two (JSON: no separator to forge). */
export function scopeKey(caller: string, flow: string, chosen: string): string {
  return JSON.stringify([caller, flow, chosen]);
}

export function problem(code: string, message: string, id?: string): unknown {
  return { error: { code, message }, ...(id ? { id } : {}) };
}

export function badRequest(message: string): Answer {
  return { status: 400, body: problem("bad_request", message) };
}

export function send(c: HonoContext, a: Answer): Response {
  if (a.json === undefined) return c.json(a.body, a.status as 200, a.headers);
  return c.body(a.json, a.status as 200, { ...a.headers, "Content-Type": "application/json" });
}

export function refuse(c: HonoContext, r: Refusal): Response {
  const headers: Record<string, string> = {};
  if (r.status === 401) headers["WWW-Authenticate"] = 'Bearer realm="zmanager"';
  if (r.retryAfter !== undefined) headers["Retry-After"] = String(r.retryAfter);
  const code = r.status === 401
    ? "unauthorized"
    : r.status === 403
    ? "forbidden"
    : r.status === 503
    ? "overloaded"
    : "rate_limited";
  return c.json(problem(code, r.message), r.status as 401, headers);
}

const BODY_TIMED_OUT = Symbol("body timed out");
const CLOSING = Symbol("closing");

/**
 * The body as a values object, or a 400 answer. An empty body is `{}`. A body not all read
 * within `timeout` ms (a client sending it slowly holds its connection) is answered 408, and
 * the connection is closed (`Connection: close`); `onTimeout` is told. One still coming when
 * `closing` aborts (the gateway shuts down) is answered 503 at once.
 */
export async function readValues(
  c: HonoContext,
  timeout: number,
  onTimeout?: () => void,
  closing?: AbortSignal,
): Promise<{ values: Values } | { answer: Answer }> {
  const reading = c.req.text();
  let cut!: (why: typeof BODY_TIMED_OUT | typeof CLOSING) => void;
  const stopped = new Promise<typeof BODY_TIMED_OUT | typeof CLOSING>((resolve) => (cut = resolve));
  const timer = setTimeout(() => cut(BODY_TIMED_OUT), timeout);
  // A listener, removed below: a reaction on a promise of the gateway's would stay per request.
  const onClosing = () => cut(CLOSING);
  if (closing?.aborted) onClosing();
  else closing?.addEventListener("abort", onClosing, { once: true });
  let raw: string | typeof BODY_TIMED_OUT | typeof CLOSING;
  try {
    raw = await Promise.race([reading, stopped]);
  } finally {
    clearTimeout(timer);
    closing?.removeEventListener("abort", onClosing);
  }
  if (raw === CLOSING) {
    reading.catch(() => {}); // fails when the connection closes
    return {
      answer: {
        status: 503,
        body: problem("overloaded", "the gateway is closing; send the request again"),
        headers: { Connection: "close", "Retry-After": "1" },
      },
    };
  }
  if (raw === BODY_TIMED_OUT) {
    reading.catch(() => {});
    onTimeout?.();
    return {
      answer: {
        status: 408,
        body: problem("request_timeout", `the body did not arrive within ${timeout} ms (http_body_timeout)`),
        headers: { Connection: "close" },
      },
    };
  }
  if (raw.trim() === "") return { values: {} };
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    return { answer: badRequest(`the body is not JSON: ${(e as Error).message}`) };
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    return { answer: badRequest("the body must be a JSON object") };
  }
  return { values: v as Values };
}

/** The answer of a final or pause publication. */
export function answerOf(p: Publication): Answer {
  const body = publicationJson(p);
  if (p.error) {
    const status = errorStatus(p.error.code);
    return {
      status,
      body,
      headers: p.error.code === "overloaded" ? { "Retry-After": String(OVERLOADED_RETRY_AFTER) } : undefined,
    };
  }
  if (p.resume !== undefined) {
    return { status: 202, body, headers: { Location: `/v1/resume/${encodeURIComponent(p.resume)}` } };
  }
  return { status: 200, body };
}

export function failure(e: unknown, id: string): Answer {
  if (e instanceof RequestTimeoutError) return { status: 504, body: problem("timeout", e.message, id) };
  if (e instanceof RequestRefusedError) {
    return { status: e.reason === "oversize" ? 413 : 400, body: problem(e.reason, e.message, id) };
  }
  return { status: 503, body: problem("unavailable", String((e as Error)?.message ?? e), id) };
}
