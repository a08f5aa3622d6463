/**
 * The control messages of PROTOCOL.md, in one place for the Subject, the Worker, the watchdog,
 * the Integration Manager and the Client: their type names (the first frame), and the JSON
 * payloads each carries.
 *
 * @example
 * ```ts
 * import { decodeWorkerStatus, workerStatus } from "./control.ts";
 * const [type, body] = workerStatus("HB", { credit: 3, holding: [7], last: 7 });
 * decodeWorkerStatus(body).credit; // 3
 * ```
 *
 * @module
 */

import { text, utf8 } from "./protocol.ts";

/** The type names of the control messages (the first frame after any identity). */
export const CONTROL = Object.freeze(
  {
    /** Worker → Subject: joins, with its credit. */
    READY: "READY",
    /** Worker → Subject: heartbeat, with credit, steps held and the last dispatch number. */
    HB: "HB",
    /** Worker → Subject: results (a batch). */
    RESULTS: "RESULTS",
    /** Worker → Subject: leaving. */
    BYE: "BYE",
    /** A worker's watchdog → Subject: a step's handler blocks the worker's event loop. */
    STUCK: "STUCK",
    /** A worker process → Subject, on a socket of its own: its metrics, to publish (`~~~~ping-metrics`). */
    METRICS: "METRICS",
    /** Subject → worker: steps (a batch). */
    STEPS: "STEPS",
    /** Subject → service, and IM → Subject: acknowledgements. */
    ACK: "ACK",
    /** Subject → service: messages refused. */
    NACK: "NACK",
    /** Subject → service: resumes that took their token. */
    RESUMED: "RESUMED",
    /** Subject → IM: a ping, acknowledged like a batch. */
    PING: "PING",
    /** Service → Subject: a new set of flow and mapping files to roll out (`cli.ts reload`). */
    RELOAD: "RELOAD",
    /** Subject → service: how a `RELOAD` ended. */
    RELOADED: "RELOADED",
    /** Subject → worker: a configuration version to load (its files), or which one its own files are. */
    CONFIG: "CONFIG",
    /** Worker → Subject: a `CONFIG` loaded, or refused with why. */
    LOADED: "LOADED",
    /** Subject → worker: a configuration version no request uses any more. */
    RETIRE: "RETIRE",
  } as const,
);

/** A control message's type name. */
export type ControlType = keyof typeof CONTROL;

/** Each control type's first frame, encoded once. */
export const CONTROL_FRAMES: Readonly<Record<ControlType, Uint8Array>> = Object.freeze(
  Object.fromEntries(
    Object.keys(CONTROL).map((k) => [k, new TextEncoder().encode(k)]),
  ) as Record<ControlType, Uint8Array>,
);

/** What `READY` and `HB` carry. */
export interface WorkerStatus {
  /** Steps the worker runs at once (`READY`), or has room for now (`HB`). */
  readonly credit: number;
  /** `HB`: the dispatch numbers it holds now. */
  readonly holding?: readonly number[];
  /** `HB`: the highest dispatch number it received. */
  readonly last?: number;
  /** `READY`: its process id (informative). */
  readonly pid?: number;
  /** The secret its watchdog's `STUCK` reports carry (never leaves the worker–Subject connection). */
  readonly watch?: string;
  /** The hash of the files it loaded from its command line (`config_versions.ts`, `sourcesHash`). */
  readonly base?: string;
}

/** The frames of a `READY` or `HB`. */
export function workerStatus(type: "READY" | "HB", status: WorkerStatus): [Uint8Array, Uint8Array] {
  return [CONTROL_FRAMES[type], utf8(JSON.stringify(status))];
}

