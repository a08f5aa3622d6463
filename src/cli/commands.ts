/**
 * The bodies of the CLI commands that inspect files (`flows`, `explain`). Each takes
 * parsed options and an output sink and returns an exit code; `cli.ts` only parses.
 *
 * @module
 */

import { resolve as resolvePath } from "node:path";
import { type ComponentPermissions, componentPermissions, formatPermissions } from "../topic/permissions.ts";
import { formatActionKey, tryParseActionKey } from "../topic/action_key.ts";
import { type Catalog, type FileKind, hasErrors } from "../topic/catalog.ts";
import { type Diagnostic, formatDiagnostic } from "../topic/diagnostics.ts";
import { loadTarget } from "../handler.ts";
import { loadFiles, pathToFileUrl } from "../load.ts";
import type { MappingEntry } from "../topic/mapping_file.ts";
import { explainKey } from "../topic/resolve.ts";
import { Client, RequestTimeoutError } from "../client/client.ts";
import type { Config } from "../config.ts";
import { publicationJson } from "../wire/protocol.ts";
import { parseToken } from "../wire/protocol.ts";
import { TIMED_OUT, withTimeout } from "../_async.ts";
import { PausedStore } from "../roles/paused_store.ts";
import { securityOrError } from "../roles/security.ts";
import { collectMetrics, DEFAULT_METRICS_WINDOW, METRICS_CONNECT_MS } from "../roles/metrics.ts";

/** Documented exit codes of the CLI. */
export const ExitCode = Object.freeze({
  /** Success. */
  ok: 0,
  /** A failure: load errors, an error publication, failed checks. */
  failure: 1,
  /** `explain`: no mapping entry resolves the key. */
  unresolved: 2,
  /** `send`: no final publication (`--wait`) or no acknowledgement before the timeout. */
  timeout: 3,
  /** `send --wait`: the flow paused at an `@ASYNC` step; its pause publication (with its token) was printed. */
  paused: 4,
  /** Bad command-line usage (unknown option, missing argument, bad value). */
  usage: 64,
});

/** Where commands write: standard output for results, standard error for the rest. */
export interface Output {
  /** Writes one line of result output. */
  out(line: string): void;
  /** Writes one line of diagnostics. */
  err(line: string): void;
}

/** Output to the process's stdout and stderr. */
export const consoleOutput: Output = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

/** Options of the `flows` command. */
export interface FlowsOptions {
  /** Print one JSON document instead of text. */
  readonly json?: boolean;
  /** Cross-file conflicts and unresolved targets become errors. */
  readonly strict?: boolean;
  /** Force the kind of every file. */
  readonly kind?: FileKind;
  /** With `strict`: let components ask to run programs or for unrestricted network access. */
  readonly allowComponentPermissions?: boolean;
}

/** What a component's handlers may touch (its mapping file's `[permissions]`, or the default). */
function permissionsOf(catalog: Catalog, mappingFile: string): ComponentPermissions {
  return componentPermissions(resolvePath(mappingFile), catalog.permissions.get(mappingFile));
}

/** A mapping entry with the outcome of loading its target. */
export interface CheckedEntry {
  readonly entry: MappingEntry;
  readonly reason?: string;
}

async function checkTargets(catalog: Catalog): Promise<CheckedEntry[]> {
  const out: CheckedEntry[] = [];
  for (const entry of catalog.allMappings) {
    const r = await loadTarget(entry.target, pathToFileUrl(entry.file));
    out.push(typeof r === "string" ? { entry, reason: r } : { entry });
  }
  return out;
}

/** What {@linkcode inspectFiles} finds. */
export interface Inspection {
  /** The files, loaded. */
  readonly catalog: Catalog;
  /** Each mapping entry, with why its target does not load, if it does not. */
  readonly checked: readonly CheckedEntry[];
  /** Every problem: the files' own, then the targets' (errors with `strict`, else warnings). */
  readonly diagnostics: readonly Diagnostic[];
}

