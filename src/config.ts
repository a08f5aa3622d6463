/**
 * Configuration (SPEC §7): built-in defaults < an INI file's `[ZManager]` section (DigitalPy's
 * key names) < `ZMANAGER_*` environment variables < command-line flags.
 *
 * @module
 */

import { scanIni } from "./topic/_ini.ts";
import { DEFAULT_STEP_LIMIT } from "./topic/flow_step.ts";
import { DEFAULT_MAX_MESSAGE_SIZE } from "./wire/protocol.ts";
import { DEFAULT_REPLAY_BYTES } from "./roles/final_replay.ts";

/** Every setting, resolved. */
export interface Config {
  /** Where the default ipc endpoints live. */
  readonly runtime_dir: string;
  /** Where services push requests to the Subject. */
  readonly subject_pull_address: string;
  /** Where workers connect to the Subject. */
  readonly subject_worker_address: string;
  /** Where the Subject (and only it) pushes results to the Integration Manager. */
  readonly integration_manager_pull_address: string;
  /** Where the Integration Manager publishes. */
  readonly integration_manager_pub_address: string;
  /** Run the Integration Manager in the Subject's process (one hop less) instead of its own. */
  readonly integration_manager_in_subject: boolean;
  /** Worker processes `start` runs. */
  readonly worker_count: number;
  /** Steps one worker runs at once (its credit with the Subject). */
  readonly worker_concurrency: number;
  /** Largest number of steps one request may run. */
  readonly step_limit: number;
  /** Milliseconds a handler may run before a `timeout` error. */
  readonly handler_timeout: number;
  /** Milliseconds between worker heartbeats. */
  readonly heartbeat_interval: number;
  /** Milliseconds of silence after which the Subject declares a worker dead. */
  readonly heartbeat_timeout: number;
  /** Milliseconds a role run by `start` may go without rewriting its counters before it is killed and restarted; 0: never. */
  readonly liveness_timeout: number;
  /** Largest accepted frame, in bytes. */
  readonly max_message_size: number;
  /** Requests the Subject holds waiting for worker credit before it stops reading. */
  readonly max_pending: number;
  /** Recent requests the Subject remembers to drop duplicates (same id, position and step count); 0: off. */
  readonly duplicate_window: number;
  /** Bytes of final publications the Subject keeps for requests sent with `"keep":1`, to publish again for a copy. */
  readonly replay_buffer: number;
  /** Requests one service connection may have in flight at the Subject; more are answered `overloaded`. */
  readonly max_in_flight_per_connection: number;
  /** Milliseconds a paused (`@ASYNC`) flow waits to be resumed before a `timeout` error. */
  readonly async_timeout: number;
  /** The SQLite file that keeps paused flows and kept finals across Subject restarts. */
  readonly async_store: string;
  /** Deliveries of a step that may end in its worker's failure before the request is `poisoned`. */
  readonly max_deliveries: number;
  /** Milliseconds: steps go to a worker whose steps come back within this before spreading by credit; 0: spread. */
  readonly worker_pack_window: number;
  /** Milliseconds a handler module may take to import when `start` or `worker` checks it at start-up. */
  readonly handler_import_timeout: number;
  /** Bytes of publications the Integration Manager queues for one subscriber that stops reading. */
  readonly subscriber_buffer: number;
  /** Run handlers in sandbox threads bound to their components' permissions (`--no-sandbox`: off). */
  readonly sandbox: boolean;
  /** The HTTP gateway's bearer-token file (JSON, tokens stored as SHA-256); empty: no auth. */
  readonly http_tokens: string;
  /** Origins the HTTP gateway allows cross-origin requests from, comma-separated; empty: none. */
  readonly http_cors_origins: string;
  /** Largest request body the HTTP gateway reads, in bytes; 0: no limit of its own. */
  readonly http_body_limit: number;
  /** Bytes the HTTP gateway queues for one event-stream or WebSocket client before cutting it off. */
  readonly http_client_buffer: number;
  /** Milliseconds a gateway `POST` waits for the final publication before answering 504. */
  readonly http_wait_timeout: number;
  /** Event streams and WebSockets the HTTP gateway keeps open at once; past it, 503. */
  readonly http_max_streams: number;
  /** Whether the gateway caps its HTTP connections and times out their headers (`off`: `Deno.serve`). */
  readonly http_connection_limits: boolean;
  /** HTTP connections the gateway keeps open at once; past it, new ones are closed at accept. */
  readonly http_max_connections: number;
  /** Of them, from one remote address; 0: no cap per address. */
  readonly http_max_connections_per_ip: number;
  /** Milliseconds a new HTTP connection has to send its first request's headers. */
  readonly http_header_timeout: number;
  /** Milliseconds a kept-alive HTTP connection may wait for its next request. */
  readonly http_idle_timeout: number;
  /** Milliseconds a `POST`'s body has to arrive after its headers (408 past it). */
  readonly http_body_timeout: number;
  /** Milliseconds between heartbeats on the gateway's event streams and WebSockets. */
  readonly http_heartbeat: number;
  /** This process's CURVE secret key file (`keygen`); empty: tcp endpoints are plaintext. */
  readonly curve_secret_key: string;
  /** The Subject's and IM's CURVE public key file, for connecting sides; empty: this process's own. */
  readonly curve_server_key: string;
  /** Folder of the `.pub` keys that may connect as services. */
  readonly curve_allow_services: string;
  /** Folder of the `.pub` keys that may connect as workers. */
  readonly curve_allow_workers: string;
  /** Folder of the `.pub` keys that may subscribe. */
  readonly curve_allow_subscribers: string;
}

