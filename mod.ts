/**
 * ZManager for Deno: a ZeroMQ message router that runs DigitalPy-style flows.
 *
 * This module exposes the pure topic system (action keys, flow and mapping files, the
 * seven-rule handler resolution, flow stepping, the wire format), the three roles
 * ({@linkcode Subject}, {@linkcode Worker}, {@linkcode IntegrationManager}), the service
 * {@linkcode Client}, and the project's own libzmq binding ({@linkcode Reactor}).
 *
 * @example
 * ```ts
 * import { buildCatalog, parseActionKey, resolveKey } from "./mod.ts";
 *
 * const catalog = buildCatalog([
 *   { file: "flows.ini", text: "[Echo]\n?Echo?Push\nSubject?Echo?Echo\n??done\n" },
 *   { file: "mapping.ini", text: "[actionmapping]\n??Echo = ./echo.ts#echo\n" },
 * ]);
 * const step = catalog.flows.get("Echo")!.steps[1];
 * console.log(resolveKey(catalog.mappings, step.key)?.rule); // 6
 * console.log(parseActionKey("?Chat@ASYNC?Reply").decorator); // "ASYNC"
 * ```
 *
 * @module
 */

// The pure topic system: action keys, flow and mapping files, the catalog, resolution, stepping.
export {
  type ActionKey,
  ActionKeySyntaxError,
  ASYNC,
  DONE_KEY,
  formatActionKey,
  isDone,
  keysMatch,
  lookupKey,
  parseActionKey,
  type ParseResult,
  PUBLISH,
  tryParseActionKey,
} from "./src/topic/action_key.ts";
export { type Diagnostic, formatDiagnostic, type Place } from "./src/topic/diagnostics.ts";
export { type Flow, type FlowFileResult, type FlowStep, parseFlowFile } from "./src/topic/flow_file.ts";
export {
  type MappingEntry,
  type MappingFileResult,
  parseMappingFile,
  type TimeoutEntry,
} from "./src/topic/mapping_file.ts";
export {
  buildCatalog,
  type Catalog,
  type CatalogOptions,
  detectKind,
  type FileKind,
  hasErrors,
  type SourceFile,
} from "./src/topic/catalog.ts";
export { explainKey, type Explanation, type Resolution, resolveKey, RULES } from "./src/topic/resolve.ts";
export {
  DEFAULT_STEP_LIMIT,
  type Placement,
  placeRequest,
  type StepKind,
  stepKind,
} from "./src/topic/flow_step.ts";
export {
  advance,
  NO_HANDLER,
  runSegment,
  type SegmentOutcome,
  type SegmentPlan,
  type StepCall,
  type StepRun,
  StepTimeoutError,
} from "./src/topic/segment.ts";

// Handlers and loading files from disk.
export {
  type Handler,
  type HandlerContext,
  type HandlerLogger,
  HandlerRegistry,
  type Values,
} from "./src/handler.ts";
export { loadFiles, loadHandlers, type LoadOptions } from "./src/load.ts";

// The wire: topics, headers, publications (PROTOCOL.md).
export {
  DEFAULT_MAX_MESSAGE_SIZE,
  doneTopic,
  type ErrorCode,
  errorTopic,
  formatTopic,
  type Header,
  isFinal,
  parseTopic,
  PROTOCOL_VERSION,
  type Publication,
  subscriptionPrefix,
  type TopicFields,
} from "./src/wire/protocol.ts";

// Settings.
export {
  type Config,
  CONFIG_KEYS,
  ConfigError,
  loadConfig,
  type PartialConfig,
  resolveConfig,
} from "./src/config.ts";

// The service client and the roles.
export {
  Client,
  type ClientOptions,
  type RequestOptions,
  RequestRefusedError,
  RequestTimeoutError,
  type Submission,
} from "./src/client/client.ts";
export { ReloadError, type ReloadOptions } from "./src/client/reload.ts";
export {
  IntegrationManager,
  type IntegrationManagerOptions,
  type IntegrationManagerStats,
} from "./src/roles/integration_manager.ts";
export { Subject, type SubjectOptions, type SubjectStats } from "./src/roles/subject.ts";
export { Worker, type WorkerOptions, type WorkerStats } from "./src/roles/worker.ts";

// The ZeroMQ binding.
export {
  capabilities,
  libzmq,
  LibZmqNotFoundError,
  Reactor,
  type ReactorOptions,
  ReactorSocket,
  type SocketOptions,
  type SocketTypeName,
  ZmqError,
} from "./src/zmq/mod.ts";