/** Loads files and imports their targets as `flows` does (`reload` checks its files so). */
export async function inspectFiles(files: readonly string[], options: FlowsOptions): Promise<Inspection> {
  const strict = options.strict ?? false;
  const catalog = await loadFiles(files, {
    strict,
    kind: options.kind,
    allowComponentPermissions: options.allowComponentPermissions,
  });
  const checked = await checkTargets(catalog);
  const targetDiagnostics: Diagnostic[] = checked.filter((c) => c.reason).map((c) => ({
    file: c.entry.file,
    line: c.entry.line,
    column: c.entry.column,
    severity: strict ? "error" : "warning",
    message: `unresolved target "${c.entry.target}" for "${c.entry.text}": ${c.reason}`,
  }));
  return { catalog, checked, diagnostics: [...catalog.diagnostics, ...targetDiagnostics] };
}

/** `flows FILE…`: load files, list flows and mappings, exit 1 on any error. */
export async function flowsCommand(
  files: readonly string[],
  options: FlowsOptions,
  io: Output = consoleOutput,
): Promise<number> {
  const { catalog, checked, diagnostics } = await inspectFiles(files, options);
  const components = catalog.files.filter((f) => f.kind === "mapping").map((f) => f.file);
  const steps = catalog.allFlows.reduce((n, f) => n + f.steps.length, 0);
  const errors = diagnostics.filter((d) => d.severity === "error");
  const warnings = diagnostics.filter((d) => d.severity === "warning");

  if (options.json) {
    const place = (d: Diagnostic) => ({ file: d.file, line: d.line, column: d.column, message: d.message });
    io.out(JSON.stringify(
      {
        files: catalog.files,
        flows: catalog.allFlows.map((f) => ({
          name: f.name,
          file: f.file,
          line: f.line,
          active: catalog.flows.get(f.name) === f,
          steps: f.steps.map((s) => s.text),
        })),
        mappings: checked.map(({ entry, reason }) => ({
          key: entry.text,
          target: entry.target,
          file: entry.file,
          line: entry.line,
          resolved: reason === undefined,
          ...(reason === undefined ? {} : { reason }),
        })),
        timeouts: [...catalog.timeouts.values()].map((t) => ({
          key: t.text,
          ms: t.ms,
          file: t.file,
          line: t.line,
        })),
        components: components.map((file) => ({ file, permissions: permissionsOf(catalog, file) })),
        errors: errors.map(place),
        warnings: warnings.map(place),
      },
      null,
      2,
    ));
  } else {
    for (const f of catalog.allFlows) {
      const lost = catalog.flows.get(f.name) !== f ? "  (overridden by a later file)" : "";
      io.out(`flow ${f.name}  ${f.file}:${f.line}  ${f.steps.length} step(s)${lost}`);
      f.steps.forEach((s, i) => io.out(`  ${String(i).padStart(3)}  ${formatActionKey(s.key)}`));
    }
    for (const { entry, reason } of checked) {
      io.out(
        `mapping ${entry.text} = ${entry.target}  ${entry.file}:${entry.line}  ` +
          (reason === undefined ? "resolved" : "unresolved"),
      );
    }
    for (const t of catalog.timeouts.values()) {
      io.out(`timeout ${t.text} = ${t.ms} ms  ${t.file}:${t.line}`);
    }
    for (const file of components) {
      io.out(`permissions ${file}: ${formatPermissions(permissionsOf(catalog, file))}`);
    }
    for (const d of diagnostics) io.err(formatDiagnostic(d));
    io.out(
      `${catalog.files.length} files: ${catalog.allFlows.length} flows with ${steps} steps, ` +
        `${catalog.allMappings.length} mapping entries (${
          checked.filter((c) => !c.reason).length
        } resolved); ` +
        `${errors.length} errors, ${warnings.length} warnings`,
    );
  }
  return errors.length > 0 ? ExitCode.failure : ExitCode.ok;
}

/** Options of the `explain` command. */
export interface ExplainOptions {
  /** Print one JSON document instead of text. */
  readonly json?: boolean;
  /** Force the kind of every file. */
  readonly kind?: FileKind;
}

