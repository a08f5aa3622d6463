/**
 * Reading flow and mapping files from disk into a {@linkcode Catalog}, and loading
 * their handler targets.
 *
 * @module
 */

import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import {
  buildCatalog,
  type Catalog,
  type CatalogOptions,
  type FileKind,
  type SourceFile,
} from "./topic/catalog.ts";
import type { Diagnostic } from "./topic/diagnostics.ts";
import { HandlerRegistry, type UnresolvedTarget } from "./handler.ts";

/** Options for {@linkcode loadFiles}. */
export interface LoadOptions extends CatalogOptions {
  /** Forces the kind of every file; by default it is told by content. */
  readonly kind?: FileKind;
}

/** Converts a path (relative to the working directory) to a file URL. */
export function pathToFileUrl(path: string): URL {
  return pathToFileURL(resolve(path));
}

/**
 * Reads and loads files. A file that cannot be read is an error diagnostic, not an
 * exception, so every problem is reported at once.
 */
export async function loadFiles(paths: readonly string[], options: LoadOptions = {}): Promise<Catalog> {
  const sources: SourceFile[] = [];
  const readErrors: Diagnostic[] = [];
  for (const file of paths) {
    try {
      sources.push({ file, text: await Deno.readTextFile(file), kind: options.kind });
    } catch (e) {
      readErrors.push({
        file,
        line: 1,
        column: 1,
        severity: "error",
        message: `cannot read the file: ${(e as Error).message}`,
      });
    }
  }
  const catalog = buildCatalog(sources, options);
  return readErrors.length ? { ...catalog, diagnostics: [...readErrors, ...catalog.diagnostics] } : catalog;
}

/**
 * Reads files as a configuration version carries them (`roles/config_versions.ts`): absolute
 * names and texts, in order. A file that cannot be read is left out (loading it reports why).
 */
export async function readSources(paths: readonly string[]): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  for (const path of paths) {
    try {
      out.push({ file: resolve(path), text: await Deno.readTextFile(path) });
    } catch { /* reported by loadFiles */ }
  }
  return out;
}

/** A catalog plus its handlers, as a worker needs it. */
export interface LoadedHandlers {
  /** The handlers whose targets loaded. */
  readonly registry: HandlerRegistry;
  /** The winning mapping entries whose targets did not load. */
  readonly unresolved: readonly UnresolvedTarget[];
}

/** Imports the targets of a catalog's winning mapping entries. */
export async function loadHandlers(
  catalog: Catalog,
  registry: HandlerRegistry = new HandlerRegistry(),
): Promise<LoadedHandlers> {
  const unresolved = await registry.loadEntries(catalog.mappings.values(), pathToFileUrl);
  return { registry, unresolved };
}
