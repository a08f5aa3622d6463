/**
 * The conformance suite: recorded flows replayed against real roles over real sockets.
 * Fixtures live in `fixtures/cases/*.json` (format: `fixtures/README.md`); each names a
 * component (flows, mappings, handlers) in `fixtures/components/`, the requests to push, the
 * services to run for `@PUBLISH` steps, and the recording: the publications expected on the
 * Integration Manager for each request, in order.
 *
 * @module
 */

import cliProgress from "cli-progress";
import process from "node:process";
import { Client } from "../src/client/client.ts";
import { spawnDeployment } from "./deployment.ts";
import { type FaultPolicy, FaultProxy, parseFaultPolicy } from "./fault.ts";
import type { Values } from "../src/handler.ts";
import type { Publication } from "../src/wire/protocol.ts";
import type { Output } from "../src/cli/commands.ts";
import { delay } from "../src/_async.ts";

/** A publication as a recording keeps it: no ids, no messages (only error codes). */
export interface Recorded {
  /** The topic. */
  topic: string;
  /** The values. */
  values: Record<string, unknown>;
  /** The error code, on error publications. */
  error?: string;
  /** True on pause publications (the token itself varies). */
  resume?: true;
}

/** A service the runner runs for a `@PUBLISH` step: merges `set` into the values. */
export interface FixtureService {
  /** The step's key. */
  key: string;
  /** The flow (for a prefix subscription). */
  flow: string;
  /** Values to merge in. */
  set?: Values;
  /** Fail with this message instead (a `handler_error`). */
  fail?: string;
}

/** One request of a fixture. */
export interface FixtureRequest {
  /** The flow. */
  flow: string;
  /** The values. */
  values?: Values;
  /** The action key to name (default: the flow's entry). */
  key?: string;
  /** Resumes, in order: each is sent when a pause arrives, or after the final to reuse a token. */
  resumes?: Values[];
  /** Instead of a request: a resume with this (bad) token. */
  resumeToken?: string;
}

/** A fixture file. */
export interface Fixture {
  /** What it shows. */
  description: string;
  /** The SPEC sections it covers, e.g. `§2 rule 3`. */
  spec: string[];
  /** The component folder under `fixtures/components/`. */
  component: string;
  /**
   * Extra flow/mapping files loaded before the component's, in this order: `{corpus}/…` is the
   * shared DigitalPy corpus, `{components}/…` the fixtures' components folder.
   */
  files?: string[];
  /** Extra files loaded after the component's, in this order (a later file wins a conflict). */
  filesAfter?: string[];
  /** Extra `start` arguments (e.g. `--step-limit 4`). */
  args?: string[];
  /** Services for `@PUBLISH` steps. */
  services?: FixtureService[];
  /** The requests, pushed one after another. */
  requests: FixtureRequest[];
  /** Per request, the publications expected, in order. */
  recording?: Recorded[][];
}

/** A fixture loaded from disk. */
export interface LoadedFixture {
  /** File name without `.json`. */
  readonly name: string;
  /** Its path. */
  readonly path: string;
  /** Its content. */
  readonly fixture: Fixture;
}

/** Where the repository's fixtures are. */
export const FIXTURES_DIR: string = decodeURIComponent(new URL("../fixtures/", import.meta.url).pathname);
/** Where the shared corpus is expected (beside the repository). */
export const CORPUS_DIR: string = decodeURIComponent(
  new URL("../../shared/corpus/", import.meta.url).pathname,
);

