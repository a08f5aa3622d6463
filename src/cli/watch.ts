/**
 * `start --watch`: reloads the deployment (`reload.ts`) when the files `start` was given, or the
 * handler modules they map, change on disk. Their folders are watched (`Deno.watchFs`; an editor
 * that saves by renaming replaces the file, not its contents); a reload waits for 300 ms without
 * a change.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../client/client.ts";
import type { Config } from "../config.ts";
import { parseTarget, targetModuleUrl } from "../handler.ts";
import { loadFiles, pathToFileUrl } from "../load.ts";
import { logger } from "../log.ts";
import type { Security } from "../roles/security.ts";
import { reloadFiles } from "./reload.ts";

/** Milliseconds without a change before a reload. */
export const WATCH_DEBOUNCE_MS = 300;

/** Options of {@linkcode watchAndReload}. */
export interface WatchOptions {
  /** The deployment's CURVE keys, if its endpoints use them. */
  readonly security?: Security;
  /** As `start` was told. */
  readonly allowComponentPermissions?: boolean;
}

/** The local files a set of flow and mapping files depends on: the files and their mapped modules. */
export async function watchedPaths(files: readonly string[]): Promise<Set<string>> {
  const out = new Set(files.map((f) => resolve(f)));
  const catalog = await loadFiles(files);
  for (const entry of catalog.allMappings) {
    const ref = parseTarget(entry.target);
    if (typeof ref === "string") continue;
    const url = targetModuleUrl(ref.specifier, pathToFileUrl(entry.file));
    if (url.startsWith("file:")) out.add(fileURLToPath(url));
  }
  return out;
}

/** Watches `files` and what they map, reloading on changes; returns a function that stops it. */
export function watchAndReload(
  config: Config,
  files: readonly string[],
  options: WatchOptions = {},
): () => void {
  const log = logger("start");
  let stopped = false;
  let watcher: Deno.FsWatcher | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = Promise.resolve();
  let paths = new Set<string>();

  const reload = async () => {
    const client = await Client.connect({
      subject: config.subject_pull_address,
      publisher: config.integration_manager_pub_address,
      curve: options.security?.keys,
    });
    try {
      const r = await reloadFiles(config, client, files, options.allowComponentPermissions);
      if (r instanceof Error) log.error("--watch: nothing was reloaded:\n{why}", { why: r.message });
      else log.info("--watch: configuration version {version} is current", { version: r });
    } finally {
      await client.close();
    }
    await watch(); // the files may map other modules now
  };

  const watch = async () => {
    const next = await watchedPaths(files);
    const dirs = [...new Set([...next].map((p) => dirname(p)))].sort();
    const same = watcher &&
      dirs.join("\n") === [...new Set([...paths].map((p) => dirname(p)))].sort().join("\n");
    paths = next;
    if (same || stopped) return;
    watcher?.close();
    const w = watcher = Deno.watchFs(dirs, { recursive: false });
    void (async () => {
      try {
        for await (const e of w) {
          if (!e.paths.some((p) => paths.has(p))) continue;
          clearTimeout(timer);
          timer = setTimeout(() => {
            running = running.then(reload).catch((err) =>
              log.error("--watch: the reload failed: {message}", { message: (err as Error).message })
            );
          }, WATCH_DEBOUNCE_MS);
        }
      } catch { /* closed */ }
    })();
  };

  void watch().then(() => log.info("--watch: watching {n} files", { n: paths.size }));
  return () => {
    stopped = true;
    clearTimeout(timer);
    watcher?.close();
  };
}