/** `explain KEY FILE…`: which mapping entry a key resolves to, and by which rule. */
export async function explainCommand(
  keyText: string,
  files: readonly string[],
  options: ExplainOptions,
  io: Output = consoleOutput,
): Promise<number> {
  const parsed = tryParseActionKey(keyText);
  if (!parsed.ok) {
    io.err(`error: invalid action key "${keyText}" at column ${parsed.column}: ${parsed.reason}`);
    return ExitCode.usage;
  }
  const catalog = await loadFiles(files, { kind: options.kind });
  if (hasErrors(catalog.diagnostics)) {
    for (const d of catalog.diagnostics) io.err(formatDiagnostic(d));
    return ExitCode.failure;
  }
  const e = explainKey(catalog.mappings, parsed.key);
  const r = e.resolution;
  if (options.json) {
    io.out(JSON.stringify(
      {
        key: keyText,
        target: r?.entry.target ?? null,
        rule: r?.rule ?? null,
        pattern: r?.pattern ?? null,
        lookup: r?.lookup ?? null,
        file: r?.entry.file ?? null,
        line: r?.entry.line ?? null,
        permissions: r ? permissionsOf(catalog, r.entry.file) : null,
        tried: e.tried,
      },
      null,
      2,
    ));
  } else {
    for (const t of e.tried) {
      const mark = r && t.rule === r.rule ? "=>" : t.found ? " +" : "  ";
      io.out(`${mark} rule ${t.rule}  ${t.pattern.padEnd(6)} ${t.lookup}${t.found ? "  (exists)" : ""}`);
    }
    if (r) {
      io.out(`${keyText} resolves by rule ${r.rule} (${r.pattern}) to ${r.entry.target}`);
      io.out(`  defined as "${r.entry.text}" at ${r.entry.file}:${r.entry.line}`);
      io.out(`  its handler runs with: ${formatPermissions(permissionsOf(catalog, r.entry.file))}`);
    } else {
      io.out(`${keyText} resolves to nothing: none of the seven lookups exists in the given mappings`);
    }
  }
  return r ? ExitCode.ok : ExitCode.unresolved;
}

/**
 * A client of the deployment `config` names, with this host's CURVE keys on tcp endpoints;
 * `null` (the reason printed) when the keys cannot be loaded.
 */
export async function deploymentClient(config: Config, io: Output): Promise<Client | null> {
  const security = await securityOrError(config, (l) => io.err(l));
  if (security === null) return null;
  return await Client.connect({
    subject: config.subject_pull_address,
    publisher: config.integration_manager_pub_address,
    curve: security?.keys,
    maxMessageSize: config.max_message_size,
  });
}

/** Options of the `send` command. */
export interface SendOptions {
  /** The request's values, as JSON text. */
  readonly data?: string;
  /** Wait for the final publication and print it. */
  readonly wait?: boolean;
  /** The action key the request names. */
  readonly key?: string;
  /** The request id. */
  readonly id?: string;
  /**
   * Milliseconds to wait for the final publication with `wait`, for the Subject's
   * acknowledgement without it. @default {30000}
   */
  readonly timeout?: number;
  /** Resume the paused flow this token names, instead of starting one. */
  readonly resume?: string;
  /** With `wait`: wait through pauses for the final publication, instead of ending at the first pause. */
  readonly throughPauses?: boolean;
}