/** Loads fixtures whose name contains `filter`. */
export async function loadFixtures(filter?: string, dir: string = FIXTURES_DIR): Promise<LoadedFixture[]> {
  const out: LoadedFixture[] = [];
  for await (const e of Deno.readDir(`${dir}cases`)) {
    if (!e.name.endsWith(".json")) continue;
    const name = e.name.slice(0, -5);
    if (filter && !name.includes(filter)) continue;
    const path = `${dir}cases/${e.name}`;
    out.push({ name, path, fixture: JSON.parse(await Deno.readTextFile(path)) });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The files a fixture's deployment loads, in loading order: `files`, the component's flows and
 * mapping, then `filesAfter`. `undefined` if one is missing (the corpus is not beside the repo).
 */
export function fixtureFiles(f: Fixture, dir: string = FIXTURES_DIR): string[] | undefined {
  const comp = `${dir}components/${f.component}`;
  const resolve = (p: string) =>
    p.replace("{corpus}/", CORPUS_DIR).replace("{components}/", `${dir}components/`);
  const before = (f.files ?? []).map(resolve);
  const after = (f.filesAfter ?? []).map(resolve);
  if (![...before, ...after].every(exists)) return undefined;
  return [...before, ...[`${comp}/flows.ini`, `${comp}/mapping.ini`].filter(exists), ...after];
}

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}

function record(p: Publication): Recorded {
  const r: Recorded = { topic: p.topic, values: p.values };
  if (p.error) r.error = p.error.code;
  if (p.resume) r.resume = true;
  return r;
}

/** Runs one fixture's requests against a deployment; returns what was published per request. */
export async function runFixture(
  target: { subject: string; publisher: string },
  f: Fixture,
  name: string,
): Promise<Recorded[][]> {
  const client = await Client.connect(target);
  const services = await Client.connect(target);
  try {
    for (const s of f.services ?? []) {
      await services.handle(s.key, (v) => {
        if (s.fail) throw new Error(s.fail);
        return { ...v, ...s.set };
      }, { flow: s.flow });
    }
    const byId = new Map<string, Publication[]>();
    let onPublication: (p: Publication) => void = () => {};
    const all = await client.subscribe("");
    const pump = (async () => {
      for await (const p of all) {
        const list = byId.get(p.id) ?? [];
        list.push(p);
        byId.set(p.id, list);
        onPublication(p);
      }
    })();
    const out: Recorded[][] = [];
    for (let i = 0; i < f.requests.length; i++) {
      const req = f.requests[i];
      const id = `${name}-${i}-${crypto.randomUUID().slice(0, 8)}`;
      const ids = [id];
      if (req.resumeToken !== undefined) {
        const rid = `${id}-resume`;
        ids.push(rid);
        const p = await client.resume(req.resumeToken, req.values ?? {}, { id: rid, timeout: 10_000 });
        void p;
      } else {
        const resumes = [...(req.resumes ?? [])];
        let lastToken: string | undefined;
        const resumed: Promise<unknown>[] = [];
        let k = 0;
        const sendResume = (token: string) => {
          const values = resumes.shift()!;
          const rid = `${id}-resume-${k++}`;
          ids.push(rid);
          resumed.push(client.resume(token, values, { id: rid, timeout: 10_000 }).catch(() => {}));
        };
        onPublication = (p) => {
          if (p.id === id && p.resume) {
            lastToken = p.resume;
            if (resumes.length) sendResume(p.resume);
          }
        };
        await client.request(req.flow, req.values ?? {}, { key: req.key, id, timeout: 15_000 }).catch(
          () => {},
        );
        // Leftover resumes reuse the last token after the final (a token resumes once).
        while (resumes.length && lastToken) sendResume(lastToken);
        await Promise.all(resumed);
      }
      await delay(100); // late publications (a second final would show here)
      out.push(ids.flatMap((x) => byId.get(x) ?? []).map(record));
    }
    await all.return!();
    await pump;
    return out;
  } finally {
    await services.close();
    await client.close();
  }
}

/** Differences between a recording and what happened, as readable lines (empty: equal). */
export function diffRecordings(expected: Recorded[][], actual: Recorded[][]): string[] {
  const lines: string[] = [];
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i++) {
    const e = (expected[i] ?? []).map((r) => JSON.stringify(r));
    const a = (actual[i] ?? []).map((r) => JSON.stringify(r));
    if (JSON.stringify(e) === JSON.stringify(a)) continue;
    lines.push(`  request ${i}:`);
    const m = Math.max(e.length, a.length);
    for (let j = 0; j < m; j++) {
      if (e[j] === a[j]) lines.push(`      ${e[j]}`);
      else {
        if (e[j] !== undefined) lines.push(`    - ${e[j]}`);
        if (a[j] !== undefined) lines.push(`    + ${a[j]}`);
      }
    }
  }
  return lines;
}

/** Options of {@linkcode conformanceCommand}. */
export interface ConformanceOptions {
  /** Run fixtures whose name contains this. */
  readonly filter?: string;
  /** Write a JSON report to standard output instead of text. */
  readonly json?: boolean;
  /** `subject=ENDPOINT,im=ENDPOINT`: replay against a running deployment. */
  readonly target?: string;
  /** Record instead of compare: write what happened into the fixtures. */
  readonly record?: boolean;
  /** Print the coverage table (SPEC section → fixtures) and exit. */
  readonly coverage?: boolean;
  /**
   * Faults on the way between the fixture's services and the Subject, as a {@linkcode FaultProxy}
   * policy (`drop=0.02,duplicate=0.05,jitter=2`): the recordings must come out the same.
   */
  readonly faults?: string;
}

/** The coverage table: each SPEC section and the fixtures that cover it. */
export function coverageTable(fixtures: readonly LoadedFixture[]): string {
  const bySection = new Map<string, string[]>();
  for (const f of fixtures) {
    for (const s of f.fixture.spec) bySection.set(s, [...(bySection.get(s) ?? []), f.name]);
  }
  const rows = [...bySection.entries()].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
  return [
    "| SPEC | fixtures |",
    "| --- | --- |",
    ...rows.map(([s, names]) => `| ${s} | ${names.join(", ")} |`),
  ].join(
    "\n",
  );
}