/** Steps one worker runs at once, by default. */
export const DEFAULT_WORKER_CONCURRENCY = 256;
/** Milliseconds a handler may run, by default. */
export const DEFAULT_HANDLER_TIMEOUT = 30_000;
/** Milliseconds between worker heartbeats, by default. */
export const DEFAULT_HEARTBEAT_INTERVAL = 1000;
/** Milliseconds of worker silence before its steps are redelivered, by default. */
export const DEFAULT_HEARTBEAT_TIMEOUT = 5000;
/**
 * Milliseconds a role run by `start` may go without rewriting its counters (every second while
 * its event loop turns) before `start` takes it for stopped or hung, kills it and starts another,
 * by default.
 */
export const DEFAULT_LIVENESS_TIMEOUT = 30_000;
/** Requests the Subject holds for worker credit before it stops reading, by default. */
export const DEFAULT_MAX_PENDING = 10_000;
/** Recent requests the Subject remembers to drop duplicates, by default. */
export const DEFAULT_DUPLICATE_WINDOW = 100_000;
/**
 * Requests one service connection may have in flight at the Subject, by default: ten times
 * `max_pending`, so it never binds before the Subject's own back-pressure does for requests that
 * wait for workers (the benchmark's closed loop keeps 2,000 in flight on one connection; the HTTP
 * gateway brings all its clients through one). It binds for requests held elsewhere, at a
 * `@PUBLISH` step no service continues; set it below `max_pending` to share the Subject's queue
 * among services.
 */
export const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION = 100_000;
/** Milliseconds a paused flow waits to be resumed, by default. */
export const DEFAULT_ASYNC_TIMEOUT = 3_600_000;
/** Deliveries of a step that may end in its worker's failure, by default. */
export const DEFAULT_MAX_DELIVERIES = 2;
/** Default of `worker_pack_window`, in ms. */
export const DEFAULT_WORKER_PACK_WINDOW = 1;
/** Milliseconds a handler module may take to import at start-up, by default. */
export const DEFAULT_HANDLER_IMPORT_TIMEOUT = 10_000;
/** Bytes of publications queued for one subscriber that stops reading, by default (64 MiB). */
export const DEFAULT_SUBSCRIBER_BUFFER = 64 * 1024 * 1024;
/** Bytes the HTTP gateway queues for one slow event client, by default (1 MiB). */
export const DEFAULT_HTTP_CLIENT_BUFFER = 1024 * 1024;
/** Milliseconds a gateway `POST` waits for the final publication, by default. */
export const DEFAULT_HTTP_WAIT_TIMEOUT = 30_000;
/** Event streams and WebSockets the HTTP gateway keeps open at once, by default. */
export const DEFAULT_HTTP_MAX_STREAMS = 1000;
/** Default of `http_max_connections`. */
export const DEFAULT_HTTP_MAX_CONNECTIONS = 10_000;
/** Default of `http_header_timeout`, ms. */
export const DEFAULT_HTTP_HEADER_TIMEOUT = 10_000;
/** Default of `http_idle_timeout`, ms. */
export const DEFAULT_HTTP_IDLE_TIMEOUT = 60_000;
/** Default of `http_body_timeout`, ms. */
export const DEFAULT_HTTP_BODY_TIMEOUT = 30_000;
/** Default of `http_heartbeat`, ms. */
export const DEFAULT_HTTP_HEARTBEAT = 15_000;