/** `send FLOW`: push a request; with `wait`, print its final publication. */
export async function sendCommand(
  config: Config,
  flow: string,
  options: SendOptions,
  io: Output = consoleOutput,
): Promise<number> {
  let values: Record<string, unknown> = {};
  if (options.data !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(options.data);
    } catch (e) {
      io.err(`error: --data is not valid JSON: ${(e as Error).message}`);
      return ExitCode.usage;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      io.err('error: --data must be a JSON object, e.g. --data \'{"name": "Ada"}\'');
      return ExitCode.usage;
    }
    values = parsed as Record<string, unknown>;
  }
  if (options.key !== undefined) {
    const r = tryParseActionKey(options.key);
    if (!r.ok) {
      io.err(`error: invalid --key "${options.key}" at column ${r.column}: ${r.reason}`);
      return ExitCode.usage;
    }
  }
  const client = await deploymentClient(config, io);
  if (!client) return ExitCode.failure;
  const timeout = options.timeout ?? 30_000;
  let unacknowledged = false;
  try {
    // Without --wait the command waits (up to the timeout) for the Subject's acknowledgement.
    const acknowledged = async (sent: Promise<string>): Promise<number> => {
      const id = await withTimeout(sent, timeout);
      if (id === TIMED_OUT) {
        io.err(
          `error: the Subject did not acknowledge the request within ${timeout} ms; is the deployment running (deno task start) with the same --runtime-dir?`,
        );
        unacknowledged = true;
        return ExitCode.timeout;
      }
      io.out(JSON.stringify({ id }));
      return ExitCode.ok;
    };
    const resume = options.resume;
    if (resume !== undefined && !options.wait) {
      return await acknowledged(client.sendResume(resume, values, { id: options.id }));
    }
    if (!options.wait) {
      return await acknowledged(client.send(flow, values, { key: options.key, id: options.id }));
    }
    // Unless told to wait through pauses, a pause of the request ends the wait: its publication
    // (with the token that resumes it) is printed, exit code 4.
    const named = resume === undefined ? undefined : parseToken(resume);
    const id = named?.id ?? options.id ?? crypto.randomUUID();
    const subscribing = options.throughPauses ? undefined : client.subscribe(`${named?.flow ?? flow}~ASYNC~`);
    subscribing?.catch(() => {}); // (rejected when the client closes while it still waits)
    const pauses = subscribing && await withTimeout(subscribing, timeout);
    if (pauses === TIMED_OUT) throw new RequestTimeoutError(id, timeout);
    try {
      const paused = pauses && (async () => {
        for await (const p of pauses) if (p.id === id && p.resume !== undefined) return p;
        return new Promise<never>(() => {});
      })();
      const final = resume === undefined
        ? client.request(flow, values, { key: options.key, id, timeout })
        : client.resume(resume, values, { id: options.id, timeout });
      final.catch(() => {}); // when the pause ends the wait, the request's own wait is let go
      const p = await (paused ? Promise.race([final, paused]) : final);
      io.out(JSON.stringify(publicationJson(p)));
      if (p.resume !== undefined && !p.error) return ExitCode.paused;
      return p.error ? ExitCode.failure : ExitCode.ok;
    } finally {
      await pauses?.return?.();
    }
  } catch (e) {
    if (e instanceof RequestTimeoutError) {
      io.err(`error: ${e.message}; is the deployment running (deno task start) with the same --runtime-dir?`);
      return ExitCode.timeout;
    }
    throw e;
  } finally {
    // An unacknowledged message would hold drain() for up to 5 s: the command has already
    // waited its timeout, so the client is closed without waiting for it.
    if (unacknowledged) void client.close();
    else await client.drain();
  }
}

/** `tap [PREFIX…]`: print publications as JSON lines until interrupted (or `count` seen). */
export async function tapCommand(
  config: Config,
  prefixes: readonly string[],
  options: { count?: number; signal?: AbortSignal },
  io: Output = consoleOutput,
): Promise<number> {
  const client = await deploymentClient(config, io);
  if (!client) return ExitCode.failure;
  const ac = new AbortController();
  options.signal?.addEventListener("abort", () => ac.abort(), { once: true });
  const onSignal = () => ac.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const aborted = new Promise<"aborted">((r) => {
    if (ac.signal.aborted) r("aborted");
    ac.signal.addEventListener("abort", () => r("aborted"), { once: true });
  });
  try {
    const list = prefixes.length ? [...new Set(prefixes)] : [""];
    // One subscription per prefix; a publication matching several prints once. Confirming a
    // subscription needs a running deployment: a signal stops the wait for it too.
    io.err(`tap: subscribing to ${list.map((p) => JSON.stringify(p)).join(", ")}`);
    const subscribing = Promise.all(list.map((p) => client.subscribe(p, { signal: ac.signal })));
    const iterators = await Promise.race([subscribing, aborted]);
    if (iterators === "aborted") {
      subscribing.catch(() => {}); // ends with the client
      io.err("tap: stopped before the subscription was confirmed; is the deployment running?");
      return ExitCode.ok;
    }
    io.err(`tap: subscribed to ${list.map((p) => JSON.stringify(p)).join(", ")}`);
    let seen = 0;
    const printed = new WeakSet<object>();
    await Promise.all(iterators.map(async (it) => {
      for await (const p of it) {
        if (printed.has(p)) continue;
        printed.add(p);
        io.out(JSON.stringify(publicationJson(p)));
        if (options.count !== undefined && ++seen >= options.count) ac.abort();
      }
    }));
    return ExitCode.ok;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await client.close();
  }
}

