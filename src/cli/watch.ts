/**
 * `start --watch`: reloads the deployment (`reload.ts`) when the files `start` was given, the
 * handler modules they map, or (with the handler sandbox, whose threads import every module
 * afresh) the local modules those import change on disk. Their folders are watched
 * (`Deno.watchFs`; an editor that saves by renaming replaces the file, not its contents); a
 * reload waits for 300 ms without a change.
 *
 * @module
 */

import { dirname, resolve, sep } from "node:path";
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
  /**
   * Watch the modules the handler modules import too. Only sandboxed workers import those afresh
   * on a reload; under `--no-sandbox` they stay as first loaded, so watching them reloads nothing.
   */
  readonly imports?: boolean;
}

/** Longest wait for `deno info` to list a module's imports. */
const GRAPH_TIMEOUT_MS = 15_000;

/**
 * The local files `path` imports, directly or through other modules, and `path` itself: Deno's own
 * module graph (`deno info --json`), so every import form Deno understands is followed, including
 * ones that do not resolve yet (a file about to be created). If `deno info` fails, just `path`.
 */
export async function localImports(path: string): Promise<string[]> {
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", path],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(GRAPH_TIMEOUT_MS),
    }).output();
    if (!out.success) return [path];
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules?: { specifier?: unknown }[] };
    const found = (graph.modules ?? [])
      .map((m) => m.specifier)
      .filter((s): s is string => typeof s === "string" && s.startsWith("file:"))
      .map((s) => fileURLToPath(s));
    return [path, ...found];
  } catch {
    return [path];
  }
}

/**
 * The local files a set of flow and mapping files depends on: the files, their mapped modules
 * and, with `imports`, every local module those import.
 */
export async function watchedPaths(
  files: readonly string[],
  imports = false,
): Promise<Set<string>> {
  const out = new Set(files.map((f) => resolve(f)));
  const catalog = await loadFiles(files);
  const modules = new Set<string>();
  for (const entry of catalog.allMappings) {
    const ref = parseTarget(entry.target);
    if (typeof ref === "string") continue;
    const url = targetModuleUrl(ref.specifier, pathToFileUrl(entry.file));
    if (url.startsWith("file:")) modules.add(fileURLToPath(url));
  }
  const graphs = imports ? await Promise.all([...modules].map(localImports)) : [[...modules]];
  for (const p of graphs.flat()) out.add(p);
  return out;
}

/** `dir` if it is a folder, else its nearest ancestor that is. */
async function nearestFolder(dir: string): Promise<string> {
  for (let d = dir;; d = dirname(d)) {
    try {
      if ((await Deno.stat(d)).isDirectory) return d;
    } catch { /* not there */ }
    if (dirname(d) === d) return d;
  }
}

/** A running {@linkcode watchAndReload}. */
export interface Watching {
  /** Resolves once every file is watched (an edit made after it is seen). */
  readonly ready: Promise<void>;
  /** Stops watching. */
  stop(): void;
}

/** Watches `files` and what they depend on, reloading on changes. */
export function watchAndReload(
  config: Config,
  files: readonly string[],
  options: WatchOptions = {},
): Watching {
  const log = logger("start");
  let stopped = false;
  let watcher: Deno.FsWatcher | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = Promise.resolve();
  let paths = new Set<string>();
  /** The folders watched, as last set up. */
  let watchedDirs = "";
  /**
   * Folders of watched paths that do not exist (an import of a file in a folder not made yet):
   * their nearest existing ancestor is watched instead, and a change on the way to one reloads.
   */
  let missing: string[] = [];

  const reload = async () => {
    // The files may import other modules now: watched before the reload reads them, so that an
    // edit made while it runs is seen (and reloads again).
    // If that fails (a flow file that does not load: the reload below says why), the files
    // watched so far still are.
    await watch().catch((e) =>
      log.warn("--watch: the watch was not renewed ({message}); the files watched so far still are", {
        message: (e as Error).message,
      })
    );
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
  };

  const relevant = (p: string) => paths.has(p) || missing.some((m) => m === p || m.startsWith(p + sep));

  const watch = async () => {
    const next = await watchedPaths(files, options.imports);
    const wanted = [...new Set([...next].map((p) => dirname(p)))];
    const found = await Promise.all(wanted.map(nearestFolder));
    const dirs = [...new Set(found)].sort().join("\n");
    paths = next;
    missing = wanted.filter((d, i) => found[i] !== d);
    if (stopped || (watcher && dirs === watchedDirs)) return;
    // The new watcher first: if it cannot be made, the old one keeps watching.
    const w = Deno.watchFs(dirs.split("\n"), { recursive: false });
    watcher?.close();
    watcher = w;
    watchedDirs = dirs;
    void (async () => {
      try {
        for await (const e of w) {
          if (!e.paths.some(relevant)) continue;
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

  const ready = watch().then(
    () => {
      log.info("--watch: watching {n} files", { n: paths.size });
      if (missing.length) {
        log.info("--watch: {folders} do not exist yet: their nearest existing parents are watched", {
          folders: missing.join(", "),
        });
      }
    },
    (e) => log.error("--watch: cannot watch the files: {message}", { message: (e as Error).message }),
  );
  return {
    ready,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      watcher?.close();
    },
  };
}