/** Names of the settings, in documentation order. */
export const CONFIG_KEYS: readonly (keyof Config)[] = [
  "runtime_dir",
  "subject_pull_address",
  "subject_worker_address",
  "integration_manager_pull_address",
  "integration_manager_pub_address",
  "integration_manager_in_subject",
  "worker_count",
  "worker_concurrency",
  "step_limit",
  "handler_timeout",
  "heartbeat_interval",
  "heartbeat_timeout",
  "liveness_timeout",
  "max_message_size",
  "max_pending",
  "duplicate_window",
  "replay_buffer",
  "max_in_flight_per_connection",
  "async_timeout",
  "async_store",
  "max_deliveries",
  "worker_pack_window",
  "handler_import_timeout",
  "subscriber_buffer",
  "sandbox",
  "http_tokens",
  "http_cors_origins",
  "http_body_limit",
  "http_client_buffer",
  "http_wait_timeout",
  "http_max_streams",
  "http_connection_limits",
  "http_max_connections",
  "http_max_connections_per_ip",
  "http_header_timeout",
  "http_idle_timeout",
  "http_body_timeout",
  "http_heartbeat",
  "curve_secret_key",
  "curve_server_key",
  "curve_allow_services",
  "curve_allow_workers",
  "curve_allow_subscribers",
];

/** Each setting's default, as documentation shows it, and what it means: the README's table is made from this. */
export const SETTINGS_DOC: Readonly<
  Record<keyof Config, { readonly default: string; readonly meaning: string }>
