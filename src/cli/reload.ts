/**
 * `reload [FILE…]`: checks a new set of flow and mapping files as `flows --strict` does, then
 * rolls it out to the running deployment (`Client.reload`) as its next configuration version,
 * without a restart. Without files, the files of the Subject's current version are read again
 * (after an edit of a handler module, say). Also the reloads of `start --watch`.
 *
 * @module
 */

import type { Client } from "../client/client.ts";
import { ReloadError } from "../client/reload.ts";
import type { Config } from "../config.ts";
import { formatDiagnostic } from "../topic/diagnostics.ts";
import type { SourceFile } from "../topic/catalog.ts";
import { loadFiles, readSources } from "../load.ts";
import { consoleOutput, deploymentClient, ExitCode, type Output } from "./commands.ts";
import { checkHandlerTargets } from "./handler_check.ts";
import { RELOAD_KEY_FILE } from "./run.ts";

/** Options of {@linkcode reloadCommand}. */
export interface ReloadCommandOptions {
  /** Let components ask to run programs or for unrestricted network access (as `start` was told). */
  readonly allowComponentPermissions?: boolean;
  /** Milliseconds to wait for the Subject's answer. @default {60000} */
  readonly timeout?: number;
}

/** The reload key the Subject wrote to the runtime directory, or why it cannot be read. */
export async function readReloadKey(config: Config): Promise<string | Error> {
  const file = `${config.runtime_dir}/${RELOAD_KEY_FILE}`;
  try {
    return (await Deno.readTextFile(file)).trim();
  } catch (e) {
    return new Error(
      `cannot read the reload key ${file} (${
        (e as Error).message
      }); is the deployment's Subject running on this host with this --runtime-dir?`,
    );
  }
}

/**
 * The files of the running Subject's current configuration version, from its counters in
 * `runtimeDir` (`stats/subject-PID.json`): the newest row of a Subject that is alive.
 */
export async function currentFiles(runtimeDir: string): Promise<string[] | undefined> {
  const dir = `${runtimeDir}/stats`;
  // The newest row of a live Subject: a Subject killed where nobody removed its file (`start`
  // killed too, say) left a row naming the files it had, perhaps older ones.
  let best: { at: number; files: string[] } | undefined;
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = /^subject-(\d+)\.json$/.exec(e.name);
      if (!m || !alive(Number(m[1]))) continue;
      try {
        const row = JSON.parse(await Deno.readTextFile(`${dir}/${e.name}`));
        const at = Number(row.at) || 0;
        if (Array.isArray(row.files) && row.files.length && (!best || at > best.at)) {
          best = { at, files: row.files.map(String) };
        }
      } catch { /* being rewritten */ }
    }
  } catch { /* no running Subject here */ }
  return best?.files;
}

/** Whether process `pid` exists (where there is no `/proc`, every one is taken to). */
function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound) || !existsProc();
  }
}

function existsProc(): boolean {
  try {
    Deno.statSync("/proc/self");
    return true;
  } catch {
    return false;
  }
}

/**
 * `reload [FILE…]`: exit 0 once every worker holds the new version and new requests start on
 * it (its number printed as `{"version":N}`); exit 1, with every error on standard error and
 * nothing changed, when a file has an error (`file:line:column: error: …`), a worker refuses the
 * version, or the Subject does not answer.
 */
export async function reloadCommand(
  config: Config,
  files: readonly string[],
  options: ReloadCommandOptions = {},
  io: Output = consoleOutput,
): Promise<number> {
  let paths = [...files];
  if (!paths.length) {
    const current = await currentFiles(config.runtime_dir);
    if (!current) {
      io.err(`error: no files given, and no running Subject in ${config.runtime_dir} to take its files from`);
      return ExitCode.failure;
    }
    paths = current;
  }
  // As `flows --strict` checks them, but the handler modules are imported in a child process
  // with `handler_import_timeout` (as `start` does): a module that never finishes importing, or
  // ends the process, is an error naming it, not a hung or crashed command.
  const catalog = await loadFiles(paths, {
    strict: true,
    allowComponentPermissions: options.allowComponentPermissions,
  });
  const errors = catalog.diagnostics.filter((d) => d.severity === "error").map(formatDiagnostic);
  if (!errors.length) {
    for (
      const p of await checkHandlerTargets(catalog.mappings.values(), {
        timeout: config.handler_import_timeout,
      })
    ) {
      errors.push(`${p.entry.file}:${p.entry.line}:${p.entry.column}: error: ${p.entry.target}: ${p.reason}`);
    }
  }
  if (errors.length) {
    for (const e of errors) io.err(e);
    io.err(`error: ${errors.length} error(s) in the files: nothing was reloaded`);
    return ExitCode.failure;
  }
  const key = await readReloadKey(config);
  if (key instanceof Error) {
    io.err(`error: ${key.message}`);
    return ExitCode.failure;
  }
  const sources: SourceFile[] = await readSources(paths);
  const client = await deploymentClient(config, io);
  if (!client) return ExitCode.failure;
  try {
    const version = await client.reload(sources, {
      key,
      timeout: options.timeout,
      maxMessageSize: config.max_message_size,
    });
    io.out(JSON.stringify({ version }));
    return ExitCode.ok;
  } catch (e) {
    if (!(e instanceof ReloadError)) throw e;
    for (const d of e.diagnostics) io.err(d);
    io.err(`error: ${e.message}`);
    return ExitCode.failure;
  } finally {
    await client.close();
  }
}

/**
 * Reloads `files` into a running deployment (for `start --watch`); resolves with the new version
 * or why not. The files are checked here without importing their handler modules (this process
 * keeps the modules it imported, so it would check the old code): every worker imports them.
 */
export async function reloadFiles(
  config: Config,
  client: Client,
  files: readonly string[],
  allowComponentPermissions?: boolean,
): Promise<number | Error> {
  const catalog = await loadFiles(files, { strict: true, allowComponentPermissions });
  const errors = catalog.diagnostics.filter((d) => d.severity === "error");
  if (errors.length) return new Error(errors.map(formatDiagnostic).join("\n"));
  const key = await readReloadKey(config);
  if (key instanceof Error) return key;
  try {
    return await client.reload(await readSources(files), { key, maxMessageSize: config.max_message_size });
  } catch (e) {
    if (e instanceof ReloadError) return new Error([...e.diagnostics, e.message].join("\n"));
    throw e;
  }
}