/** Options of the `stats` command. */
export interface StatsOptions {
  /** Print one JSON document instead of text. */
  readonly json?: boolean;
  /** Read the counters the roles of this host write to `<runtime_dir>/stats`, instead of the metrics topic. */
  readonly local?: boolean;
  /** Milliseconds to listen for the roles' metrics. @default {1500} */
  readonly window?: number;
}

/**
 * `stats`: each running role's counters, as every role publishes them once a second through the
 * Integration Manager (`~~~~ping-metrics`), so from any host that can subscribe to it; with
 * `local`, as the roles of this host write them to `<runtime_dir>/stats`.
 */
export async function statsCommand(
  config: Config,
  options: StatsOptions,
  io: Output = consoleOutput,
): Promise<number> {
  const rows = options.local ? await localStats(config, io) : await remoteStats(config, options, io);
  if (rows === null) return ExitCode.failure;
  rows.sort((a, b) =>
    String(a.role).localeCompare(String(b.role)) ||
    String(a.host ?? "").localeCompare(String(b.host ?? "")) ||
    Number(a.pid) - Number(b.pid)
  );
  if (options.json) io.out(JSON.stringify(rows, null, 2));
  else {
    const now = Date.now();
    for (const r of rows) {
      const { role, pid, host, at, ...counters } = r;
      const where = host === undefined ? "" : `host ${String(host).padEnd(16)} `;
      // Roles write their counters every second: an older row is a role that stopped or hangs.
      const age = typeof at === "number" ? now - at : 0;
      const stale = age > STALE_ROW_MS ? ` (written ${(age / 1000).toFixed(1)} s ago: stopped?)` : "";
      io.out(
        `${String(role).padEnd(20)} ${where}pid ${String(pid).padEnd(8)} ${JSON.stringify(counters)}${stale}`,
      );
    }
  }
  return rows.length ? ExitCode.ok : ExitCode.failure;
}

/** A counters row older than this (ms) is shown with its age: roles write theirs every second. */
const STALE_ROW_MS = 2500;

/** The roles' snapshots from the metrics topic, as rows `{role, pid, host, at, ...counters}`; null: none (said why). */
async function remoteStats(
  config: Config,
  options: StatsOptions,
  io: Output,
): Promise<Record<string, unknown>[] | null> {
  const security = await securityOrError(config, (l) => io.err(l));
  if (security === null) return null;
  const endpoint = config.integration_manager_pub_address;
  const window = options.window ?? DEFAULT_METRICS_WINDOW;
  let heard;
  try {
    heard = await collectMetrics({ publisher: endpoint, curve: security?.keys, window });
  } catch (e) {
    io.err(`stats: cannot subscribe to the Integration Manager at ${endpoint}: ${(e as Error).message}`);
    return null;
  }
  if (heard.roles.length) {
    return heard.roles.map((m) => ({ role: m.role, pid: m.pid, host: m.host, at: m.at, ...m.counters }));
  }
  const local = ` (--local reads the counters the roles of this host write to ${config.runtime_dir}/stats)`;
  if (heard.refused && !security?.keys) {
    io.err(
      `stats: the Integration Manager at ${endpoint} refused the connection: it requires CURVE keys and this ` +
        `host has none; set curve_secret_key to a key in the hub's curve_allow_subscribers folder, and ` +
        `curve_server_key to the hub's public key` + local,
    );
  } else if (heard.refused) {
    io.err(
      `stats: the Integration Manager at ${endpoint} refused the connection: this host's key ` +
        `(curve_secret_key) must be in the hub's curve_allow_subscribers folder, and curve_server_key must be the hub's public key` +
        local,
    );
  } else if (!heard.reached) {
    io.err(
      `stats: no Integration Manager answered at ${endpoint} within ${
        Math.max(window, METRICS_CONNECT_MS)
      } ms; ` +
        "is the deployment running " +
        `(deno task start), and is integration_manager_pub_address (--integration-manager-pub-address, ` +
        `--config, or the same --runtime-dir) its publish endpoint?` + local,
    );
  } else {
    io.err(
      `stats: connected to the Integration Manager at ${endpoint}, but no role published its counters within ` +
        `${window} ms; is the Subject running (the roles' metrics reach the IM through it)? --window MS listens longer` +
        local,
    );
  }
  return null;
}