> = {
  runtime_dir: {
    default: "`/tmp/zmanager-<uid>`",
    meaning: "where the default ipc endpoints, stats and the lock live",
  },
  subject_pull_address: { default: "`ipc://<runtime_dir>/subject`", meaning: "where services send requests" },
  subject_worker_address: { default: "`ipc://<runtime_dir>/workers`", meaning: "where workers connect" },
  integration_manager_pull_address: {
    default: "`ipc://<runtime_dir>/im-pull`",
    meaning: "where the Subject hands results to the IM (acknowledged)",
  },
  integration_manager_pub_address: {
    default: "`ipc://<runtime_dir>/im-pub`",
    meaning: "where the IM publishes",
  },
  integration_manager_in_subject: {
    default: "`off`",
    meaning:
      "run the IM in the Subject's process, linked over inproc (`on`/`off`): one hop less; see [below](#the-integration-manager-in-the-subjects-process)",
  },
  worker_count: { default: "number of cores", meaning: "worker processes `start` runs (`--workers`)" },
  worker_concurrency: {
    default: String(DEFAULT_WORKER_CONCURRENCY),
    meaning: "steps one worker runs at once (its credit)",
  },
  step_limit: { default: String(DEFAULT_STEP_LIMIT), meaning: "most steps one request may run" },
  handler_timeout: {
    default: String(DEFAULT_HANDLER_TIMEOUT),
    meaning: "ms a handler may run before a `timeout` error",
  },
  heartbeat_interval: {
    default: String(DEFAULT_HEARTBEAT_INTERVAL),
    meaning: "ms between worker heartbeats",
  },
  heartbeat_timeout: {
    default: String(DEFAULT_HEARTBEAT_TIMEOUT),
    meaning: "ms of worker silence before its steps are given to another",
  },
  liveness_timeout: {
    default: String(DEFAULT_LIVENESS_TIMEOUT),
    meaning:
      "ms a role `start` runs may stay stopped (SIGSTOP), or go without rewriting its counters once it has, before it is killed and restarted; 0: never; see Reliability",
  },
  max_message_size: {
    default: String(DEFAULT_MAX_MESSAGE_SIZE),
    meaning: "bytes: largest frame from a service, or values from a handler",
  },
  max_pending: {
    default: String(DEFAULT_MAX_PENDING),
    meaning: "requests the Subject holds for worker credit before it stops reading",
  },
  duplicate_window: {
    default: String(DEFAULT_DUPLICATE_WINDOW),
    meaning: "recent requests the Subject remembers to drop repeats; 0: off",
  },
  replay_buffer: {
    default: String(DEFAULT_REPLAY_BYTES),
    meaning:
      "bytes of finals the Subject keeps (memory and `async_store`) for requests sent with `keep` (`Idempotency-Key`), published again for a later copy (0: none; at most 1073741824)",
  },
  max_in_flight_per_connection: {
    default: String(DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION),
    meaning: "requests one service connection may have in flight; more get `overloaded`",
  },
  async_timeout: {
    default: String(DEFAULT_ASYNC_TIMEOUT),
    meaning: "ms a paused (`@ASYNC`) flow waits to be resumed",
  },
  async_store: {
    default: "`<runtime_dir>/paused.sqlite`",
    meaning:
      "the SQLite file that keeps paused flows and kept finals (`replay_buffer`) across Subject restarts; one deployment's (locked)",
  },
  max_deliveries: {
    default: String(DEFAULT_MAX_DELIVERIES),
    meaning: "deliveries of a step that may end in its worker's failure (then `poisoned`)",
  },
  worker_pack_window: {
    default: String(DEFAULT_WORKER_PACK_WINDOW),
    meaning:
      "ms: a step goes to a worker whose steps come back within this (a light load keeps to one), else to the most free credit (0: always); see [Design notes](#design-notes)",
  },
  handler_import_timeout: {
    default: String(DEFAULT_HANDLER_IMPORT_TIMEOUT),
    meaning: "ms a handler module may take to import in the start-up check",
  },
  subscriber_buffer: {
    default: String(DEFAULT_SUBSCRIBER_BUFFER),
    meaning:
      "bytes published while a subscriber reads nothing before the IM disconnects it (its queue: this / 4 KiB publications)",
  },
  sandbox: {
    default: "`on`",
    meaning:
      "run handlers in sandbox threads with their components' permissions (`on`/`off`; `--no-sandbox`)",
  },
  http_tokens: {
    default: "(none: no auth)",
    meaning: "HTTP gateway: the bearer-token file (SHA-256 of each token, its flow prefixes, its rate)",
  },
  http_cors_origins: {
    default: "(none)",
    meaning: "HTTP gateway: origins allowed cross-origin requests, comma-separated (`*`: any)",
  },
  http_body_limit: { default: "0 (off)", meaning: "HTTP gateway: largest request body in bytes (413 above)" },
  http_client_buffer: {
    default: String(DEFAULT_HTTP_CLIENT_BUFFER),
    meaning: "HTTP gateway: bytes queued for one SSE/WebSocket client before it is cut off",
  },
  http_wait_timeout: {
    default: String(DEFAULT_HTTP_WAIT_TIMEOUT),
    meaning: "HTTP gateway: ms a `POST` waits for the final publication (then 504)",
  },
  http_max_streams: {
    default: String(DEFAULT_HTTP_MAX_STREAMS),
    meaning:
      "HTTP gateway: SSE streams and WebSockets open at once, all callers (503 past it; a token's own cap: `streams`)",
  },
  http_connection_limits: {
    default: "on",
    meaning:
      "HTTP gateway: the connection cap and the header and idle timeouts below (`off`: served by `Deno.serve`, for a gateway behind a proxy that applies its own)",
  },
  http_max_connections: {
    default: String(DEFAULT_HTTP_MAX_CONNECTIONS),
    meaning:
      "HTTP gateway: connections open at once (closed at accept past it; lowered to fit the open-file limit)",
  },
  http_max_connections_per_ip: {
    default: "0 (off)",
    meaning: "HTTP gateway: connections open at once from one remote address (closed at accept past it)",
  },
  http_header_timeout: {
    default: String(DEFAULT_HTTP_HEADER_TIMEOUT),
    meaning: "HTTP gateway: ms a new connection has to send a request's headers (then closed)",
  },
  http_idle_timeout: {
    default: String(DEFAULT_HTTP_IDLE_TIMEOUT),
    meaning: "HTTP gateway: ms a kept-alive connection may wait for its next request (then closed)",
  },
  http_body_timeout: {
    default: String(DEFAULT_HTTP_BODY_TIMEOUT),
    meaning: "HTTP gateway: ms a `POST`'s body has to arrive after its headers (408, connection closed)",
  },
  http_heartbeat: {
    default: String(DEFAULT_HTTP_HEARTBEAT),
    meaning:
      "HTTP gateway: ms between heartbeats on event streams and WebSockets (they keep proxies from closing an idle stream)",
  },
  curve_secret_key: {
    default: "none",
    meaning:
      "this host's secret key file (`keygen NAME` writes `NAME.key`, mode 0600); when set, every tcp endpoint uses CURVE",
  },
  curve_server_key: {
    default: "this host's public key",
    meaning: "the `.pub` file of the Subject's and IM's key pair, for workers and services",
  },
  curve_allow_services: {
    default: "none",
    meaning: "folder of `.pub` files that may send requests (Subject, over tcp)",
  },
  curve_allow_workers: { default: "none", meaning: "folder of `.pub` files that may join as workers" },
  curve_allow_subscribers: {
    default: "none",
    meaning: "folder of `.pub` files that may subscribe to the IM (over tcp)",
  },
};

