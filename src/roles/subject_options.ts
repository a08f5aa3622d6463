/**
 * The Subject's options, its counters, and the limits it works to.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import type { SourceFile } from "../topic/catalog.ts";
import { DEFAULT_STEP_LIMIT } from "../topic/flow_step.ts";
import {
  DEFAULT_ASYNC_TIMEOUT,
  DEFAULT_DUPLICATE_WINDOW,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_MAX_DELIVERIES,
  DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
  DEFAULT_MAX_PENDING,
  DEFAULT_WORKER_PACK_WINDOW,
} from "../config.ts";
import type { Reactor } from "../zmq/reactor.ts";
import type { RequestFigures } from "./request_metrics.ts";
import type { Security } from "./security.ts";
import { DEFAULT_REPLAY_BYTES, type FinalReplayStats } from "./final_replay.ts";

/** Options of {@linkcode Subject.start}. */
export interface SubjectOptions {
  /** CURVE keys and allowlists for tcp endpoints (`security.ts`); none: plaintext. */
  readonly security?: Security;
  /** The flows, by name. */
  readonly flows: ReadonlyMap<string, Flow>;
  /** Endpoint to bind for services' requests. */
  readonly pullAddress: string;
  /** Endpoint to bind for workers. */
  readonly workerAddress: string;
  /** The Integration Manager's pull endpoint. */
  readonly integrationManagerAddress: string;
  /** @default {100} */
  readonly stepLimit?: number;
  /** Milliseconds of worker silence before its steps are given to another. @default {5000} */
  readonly heartbeatTimeout?: number;
  /** Requests held for worker credit before the Subject stops reading more. @default {10000} */
  readonly maxPending?: number;
  /** Largest accepted frame in bytes. */
  readonly maxMessageSize?: number;
  /**
   * Requests one service connection may have in flight (from acceptance to the final
   * publication or a pause); a new one over this is answered `overloaded`. @default {100000}
   */
  readonly maxInFlightPerConnection?: number;
  /**
   * Recent requests remembered to drop duplicates: a message with the same id, position,
   * step count and resume token as one of them is acknowledged and dropped (`duplicate`).
   * 0 turns this off. @default {100000}
   */
  readonly duplicateWindow?: number;
  /**
   * Bytes of final publications kept for requests sent with `"keep":1`, to publish again for a
   * copy of such a request sent after its final (`final_replay.ts`); 0 keeps none.
   * @default {DEFAULT_REPLAY_BYTES}
   */
  readonly replayBuffer?: number;
  /** A reactor to share (inproc deployments); by default the Subject makes its own. */
  readonly reactor?: Reactor;
  /**
   * The Integration Manager runs in this process (`integration_manager_in_subject`): a final it
   * acknowledged can still die with the process, so a resume sent again after a restart runs its
   * flow again even when that flow had ended (PROTOCOL.md, _Pausing and resuming_). @default {false}
   */
  readonly imInProcess?: boolean;
  /** Where paused flows are kept: a SQLite file, or `:memory:`. @default {":memory:"} */
  readonly pausedStore?: string;
  /** Milliseconds a paused flow waits for its resume before a `timeout` error. @default {3600000} */
  readonly asyncTimeout?: number;
  /**
   * Deliveries of one step that may end in its worker's failure (it died, went silent, or its
   * watchdog reported the step blocking its event loop) before the request ends with a
   * `poisoned` error publication instead of another delivery. @default {2}
   */
  readonly maxDeliveries?: number;
  /**
   * Milliseconds: a step goes to a worker whose steps come back within this on average and none
   * of whose steps in flight is older (`WorkerPool`'s module doc); when none does, to the worker
   * with the most free credit. 0: always the one with the most free credit. @default {1}
   */
  readonly packWindow?: number;
  /** Reloads (`subject_reload.ts`); without a `key` every reload is refused. */
  readonly reload?: SubjectReloadOptions;
}

/** How a Subject takes reloads. */
export interface SubjectReloadOptions {
  /** The secret a reload must carry (`cli.ts start` writes it to `reload.key` in the runtime directory). */
  readonly key?: string;
  /** The files `flows` came from (absolute names and texts): version 1, sent to workers that need it. */
  readonly sources?: readonly SourceFile[];
  /** Milliseconds every worker has to load a version. @default {30000} */
  readonly timeout?: number;
  /** With the files' `[permissions]`: let components ask to run programs or for any network access. */
  readonly allowComponentPermissions?: boolean;
  /** Hears of each version made current by a reload: its files (names and texts). */
  readonly onCurrent?: (sources: readonly SourceFile[]) => void;
  /** `sources` are the files of a reload a Subject before this one made current (`reloaded.json`). */
  readonly restored?: boolean;
}

