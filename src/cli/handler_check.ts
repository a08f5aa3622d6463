/**
 * The start-up check of handler targets (SPEC §6): every TypeScript `module#Export` target of
 * the winning mapping entries is imported, and its export walked, in a separate process, so a
 * module that loops (or blocks) while importing cannot hang `start` or `worker`: it is killed
 * after `handler_import_timeout` ms and reported. Targets that are not `module#Export` (the
 * Python dotted paths of DigitalPy's files) are not imported; they stay warnings (their steps
 * answer `no_handler`), errors only with `--strict`.
 *
 * Run as a script, this module is the checking process: it reads the targets as JSON from its
 * standard input and writes one line per event, prefixed with a nonce so that whatever the
 * modules themselves print cannot be mistaken for a result.
 *
 * @module
 */

import { describeImportError, loadTarget, parseTarget, targetModuleUrl } from "../handler.ts";
import { pathToFileUrl } from "../load.ts";
import type { MappingEntry } from "../topic/mapping_file.ts";
import { TIMED_OUT, withTimeout } from "../_async.ts";

/** A mapping entry whose target did not pass the check. */
export interface TargetProblem {
  /** The entry. */
  readonly entry: MappingEntry;
  /** Why: the import error, the missing export, the timeout, or why the target is not a module. */
  readonly reason: string;
  /**
   * A TypeScript target that failed: always an error. `false` for a target that is not a
   * `module#Export` target (a Python path): a warning, or an error in strict mode.
   */
  readonly error: boolean;
}

/** Milliseconds the checking process may take to start before it is given up. */
const STARTUP_ALLOWANCE = 30_000;

interface Job {
  readonly index: number;
  readonly entry: MappingEntry;
  readonly fileUrl: string;
  readonly module: string;
}

/**
 * Checks the targets of `entries` (import and export walk, in a child process with a timeout per
 * module). Returns the problems, in entry order; an empty list when every target loads.
 */
export async function checkHandlerTargets(
  entries: Iterable<MappingEntry>,
  options: { readonly timeout: number },
): Promise<TargetProblem[]> {
  const problems = new Map<number, TargetProblem>();
  let jobs: Job[] = [];
  let index = 0;
  for (const entry of entries) {
    const i = index++;
    const ref = parseTarget(entry.target);
    if (typeof ref === "string") {
      problems.set(i, { entry, reason: ref, error: false });
      continue;
    }
    const fileUrl = pathToFileUrl(entry.file);
    jobs.push({ index: i, entry, fileUrl: fileUrl.href, module: targetModuleUrl(ref.specifier, fileUrl) });
  }
  // Each round checks what is left in a fresh process; a round ends early only when the
  // module being imported hangs or ends the process, and that module's targets are then
  // settled, so every round settles at least one job.
  while (jobs.length) {
    const { results, stuck } = await checkRound(jobs, options.timeout);
    for (const [i, reason] of results) {
      if (reason !== undefined) {
        problems.set(i, { entry: jobs.find((j) => j.index === i)!.entry, reason, error: true });
      }
    }
    let rest = jobs.filter((j) => !results.has(j.index));
    if (stuck) {
      for (const j of rest) {
        if (j.module === stuck.module) {
          problems.set(j.index, { entry: j.entry, reason: stuck.reason, error: true });
        }
      }
      rest = rest.filter((j) => j.module !== stuck.module);
    } else if (rest.length) {
      for (const j of rest) {
        problems.set(j.index, {
          entry: j.entry,
          reason: "the check process ended without checking it",
          error: true,
        });
      }
      rest = [];
    }
    jobs = rest;
  }
  return [...problems.entries()].sort(([a], [b]) => a - b).map(([, p]) => p);
}

/** One checking process over `jobs`: the reasons by entry index (`undefined`: it loads). */
async function checkRound(
  jobs: readonly Job[],
  timeout: number,
): Promise<{ results: Map<number, string | undefined>; stuck?: { module: string; reason: string } }> {
  const nonce = `zmcheck-${crypto.randomUUID()}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).href, nonce],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const input = child.stdin.getWriter();
  await input.write(
    new TextEncoder().encode(
      JSON.stringify(jobs.map((j) => ({ target: j.entry.target, fileUrl: j.fileUrl }))),
    ),
  ).catch(() => {});
  await input.close().catch(() => {});

  const results = new Map<number, string | undefined>();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let current: Job | undefined;
  let deadline = performance.now() + STARTUP_ALLOWANCE;
  let buffered = "";
  let timedOut = false;
  for (;;) {
    const r = await withTimeout(reader.read(), Math.max(0, deadline - performance.now()));
    if (r === TIMED_OUT) {
      timedOut = true;
      break;
    }
    if (r.done) break;
    buffered += r.value;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) {
      const at = line.indexOf(nonce);
      if (at < 0) continue; // printed by a module
      const [what, n, ...reason] = line.slice(at + nonce.length + 1).split(" ");
      const job = jobs[Number(n)];
      if (!job) continue;
      if (what === "start") current = job;
      else {
        results.set(job.index, what === "ok" ? undefined : JSON.parse(reason.join(" ")));
        current = undefined;
      }
      deadline = performance.now() + timeout;
    }
  }
  if (timedOut) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await reader.cancel().catch(() => {});
  const status = await child.status;
  if (!current) return { results };
  const reason = timedOut
    ? `${current.module} did not finish importing within ${timeout} ms (handler_import_timeout)`
    : `${current.module} ended the process while importing (exit code ${status.code}${
      status.signal ? `, ${status.signal}` : ""
    })`;
  return { results, stuck: { module: current.module, reason } };
}

async function checkMain(nonce: string): Promise<void> {
  const list: { target: string; fileUrl: string }[] = JSON.parse(
    await new Response(Deno.stdin.readable).text(),
  );
  const enc = new TextEncoder();
  const say = (line: string) => {
    // A newline first: a module may have left a line unfinished on standard output.
    const bytes = enc.encode(`\n${nonce} ${line}\n`);
    for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
  };
  for (let i = 0; i < list.length; i++) {
    say(`start ${i}`);
    const { target, fileUrl } = list[i];
    const ref = parseTarget(target);
    if (typeof ref !== "string") {
      // Imported here first for a fuller reason than loadTarget's first line: where it failed.
      const url = targetModuleUrl(ref.specifier, new URL(fileUrl));
      try {
        await import(url);
      } catch (e) {
        say(
          `fail ${i} ${JSON.stringify(`cannot import ${url}: ${describeImportError(e, import.meta.url)}`)}`,
        );
        continue;
      }
    }
    const r = await loadTarget(target, new URL(fileUrl));
    say(typeof r === "string" ? `fail ${i} ${JSON.stringify(r)}` : `ok ${i}`);
  }
  // Modules may have left timers or sockets open: the check is over.
  Deno.exit(0);
}

if (import.meta.main) await checkMain(Deno.args[0]);
