/**
 * ZManager for Deno: a ZeroMQ message router that runs DigitalPy-style flows.
 *
 * This module exposes the pure topic system: action keys, flow and mapping files, the
 * seven-rule handler resolution, and the loaders.
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