/** A `READY` or `HB` payload; a missing or unreadable one is credit 0 and nothing held. */
export function decodeWorkerStatus(frame: Uint8Array | undefined): WorkerStatus {
  try {
    const b = JSON.parse(text(frame ?? utf8("{}"))) ?? {};
    const credit = Number(b.credit ?? 0) || 0;
    const watch = typeof b.watch === "string" ? { watch: b.watch as string } : {};
    if (typeof b.base === "string") Object.assign(watch, { base: b.base });
    return Array.isArray(b.holding) && typeof b.last === "number"
      ? { credit, holding: b.holding as number[], last: b.last, ...watch }
      : { credit, ...watch };
  } catch {
    return { credit: 0 };
  }
}

/** What `STUCK` carries. */
export interface StuckReport {
  /** The worker whose event loop is blocked (its routing id). */
  readonly worker: string;
  /** The dispatch number of the step whose handler blocks it. */
  readonly d: number;
  /** How long it has been blocked, in milliseconds. */
  readonly ms: number;
  /** The worker's `watch` secret, which proves the report comes from its watchdog. */
  readonly token?: string;
  /**
   * What went wrong, where it was not a blocked handler: a sandbox that broke the protocol
   * answering the step (`ms` is then 0).
   */
  readonly why?: string;
}

/** The frames of a `STUCK` report. */
export function stuckReport(report: StuckReport): [Uint8Array, Uint8Array] {
  return [CONTROL_FRAMES.STUCK, utf8(JSON.stringify(report))];
}

/** A `STUCK` payload, or `undefined` when it is not one. */
export function decodeStuck(frame: Uint8Array | undefined): StuckReport | undefined {
  try {
    const b = JSON.parse(text(frame ?? utf8("{}")));
    return typeof b?.worker === "string" && typeof b.d === "number"
      ? {
        worker: b.worker,
        d: b.d,
        ms: Number(b.ms) || 0,
        ...(typeof b.token === "string" ? { token: b.token } : {}),
        ...(typeof b.why === "string" ? { why: b.why.slice(0, 500) } : {}),
      }
      : undefined;
  } catch {
    return undefined;
  }
}

/** The entries of a JSON array payload (`ACK`, `NACK`, `RESUMED`); none when it is anything else. */
export function decodeList(frame: Uint8Array): ({ readonly [k: string]: unknown } | null | undefined)[] {
  try {
    const v = JSON.parse(text(frame));
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

/** True when `frame` is the first frame of a control message of `type`. */
export function isControl(frame: Uint8Array | undefined, type: ControlType): boolean {
  const t = CONTROL_FRAMES[type];
  if (!frame || frame.length !== t.length) return false;
  for (let i = 0; i < t.length; i++) if (frame[i] !== t[i]) return false;
  return true;
}

/** What `RELOAD` carries. */
export interface ReloadRequest {
  /** Names the answer (`RELOADED`). */
  readonly ref: string;
  /** The Subject's reload key (`reload.key` in its runtime directory). */
  readonly key: string;
  /** The flow and mapping files: absolute names and texts. */
  readonly files: readonly { readonly file: string; readonly text: string }[];
}

/** What `RELOADED` carries. */
export interface ReloadAnswer {
  /** The `ref` of the `RELOAD` it answers. */
  readonly ref: string;
  /** The version now current, when the reload was rolled out. */
  readonly version?: number;
  /** Why nothing changed, when it was not. */
  readonly error?: string;
  /** The files' errors, each `file:line:column: error: message`, when they were the reason. */
  readonly diagnostics?: readonly string[];
}

/** What `CONFIG` carries. */
export interface ConfigMessage {
  /** The Subject incarnation's numbering the version belongs to. */
  readonly incarnation: string;
  /** The version. */
  readonly version: number;
  /** Its files; absent when the worker's own files (`base` of its `READY`) are this version. */
  readonly files?: readonly { readonly file: string; readonly text: string }[];
}

/** What `LOADED` carries. */
export interface LoadedMessage {
  /** The version. */
  readonly version: number;
  /** Why the worker could not load it, if it could not. */
  readonly error?: string;
}

/** A JSON control payload, or `undefined` when it is not a JSON object. */
export function decodeObject(frame: Uint8Array | undefined): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text(frame ?? new Uint8Array()));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}