/** Counters of a Subject. */
export interface SubjectStats {
  /** Requests received from services (including continuations and pings, not the roles' metrics). */
  received: number;
  /** Steps sent to workers (including redeliveries). */
  dispatched: number;
  /** Messages sent to the Integration Manager. */
  published: number;
  /** Error publications made by the Subject (unknown flow, step limit…). */
  errors: number;
  /**
   * Of those, answers to messages that started no request (`overloaded`, `unknown_flow` and
   * `no_step` for a new request, a resume's `bad_resume` or `bad_request`, `forgotten`): not in
   * `requests`, and a request running under the same id goes on.
   */
  refused: number;
  /**
   * Writes to the paused flows' store waiting for it (the file locked from outside, a full disk):
   * pauses not yet published, ends of resumed flows not yet marked; retried at each tick.
   */
  storeWaiting: number;
  /** Steps given to another worker: theirs went silent, or its heartbeat showed them lost. */
  redelivered: number;
  /** Of those, steps a live worker's heartbeat showed lost (never received, or result lost). */
  lost: number;
  /** Results that arrived for a step already given to another worker (ignored). */
  lateResults: number;
  /** Messages dropped, by reason. */
  dropped: Record<string, number>;
  /** Steps at workers now. */
  inFlight: number;
  /** Requests waiting for worker credit now. */
  pending: number;
  /** Bytes of those requests. */
  pendingBytes: number;
  /**
   * Bytes of every step the Subject holds: waiting for credit, or at a worker until its result
   * comes back. It stops reading requests at `PENDING_BYTES_LIMIT`.
   */
  heldBytes: number;
  /** Workers connected now. */
  workers: number;
  /** Steps the workers can take now (their free credit, as this Subject counts it). */
  credit: number;
  /** Flows paused at an `@ASYNC` step now. */
  paused: number;
  /** Flows resumed. */
  resumed: number;
  /** Requests ended with a `poisoned` error: their step's workers failed `max_deliveries` times. */
  poisoned: number;
  /** Requests answered `overloaded` because their connection had `maxInFlightPerConnection` in flight. */
  overCap: number;
  /** Batches of publications sent to the Integration Manager and not yet acknowledged, now. */
  imUnacked: number;
  /** Batches sent to the Integration Manager again (lost on the way, or in an IM that died). */
  imResent: number;
  /** Per-flow outcomes and end-to-end latency (acceptance to final publication). */
  requests: RequestFigures;
  /** The configuration version new requests start on (1: the files it started with). */
  version: number;
  /** The live configuration versions (in use by requests in flight, or current). */
  versions: number[];
  /** The files of the current version (`cli.ts reload` without files reads them again). */
  files: string[];
  /** Reloads that changed nothing (bad files, a refusing worker, a rollout timeout). */
  reloadsFailed: number;
  /** Final publications kept for requests sent with `"keep":1`, and those published again. */
  replay: FinalReplayStats;
}

/**
 * Bytes of publications not yet acknowledged by the Integration Manager (sent or waiting to be
 * sent) at which the Subject stops reading requests; it reads again below half of this. With
 * `max_pending` this bounds the Subject's memory when the IM is slow, or away (restarting).
 */
export const IM_BACKLOG_LIMIT = 16 * 1024 * 1024;

/** Milliseconds between the Subject's pings to the Integration Manager (see `im_outbox.ts`). */
export const IM_PING_MS = 250;

/**
 * How often the Subject announces its incarnation (PROTOCOL.md, _Subject restarts_); it also
 * announces it when it starts and before each ping it forwards.
 */
export const HELLO_EVERY_MS = 1000;

/** The topic of the Subject's announcements. */
export const HELLO_TOPIC = "~~~~hello";

/**
 * Bytes of steps held (waiting for worker credit, or at workers until their results come back)
 * at which the Subject stops reading requests (as at `max_pending` requests waiting); it reads
 * again below half of this.
 */
export const PENDING_BYTES_LIMIT = 64 * 1024 * 1024;

/** {@linkcode SubjectOptions} with their defaults filled in. */
export type ResolvedSubjectOptions =
  & Required<Omit<SubjectOptions, "reactor" | "maxMessageSize" | "security" | "reload">>
  & { readonly maxMessageSize?: number; readonly security?: Security; readonly reload: SubjectReloadOptions };

/** `options` with their defaults filled in. */
export function resolveSubjectOptions(options: SubjectOptions): ResolvedSubjectOptions {
  const packWindow = options.packWindow ?? DEFAULT_WORKER_PACK_WINDOW;
  if (!Number.isFinite(packWindow) || packWindow < 0) {
    throw new RangeError(`packWindow must be a number of milliseconds, 0 or more, got ${packWindow}`);
  }
  return {
    flows: options.flows,
    pullAddress: options.pullAddress,
    workerAddress: options.workerAddress,
    integrationManagerAddress: options.integrationManagerAddress,
    stepLimit: options.stepLimit ?? DEFAULT_STEP_LIMIT,
    heartbeatTimeout: options.heartbeatTimeout ?? DEFAULT_HEARTBEAT_TIMEOUT,
    maxPending: options.maxPending ?? DEFAULT_MAX_PENDING,
    maxInFlightPerConnection: options.maxInFlightPerConnection ?? DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
    maxMessageSize: options.maxMessageSize,
    duplicateWindow: options.duplicateWindow ?? DEFAULT_DUPLICATE_WINDOW,
    replayBuffer: options.replayBuffer ?? DEFAULT_REPLAY_BYTES,
    pausedStore: options.pausedStore ?? ":memory:",
    asyncTimeout: options.asyncTimeout ?? DEFAULT_ASYNC_TIMEOUT,
    maxDeliveries: options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES,
    packWindow,
    imInProcess: options.imInProcess ?? false,
    security: options.security,
    reload: options.reload ?? {},
  };
}