/** The counters the roles of this host write to `<runtime_dir>/stats`; null: none (said why). */
async function localStats(config: Config, io: Output): Promise<Record<string, unknown>[] | null> {
  const dir = `${config.runtime_dir}/stats`;
  const rows: Record<string, unknown>[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".json")) continue;
      try {
        const row = JSON.parse(await Deno.readTextFile(`${dir}/${e.name}`));
        if (Date.now() - row.at < 5000) rows.push(row);
      } catch { /* being rewritten */ }
    }
  } catch {
    io.err(`stats: no running roles found in ${config.runtime_dir}; is the deployment running on this host?`);
    return null;
  }
  if (!rows.length) {
    io.err(
      `stats: no role wrote its counters to ${dir} in the last 5 s; is the deployment running on this host?`,
    );
  }
  return rows;
}

/** Writes the live Subjects of this runtime directory say wait for async_store (`storeWaiting`). */
function storeWaiting(config: Config): number {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(`${config.runtime_dir}/stats`)) {
      if (!e.name.startsWith("subject-") || !e.name.endsWith(".json")) continue;
      try {
        const row = JSON.parse(Deno.readTextFileSync(`${config.runtime_dir}/stats/${e.name}`));
        if (Date.now() - row.at < 5000) n += Number(row.storeWaiting ?? 0);
      } catch { /* being rewritten */ }
    }
  } catch { /* no runtime directory here */ }
  return n;
}

/** `paused`: flows paused at an `@ASYNC` step (flow, request id, age, time left). */
export function pausedCommand(
  config: Config,
  options: { json?: boolean },
  io: Output = consoleOutput,
): number {
  let store: PausedStore;
  try {
    Deno.statSync(config.async_store);
    store = new PausedStore(config.async_store);
  } catch {
    io.err(`paused: no paused-flow store at ${config.async_store}; is the deployment running?`);
    return ExitCode.failure;
  }
  try {
    const now = Date.now();
    const rows = store.list().map((p) => ({
      flow: p.flow,
      id: p.id,
      position: p.position,
      ageMs: now - p.pausedAt,
      deadline: new Date(p.deadline).toISOString(),
      expiresInMs: p.deadline - now,
      token: p.token,
    }));
    if (options.json) io.out(JSON.stringify(rows, null, 2));
    else {
      for (const r of rows) {
        io.out(
          `${r.flow.padEnd(30)} id ${r.id}  age ${(r.ageMs / 1000).toFixed(1)} s  deadline ${r.deadline} ` +
            `(in ${(r.expiresInMs / 1000).toFixed(1)} s)  token ${r.token}`,
        );
      }
      io.out(`${rows.length} paused flow${rows.length === 1 ? "" : "s"}`);
    }
    // Pauses made while the store cannot be written wait in the Subject (its counters say how
    // many writes wait): not listed until they are saved.
    const waiting = storeWaiting(config);
    if (waiting > 0) {
      io.err(
        `paused: the Subject has ${waiting} write${
          waiting === 1 ? "" : "s"
        } (pauses, ends of resumed flows) ` +
          `waiting for ${config.async_store} (locked or full): those pauses are not listed until they are saved`,
      );
    }
    return ExitCode.ok;
  } finally {
    store.close();
  }
}
