/**
 * Handlers and their targets (SPEC §5 "Handlers"): `./module.ts#Export.member` resolved
 * relative to the mapping file, or functions registered from code.
 *
 * @module
 */

import {
  type ActionKey,
  formatActionKey,
  type LookupFields,
  lookupKey,
  parseActionKey,
} from "./topic/action_key.ts";
import type { MappingEntry } from "./topic/mapping_file.ts";
import { type Resolution, resolveKey } from "./topic/resolve.ts";
import type { Values } from "./topic/segment.ts";

export type { Values } from "./topic/segment.ts";

/** A minimal structured logger, as given to handlers. */
export interface HandlerLogger {
  /** Logs at debug level. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Logs at info level. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs at warning level. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs at error level. */
  error(message: string, properties?: Record<string, unknown>): void;
}

/** What a handler is told about the step it runs. */
export interface HandlerContext {
  /** The step's action key. */
  readonly key: ActionKey;
  /** The flow name. */
  readonly flow: string;
  /** The request id. */
  readonly id: string;
  /** The step's position in the flow. */
  readonly position: number;
  /** A logger for this step. */
  readonly logger: HandlerLogger;
  /** Aborted when the step times out or the worker stops. */
  readonly signal: AbortSignal;
}

/**
 * A handler: takes the values, returns the values of the next step. Throwing or rejecting
 * produces a `handler_error` publication.
 */
export type Handler = (values: Values, context: HandlerContext) => Values | Promise<Values>;

/** A handler bound to its `this`, ready to call. */
export interface BoundHandler {
  /** Calls the handler with its original `this`. */
  readonly call: Handler;
  /** Where it came from: a mapping target, or `code` for programmatic registration. */
  readonly source: string;
}

/** A parsed `module#Export.member` target. */
export interface TargetRef {
  /** The module specifier as written. */
  readonly specifier: string;
  /** The export path, e.g. `["Iam", "connection"]`. */
  readonly path: readonly string[];
}

const EXPORT_PATH = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/**
 * Parses a TypeScript target. Returns a reason string when the target is not of the form
 * `module#Export.member` (a Python dotted path, for example).
 *
 * @example
 * ```ts
 * import { parseTarget } from "./handler.ts";
 * parseTarget("./iam.ts#Iam.connect"); // { specifier: "./iam.ts", path: ["Iam", "connect"] }
 * ```
 */
export function parseTarget(target: string): TargetRef | string {
  const hash = target.lastIndexOf("#");
  if (hash < 0) {
    return /^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$/.test(target)
      ? "a Python dotted path, not a module#export target; write ./module.ts#Export.member"
      : "not a module#export target; write ./module.ts#Export.member";
  }
  const specifier = target.slice(0, hash);
  const exportPath = target.slice(hash + 1);
  if (specifier === "") return "missing module before '#'";
  if (!EXPORT_PATH.test(exportPath)) {
    return `bad export path "${exportPath}" after '#'; write Export or Export.member`;
  }
  return { specifier, path: exportPath.split(".") };
}

/** Turns a target's module specifier into an import URL, relative to the mapping file. */
export function targetModuleUrl(specifier: string, mappingFileUrl: URL): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)) {
    return specifier; // npm:, jsr:, file:, https: …
  }
  return new URL(specifier, mappingFileUrl).href;
}

/**
 * Imports a target and walks its export path. A function reached as a member of an
 * object or class is bound to that object. With `version` (a configuration version's tag, see
 * `roles/worker_versions.ts`), a local module is imported afresh for that version.
 */
export async function loadTarget(
  target: string,
  mappingFileUrl: URL,
  version?: number | string,
): Promise<BoundHandler | string> {
  const ref = parseTarget(target);
  if (typeof ref === "string") return ref;
  let url = targetModuleUrl(ref.specifier, mappingFileUrl);
  // A configuration version's own instance of a local module (read from disk again): the module
  // cache is keyed by URL. Modules it imports are the ones already loaded.
  if (version !== undefined && url.startsWith("file:")) {
    url += `${url.includes("?") ? "&" : "?"}zmanager_version=${version}`;
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    return `cannot import ${url}: ${describeImportError(e)}`;
  }
  let owner: unknown = undefined;
  let value: unknown = mod;
  for (let i = 0; i < ref.path.length; i++) {
    const name = ref.path[i];
    if (
      value === null || (typeof value !== "object" && typeof value !== "function") ||
      !(name in (value as object))
    ) {
      return `${url} has no ${ref.path.slice(0, i + 1).join(".")}`;
    }
    owner = value;
    value = (value as Record<string, unknown>)[name];
  }
  if (typeof value !== "function") {
    return `${ref.path.join(".")} in ${url} is a ${typeof value}, not a function`;
  }
  const fn = value as Handler;
  const self = owner === mod ? undefined : owner;
  return { call: self === undefined ? fn : fn.bind(self), source: target };
}

/** A mapping target that could not be loaded. */
export interface UnresolvedTarget {
  /** The entry. */
  readonly entry: MappingEntry;
  /** Why. */
  readonly reason: string;
}

/**
 * Handlers by lookup key, resolved with the seven rules. Filled from mapping entries
 * ({@linkcode HandlerRegistry.loadEntries}) and from code ({@linkcode HandlerRegistry.register}).
 *
 * @example
 * ```ts
 * import { HandlerRegistry } from "./handler.ts";
 * const reg = new HandlerRegistry();
 * reg.register("??Echo", (v) => v);
 * reg.resolve({ sender: "S", context: "F", action: "Echo" })?.rule; // 6
 * ```
 */
export class HandlerRegistry {
  readonly #handlers = new Map<string, BoundHandler>();

  /** Registers a handler under a key (its decorator, if any, is ignored). Later wins. */
  register(key: string | ActionKey, handler: Handler): this {
    const k = typeof key === "string" ? parseActionKey(key) : key;
    this.#handlers.set(lookupKey(k), { call: handler, source: `code:${formatActionKey(k)}` });
    return this;
  }

  /** Imports every entry's target (for configuration `version`, see {@linkcode loadTarget}); returns the ones that could not be loaded. */
  async loadEntries(
    entries: Iterable<MappingEntry>,
    fileUrl: (file: string) => URL,
    version?: number | string,
  ): Promise<UnresolvedTarget[]> {
    const unresolved: UnresolvedTarget[] = [];
    for (const entry of entries) {
      const r = await loadTarget(entry.target, fileUrl(entry.file), version);
      if (typeof r === "string") unresolved.push({ entry, reason: r });
      else this.#handlers.set(entry.lookup, r);
    }
    return unresolved;
  }

  /** Finds the handler for a concrete key by the seven rules. */
  resolve(key: LookupFields): Resolution<BoundHandler> | undefined {
    return resolveKey(this.#handlers, key);
  }

  /** Number of registered lookup keys. */
  get size(): number {
    return this.#handlers.size;
  }
}

/**
 * An import error's first line, and where in the module it happened when that is known (a
 * location in the message or stack that is not in `importer`, the module that called `import()`).
 */
export function describeImportError(e: unknown, importer: string = import.meta.url): string {
  if (!(e instanceof Error)) return String(e);
  const first = e.message.split("\n")[0];
  const self = new URL(importer).href;
  const where = [
    ...`${e.message}\n${e.stack ?? ""}`.matchAll(/\bat (?:.*\()?((?:file|https?):\/\/[^\s()]+:\d+:\d+)/g),
  ]
    .map((m) => m[1])
    .find((loc) => !loc.startsWith(self) && !first.includes(loc));
  return where ? `${first} (at ${where})` : first;
}