/** `conformance`: replay (or record) every fixture; exit 1 on any failure. */
export async function conformanceCommand(options: ConformanceOptions, io: Output): Promise<number> {
  const fixtures = await loadFixtures(options.filter);
  if (options.coverage) {
    io.out(coverageTable(fixtures));
    return 0;
  }
  let external: { subject: string; publisher: string } | undefined;
  if (options.target) {
    const parts = Object.fromEntries(
      options.target.split(",").map((kv) => kv.split("=", 2) as [string, string]),
    );
    if (!parts.subject || !parts.im) {
      io.err('error: --target takes "subject=ENDPOINT,im=ENDPOINT" (im: the publish endpoint)');
      return 64;
    }
    external = { subject: parts.subject, publisher: parts.im };
  }
  let faults: FaultPolicy | undefined;
  if (options.faults !== undefined) {
    const p = parseFaultPolicy(options.faults);
    if (typeof p === "string") {
      io.err(`error: --faults: ${p}`);
      return 64;
    }
    faults = p;
  }
  // One deployment per component, files and arguments.
  const groups = new Map<string, LoadedFixture[]>();
  const results: { name: string; status: "passed" | "failed" | "skipped" | "recorded"; diff?: string[] }[] =
    [];
  for (const f of fixtures) {
    const files = fixtureFiles(f.fixture);
    if (!files) {
      results.push({
        name: f.name,
        status: "skipped",
        diff: ["the shared DigitalPy corpus is not beside the repo"],
      });
      continue;
    }
    const key = JSON.stringify([files, f.fixture.args ?? []]);
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  // A progress bar on a terminal; plain lines otherwise (CI logs), nothing with --json.
  let done = 0;
  const total = fixtures.length;
  const bar = !options.json && Deno.stderr.isTerminal()
    ? new cliProgress.SingleBar(
      { format: "conformance [{bar}] {value}/{total} {name}", stream: process.stderr },
      cliProgress.Presets.shades_classic,
    )
    : undefined;
  bar?.start(total, 0, { name: "" });
  const progress = (name: string) => {
    done++;
    if (bar) bar.increment(1, { name });
    else if (!options.json) io.err(`[${String(done).padStart(3)}/${total}] ${name}`);
  };
  const injected = { dropped: 0, duplicated: 0 };
  for (const [key, group] of groups) {
    const [files, args] = JSON.parse(key) as [string[], string[]];
    const deployed = external ? undefined : await spawnDeployment({ files, args, logLevel: "error" });
    let d = external ?? deployed!;
    // With --faults, the fixture's clients reach the Subject through a fault proxy.
    const proxyDir = faults ? await Deno.makeTempDir({ prefix: "zmf" }) : undefined;
    const proxy = faults
      ? await FaultProxy.start({
        kind: "router",
        front: `ipc://${proxyDir}/s`,
        back: d.subject,
        policy: faults,
      })
      : undefined;
    if (proxy) d = { subject: `ipc://${proxyDir}/s`, publisher: d.publisher };
    try {
      for (const f of group) {
        let actual: Recorded[][];
        try {
          actual = await runFixture(d, f.fixture, f.name);
        } catch (e) {
          results.push({ name: f.name, status: "failed", diff: [`  ${(e as Error).message}`] });
          progress(f.name);
          continue;
        }
        if (options.record) {
          f.fixture.recording = actual;
          await Deno.writeTextFile(f.path, JSON.stringify(f.fixture, null, 2) + "\n");
          results.push({ name: f.name, status: "recorded" });
        } else {
          const diff = diffRecordings(f.fixture.recording ?? [], actual);
          results.push({
            name: f.name,
            status: diff.length ? "failed" : "passed",
            diff: diff.length ? diff : undefined,
          });
        }
        progress(f.name);
      }
    } finally {
      if (proxy) {
        const { up, down } = proxy.stats();
        injected.dropped += up.dropped + down.dropped;
        injected.duplicated += up.duplicated + down.duplicated;
      }
      await proxy?.close();
      if (proxyDir) await Deno.remove(proxyDir, { recursive: true }).catch(() => {});
      await deployed?.stop();
    }
  }
  bar?.stop();
  results.sort((a, b) => a.name.localeCompare(b.name));
  const passed = results.filter((r) => r.status === "passed" || r.status === "recorded").length;
  const failed = results.filter((r) => r.status === "failed").length;
  const skipped = results.filter((r) => r.status === "skipped").length;
  const faultReport = faults ? { faults: { policy: options.faults, ...injected } } : {};
  if (options.json) io.out(JSON.stringify({ passed, failed, skipped, ...faultReport, results }, null, 2));
  else {
    if (faults) {
      io.out(
        `faults between services and the Subject (${options.faults}): ` +
          `${injected.dropped} messages dropped, ${injected.duplicated} duplicated`,
      );
    }
    for (const r of results) {
      io.out(`${r.status === "failed" ? "FAIL" : r.status === "skipped" ? "skip" : "ok  "} ${r.name}`);
      for (const l of r.diff ?? []) io.out(l);
    }
    io.out(`conformance: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
  }
  return failed ? 1 : 0;
}