/** The settings as a Markdown table (the README's). */
export function settingsTable(): string {
  return [
    "| setting | default | meaning |",
    "| --- | --- | --- |",
    ...CONFIG_KEYS.map((k) => `| \`${k}\` | ${SETTINGS_DOC[k].default} | ${SETTINGS_DOC[k].meaning} |`),
  ].join("\n");
}

/** The settings that are text (paths and endpoints); every other one is a whole number. */
const TEXT = new Set<keyof Config>([
  "runtime_dir",
  "subject_pull_address",
  "subject_worker_address",
  "integration_manager_pull_address",
  "integration_manager_pub_address",
  "integration_manager_in_subject",
  "async_store",
  "sandbox",
  "http_tokens",
  "http_cors_origins",
  "curve_secret_key",
  "curve_server_key",
  "curve_allow_services",
  "curve_allow_workers",
  "curve_allow_subscribers",
]);
const NUMERIC = new Set(CONFIG_KEYS.filter((k) => !TEXT.has(k)));

/** The default runtime directory: short, private to the user, the same for every command. */
export function defaultRuntimeDir(): string {
  const uid = Deno.uid() ?? 0;
  const base = Deno.env.get("XDG_RUNTIME_DIR") && (Deno.env.get("XDG_RUNTIME_DIR")!.length < 40)
    ? Deno.env.get("XDG_RUNTIME_DIR")!
    : "/tmp";
  return `${base}/zmanager-${uid}`;
}

/** Settings given as text, before defaults are filled in. */
export type PartialConfig = Partial<Record<keyof Config, string | number>>;

