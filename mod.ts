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

export * from "./src/action_key.ts";
export * from "./src/diagnostics.ts";
export * from "./src/flow_file.ts";
export * from "./src/mapping_file.ts";
export * from "./src/catalog.ts";
export * from "./src/resolve.ts";
export * from "./src/handler.ts";
export * from "./src/load.ts";
export * from "./src/flow_step.ts";
export * from "./src/protocol.ts";
export * from "./src/config.ts";
export { Client, type ClientOptions, type RequestOptions, RequestTimeoutError } from "./src/client.ts";
export {
  IntegrationManager,
  type IntegrationManagerOptions,
  type IntegrationManagerStats,
} from "./src/roles/integration_manager.ts";
export { IM_BACKLOG_LIMIT, Subject, type SubjectOptions, type SubjectStats } from "./src/roles/subject.ts";
export { type SegmentResult, Worker, type WorkerOptions, type WorkerStats } from "./src/roles/worker.ts";
export * from "./src/zmq/mod.ts";
export * from "./src/deployment.ts";
export * from "./src/fault.ts";