/** A bad setting. */
export class ConfigError extends Error {
  /** What kind of error this is, for programs: `bad_config`. */
  readonly code = "bad_config";
  /** Builds the error; `options.cause` is the error behind it, if any. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/** Reads the `[ZManager]` section of an INI file; unknown keys are errors naming the line. */
export function parseConfigIni(textContent: string, file: string): PartialConfig {
  const out: PartialConfig = {};
  let inSection = false;
  const errors: string[] = [];
  for (const l of scanIni(textContent)) {
    if (l.kind === "section") {
      inSection = l.name.toLowerCase() === "zmanager";
      continue;
    }
    if (!inSection) continue;
    if (l.kind === "malformed") {
      errors.push(`${file}:${l.line}:${l.column}: ${l.reason}`);
      continue;
    }
    const eq = l.text.search(/[=:]/);
    if (eq < 0) {
      errors.push(`${file}:${l.line}:${l.column}: expected key = value`);
      continue;
    }
    const key = l.text.slice(0, eq).trim().toLowerCase() as keyof Config;
    if (!CONFIG_KEYS.includes(key)) {
      errors.push(
        `${file}:${l.line}:${l.column}: unknown setting "${key}"; known: ${CONFIG_KEYS.join(", ")}`,
      );
      continue;
    }
    out[key] = l.text.slice(eq + 1).trim();
  }
  if (errors.length) throw new ConfigError(errors.join("\n"));
  return out;
}

/**
 * `ZMANAGER_` environment variables that are not settings: the log level, the libzmq to load, the
 * poll to use, and those the project's own tests and bench read.
 */
export const OTHER_ENV_VARIABLES: readonly string[] = [
  "ZMANAGER_LOG",
  "ZMANAGER_LIBZMQ",
  "ZMANAGER_ZMQ_POLL",
  "ZMANAGER_TEST_LOGS",
  "ZMANAGER_SCREENSHOT",
  "ZMANAGER_RELOAD_RATE",
  "ZMANAGER_RELOAD_SECONDS",
];

/** The levels `ZMANAGER_LOG` takes. */
export const LOG_LEVELS: readonly string[] = ["debug", "info", "warning", "error"];

/**
 * Settings from `ZMANAGER_<KEY>` environment variables. A `ZMANAGER_` variable that is neither a
 * setting nor one of {@linkcode OTHER_ENV_VARIABLES}, or a `ZMANAGER_LOG` that is not a level, is
 * an error, as an unknown key in a config file is (a misspelt one was ignored).
 */
export function configFromEnv(env: Record<string, string> = Deno.env.toObject()): PartialConfig {
  const out: PartialConfig = {};
  const errors: string[] = [];
  const settings = new Map(CONFIG_KEYS.map((k) => [`ZMANAGER_${k.toUpperCase()}`, k]));
  for (const [name, v] of Object.entries(env)) {
    if (!name.startsWith("ZMANAGER_")) continue;
    const key = settings.get(name);
    if (key !== undefined) {
      if (v !== "") out[key] = v;
    } else if (name === "ZMANAGER_LOG") {
      if (v !== "" && !LOG_LEVELS.includes(v)) {
        errors.push(`environment variable ZMANAGER_LOG is "${v}": use one of ${LOG_LEVELS.join(", ")}`);
      }
    } else if (!OTHER_ENV_VARIABLES.includes(name)) {
      errors.push(
        `environment variable ${name} is not a setting: unset it, or use ZMANAGER_<SETTING> with one of ${
          CONFIG_KEYS.join(", ")
        } (in capitals)`,
      );
    }
  }
  if (errors.length) throw new ConfigError(errors.join("\n"));
  return out;
}

/**
 * Resolves layers, lowest precedence first, into a full config. Endpoints not given
 * default to ipc endpoints in the runtime directory.
 */
export function resolveConfig(...layers: PartialConfig[]): Config {
  const merged: PartialConfig = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) merged[k as keyof Config] = v;
  }
  const dir = String(merged.runtime_dir ?? defaultRuntimeDir()).replace(/\/+$/, "");
  // Digits only: Number() would take "" and " " for 0, and "0x7d0" or "2e3" for 2000.
  const num = (key: keyof Config, def: number, min: number): number => {
    const raw = merged[key];
    if (raw === undefined) return def;
    const n = /^\s*\d+\s*$/.test(String(raw)) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < min) {
      throw new ConfigError(`setting ${key} must be a whole number of at least ${min}, got "${raw}"`);
    }
    return n;
  };
  for (const k of Object.keys(merged) as (keyof Config)[]) {
    if (!NUMERIC.has(k) && typeof merged[k] !== "string") merged[k] = String(merged[k]);
  }
  // A buffer the Subject allocates at once: past this, the allocation fails on most machines.
  const atMost = (key: keyof Config, n: number, max: number): number => {
    if (n > max) throw new ConfigError(`setting ${key} must be at most ${max}, got "${merged[key]}"`);
    return n;
  };
  // Roles rewrite their counters every second: a shorter bound would kill healthy ones.
  const liveness = (n: number): number => {
    if (n > 0 && n < 2000) {
      throw new ConfigError(
        `setting liveness_timeout must be 0 (never) or at least 2000 (roles rewrite their counters every second), got "${merged.liveness_timeout}"`,
      );
    }
    return n;
  };
  const endpoint = (key: keyof Config, def: string): string => {
    const value = String(merged[key] ?? def);
    const problem = endpointProblem(value);
    if (problem) throw new ConfigError(`setting ${key}: ${problem}, got "${value}"`);
    return value;
  };
  return {
    runtime_dir: dir,
    subject_pull_address: endpoint("subject_pull_address", `ipc://${dir}/subject`),
    subject_worker_address: endpoint("subject_worker_address", `ipc://${dir}/workers`),
    integration_manager_pull_address: endpoint("integration_manager_pull_address", `ipc://${dir}/im-pull`),
    integration_manager_pub_address: endpoint("integration_manager_pub_address", `ipc://${dir}/im-pub`),
    integration_manager_in_subject: onOff(
      "integration_manager_in_subject",
      merged.integration_manager_in_subject,
      false,
    ),
    worker_count: num("worker_count", navigator.hardwareConcurrency || 1, 0),
    worker_concurrency: num("worker_concurrency", DEFAULT_WORKER_CONCURRENCY, 1),
    step_limit: num("step_limit", DEFAULT_STEP_LIMIT, 1),
    handler_timeout: num("handler_timeout", DEFAULT_HANDLER_TIMEOUT, 1),
    heartbeat_interval: num("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL, 10),
    heartbeat_timeout: num("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT, 50),
    liveness_timeout: liveness(num("liveness_timeout", DEFAULT_LIVENESS_TIMEOUT, 0)),
    max_message_size: num("max_message_size", DEFAULT_MAX_MESSAGE_SIZE, 1024),
    max_pending: num("max_pending", DEFAULT_MAX_PENDING, 1),
    duplicate_window: num("duplicate_window", DEFAULT_DUPLICATE_WINDOW, 0),
    replay_buffer: atMost("replay_buffer", num("replay_buffer", DEFAULT_REPLAY_BYTES, 0), 2 ** 30),
    max_in_flight_per_connection: num(
      "max_in_flight_per_connection",
      DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
      1,
    ),
    async_timeout: num("async_timeout", DEFAULT_ASYNC_TIMEOUT, 1),
    async_store: String(merged.async_store ?? `${dir}/paused.sqlite`),
    max_deliveries: num("max_deliveries", DEFAULT_MAX_DELIVERIES, 1),
    worker_pack_window: num("worker_pack_window", DEFAULT_WORKER_PACK_WINDOW, 0),
    handler_import_timeout: num("handler_import_timeout", DEFAULT_HANDLER_IMPORT_TIMEOUT, 1),
    subscriber_buffer: num("subscriber_buffer", DEFAULT_SUBSCRIBER_BUFFER, 1024 * 1024),
    sandbox: onOff("sandbox", merged.sandbox, true),
    http_tokens: String(merged.http_tokens ?? ""),
    http_cors_origins: String(merged.http_cors_origins ?? ""),
    http_body_limit: num("http_body_limit", 0, 0),
    http_client_buffer: num("http_client_buffer", DEFAULT_HTTP_CLIENT_BUFFER, 1024),
    http_wait_timeout: num("http_wait_timeout", DEFAULT_HTTP_WAIT_TIMEOUT, 1),
    http_max_streams: num("http_max_streams", DEFAULT_HTTP_MAX_STREAMS, 1),
    http_connection_limits: onOff("http_connection_limits", merged.http_connection_limits, true),
    http_max_connections: num("http_max_connections", DEFAULT_HTTP_MAX_CONNECTIONS, 1),
    http_max_connections_per_ip: num("http_max_connections_per_ip", 0, 0),
    http_header_timeout: num("http_header_timeout", DEFAULT_HTTP_HEADER_TIMEOUT, 1),
    http_idle_timeout: num("http_idle_timeout", DEFAULT_HTTP_IDLE_TIMEOUT, 1),
    http_body_timeout: num("http_body_timeout", DEFAULT_HTTP_BODY_TIMEOUT, 1),
    http_heartbeat: num("http_heartbeat", DEFAULT_HTTP_HEARTBEAT, 10),
    curve_secret_key: String(merged.curve_secret_key ?? ""),
    curve_server_key: String(merged.curve_server_key ?? ""),
    curve_allow_services: String(merged.curve_allow_services ?? ""),
    curve_allow_workers: String(merged.curve_allow_workers ?? ""),
    curve_allow_subscribers: String(merged.curve_allow_subscribers ?? ""),
  };
}

/** The longest path of an `ipc://` endpoint (`sun_path` holds 108 bytes with its terminating NUL). */
const IPC_PATH_MAX = 107;

/**
 * What is wrong with a ZeroMQ endpoint setting, or `undefined`: a transport libzmq serves here
 * (`tcp://HOST:PORT`, `ipc://PATH`, `inproc://NAME`), a port up to 65535 (or `*`) for tcp, an ipc
 * path the kernel takes.
 * Caught here, a bad endpoint is a usage error naming its setting, not a `zmq_connect` failure
 * deep in a role.
 */
export function endpointProblem(endpoint: string): string | undefined {
  const m = /^([a-z]+):\/\/(.*)$/.exec(endpoint);
  const fix = "write tcp://HOST:PORT, ipc://PATH or inproc://NAME";
  if (!m || !["tcp", "ipc", "inproc"].includes(m[1])) return `not a ZeroMQ endpoint: ${fix}`;
  const [, transport, rest] = m;
  if (!rest) {
    return `the endpoint has no ${
      transport === "tcp" ? "host" : transport === "ipc" ? "path" : "name"
    }: ${fix}`;
  }
  if (transport === "tcp") {
    const port = /:(\d{1,5}|\*)$/.exec(rest)?.[1];
    if (port === undefined) return "a tcp endpoint needs a port (tcp://HOST:PORT, or :* for any)";
    // libzmq takes the port modulo 65,536: tcp://HOST:99999 would bind 34463. (0, as *, binds any.)
    if (port !== "*" && Number(port) > 65535) {
      return `port ${port} is not a tcp port: write 1 to 65535 (or :* for any)`;
    }
  }
  if (transport === "ipc" && new TextEncoder().encode(rest).length > IPC_PATH_MAX) {
    return `the ipc path is over ${IPC_PATH_MAX} bytes (the kernel's limit): use a shorter runtime_dir or path`;
  }
  return undefined;
}

/** A setting that is on or off: `on`/`off`, `true`/`false`, `1`/`0`, `yes`/`no`. */
function onOff(key: keyof Config, raw: string | number | undefined, def: boolean): boolean {
  if (raw === undefined) return def;
  const v = String(raw).trim().toLowerCase();
  if (["on", "true", "1", "yes"].includes(v)) return true;
  if (["off", "false", "0", "no"].includes(v)) return false;
  throw new ConfigError(`setting ${key} must be on or off (or true/false, yes/no, 1/0), got "${raw}"`);
}

/** Loads a config: defaults < file < environment < flags. */
export async function loadConfig(options: { file?: string; flags?: PartialConfig } = {}): Promise<Config> {
  let fromFile: PartialConfig = {};
  if (options.file) {
    let content: string;
    try {
      content = await Deno.readTextFile(options.file);
    } catch (e) {
      throw new ConfigError(`${options.file}: cannot read the config file: ${(e as Error).message}`, {
        cause: e,
      });
    }
    fromFile = parseConfigIni(content, options.file);
  }
  return resolveConfig(fromFile, configFromEnv(), options.flags ?? {});
}

/**
 * Creates the runtime directory (mode 0700) if it does not exist, and checks that it is this
 * user's and closed to others: its ipc endpoints take no keys, so its permissions are their guard.
 *
 * @throws {ConfigError} when another user owns it or others may enter it.
 */
export async function ensureRuntimeDir(config: Config): Promise<void> {
  await Deno.mkdir(config.runtime_dir, { recursive: true, mode: 0o700 });
  if (Deno.build.os === "windows") return;
  const st = await Deno.stat(config.runtime_dir);
  const mode = (st.mode ?? 0) & 0o777;
  if (st.uid !== Deno.uid() || mode & 0o077) {
    throw new ConfigError(
      `the runtime directory ${config.runtime_dir} is ${
        st.uid !== Deno.uid() ? `owned by uid ${st.uid}` : `mode 0${mode.toString(8)}`
      }: other users could reach its ipc endpoints, which take no keys; chmod 700 it or give another --runtime-dir`,
    );
  }
}
