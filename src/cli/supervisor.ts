/**
 * What `start` needs to supervise its role processes: the restart backoff, one supervised
 * process per role (restarted when it dies), stopping a child with a grace period, and the
 * lock that makes a runtime directory belong to one deployment.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { TIMED_OUT, withTimeout } from "../_async.ts";

/** Options of {@linkcode RestartBackoff}. */
export interface BackoffOptions {
  /** Milliseconds before the first restart. @default {200} */
  readonly initial?: number;
  /** Largest delay, in milliseconds. @default {5000} */
  readonly max?: number;
  /** A child that ran this many milliseconds was healthy: the delay starts again from `initial`. @default {60000} */
  readonly healthyAfter?: number;
  /** The clock, in milliseconds. @default {performance.now} */
  readonly now?: () => number;
}

/**
 * The delay before restarting a child that died: `initial`, doubling at each death up to `max`,
 * back to `initial` once a child has run `healthyAfter` ms.
 *
 * @example
 * ```ts
 * import { RestartBackoff } from "./supervisor.ts";
 * const b = new RestartBackoff();
 * b.started();
 * b.exited(); // 200
 * b.started();
 * b.exited(); // 400
 * ```
 */
export class RestartBackoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #healthyAfter: number;
  readonly #now: () => number;
  #next: number;
  #startedAt?: number;

  /** Builds a backoff. */
  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initial ?? 200;
    this.#max = options.max ?? 5000;
    this.#healthyAfter = options.healthyAfter ?? 60_000;
    this.#now = options.now ?? (() => performance.now());
    this.#next = this.#initial;
  }

  /** Call when a child starts. */
  started(): void {
    this.#startedAt = this.#now();
  }

  /** Call when the child exits: returns the milliseconds to wait before starting the next. */
  exited(): number {
    if (this.#startedAt !== undefined && this.#now() - this.#startedAt >= this.#healthyAfter) {
      this.#next = this.#initial;
    }
    this.#startedAt = undefined;
    const delay = this.#next;
    this.#next = Math.min(this.#next * 2, this.#max);
    return delay;
  }
}

/**
 * Asks a supervised role to stop (closes its standard input) and waits for it to exit; after
 * `graceMs` (a child that cannot read its input: its event loop blocked) it is sent SIGKILL, and
 * at once when it has been stopped (SIGSTOP) for a second: a stopped process does nothing with
 * its grace.
 */
export async function stopChild(
  p: Deno.ChildProcess,
  graceMs: number,
  log?: Logger,
  label = "child",
  stopped: (pid: number) => boolean = processStopped,
): Promise<void> {
  await p.stdin.close().catch(() => {});
  const start = performance.now();
  let stoppedSince: number | undefined;
  let why = "did not stop within {ms} ms";
  for (;;) {
    const left = start + graceMs - performance.now();
    if (left <= 0) break;
    if ((await withTimeout(p.status, Math.min(250, left))) !== TIMED_OUT) return;
    if (!stopped(p.pid)) stoppedSince = undefined;
    else if (performance.now() - (stoppedSince ??= performance.now()) >= 1000) {
      why = "is stopped (SIGSTOP) and cannot stop by itself";
      break;
    }
  }
  log?.warn(`${label} (pid {pid}) ${why}; killing it`, { pid: p.pid, ms: graceMs });
  try {
    p.kill("SIGKILL");
  } catch { /* exited meanwhile */ }
  await p.status;
}

/** A gap between two looks past which the looker itself did not run (see {@linkcode LivenessClock.look}). */
export const LOOK_GAP_MS = 2500;

/** What one look at a child found (see {@linkcode LivenessClock.look}). */
export interface LivenessLook {
  /** When its liveness file was last modified (`undefined`: there is none). */
  readonly mtime: number | undefined;
  /** Whether the process is stopped (SIGSTOP: state `T` or `t` in `/proc`). */
  readonly stopped: boolean;
  /**
   * Whether the file can be judged now: false while the folder it is written to cannot be
   * written (a full disk, a read-only or missing folder), where a healthy child's file ages too.
   */
  readonly writable: boolean;
}

/** Why a child is taken for dead: `stopped` (SIGSTOP), or `silent` (its file stopped changing). */
export type Overdue = { readonly why: "stopped" | "silent"; readonly ms: number };

/**
 * Whether a child is alive, from looks at its process state and its liveness file. A child
 * stopped (SIGSTOP) at every look for `timeoutMs` is overdue, from its spawn on. Its file is
 * judged only once the child has written one (a child still loading its modules has not), and
 * counts from the last look that saw it change; not while the folder cannot be written, nor across
 * a gap between looks (the looker was stopped too: it counts again from the look after). All on a
 * monotonic clock: the file's time is only compared with the one seen before, so a step of the
 * wall clock (NTP, a resumed VM) neither kills a healthy child nor spares a stopped one. Pure.
 *
 * @example
 * ```ts
 * import { LivenessClock } from "./supervisor.ts";
 * const c = new LivenessClock();
 * const at = (stopped: boolean, mtime?: number) => ({ stopped, mtime, writable: true });
 * c.look(at(false), 5000, 3000); // undefined: no file yet, but running
 * c.look(at(false, 1_700_000_000_000), 5100, 3000); // undefined: written
 * c.look(at(false, 1_700_000_000_000), 8500, 3000); // { why: "silent", ms: 3400 }
 * ```
 */
export class LivenessClock {
  #seen?: number;
  #changedAt = 0;
  #stoppedSince?: number;
  #lastLook?: number;

  /**
   * A look at `now` (monotonic ms): how long the child has been stopped or silent, if that is
   * past `timeoutMs`; `undefined` if it is alive.
   */
  look(l: LivenessLook, now: number, timeoutMs: number): Overdue | undefined {
    // Looks come every second at most; a longer gap means the looker did not run either (its
    // process group stopped with Ctrl-Z, a frozen container): count again from now, or every
    // role would look silent once all of them go on.
    if (this.#lastLook !== undefined && now - this.#lastLook > LOOK_GAP_MS) {
      this.#changedAt = now;
      this.#stoppedSince = undefined;
    }
    this.#lastLook = now;
    if (!l.stopped) this.#stoppedSince = undefined;
    else this.#stoppedSince ??= now;
    if (this.#stoppedSince !== undefined && now - this.#stoppedSince > timeoutMs) {
      return { why: "stopped", ms: now - this.#stoppedSince };
    }
    if (l.mtime !== undefined && l.mtime !== this.#seen) {
      this.#seen = l.mtime;
      this.#changedAt = now;
    }
    // A folder that cannot be written ages every file in it: judge again from when it can.
    if (!l.writable) this.#changedAt = now;
    if (this.#seen !== undefined && now - this.#changedAt > timeoutMs) {
      return { why: "silent", ms: now - this.#changedAt };
    }
    return undefined;
  }
}

/**
 * Whether process `pid` is stopped (SIGSTOP, or a tracer's stop): its state in `/proc/PID/stat`
 * is `T` or `t`. False where there is no `/proc` or the process is gone.
 */
export function processStopped(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // "pid (name) S ...": the name may hold spaces and parentheses; the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "T" || state === "t";
  } catch {
    return false;
  }
}

/** How a {@linkcode SupervisedProcess} tells that its child still runs (see `liveness_timeout`). */
export interface Liveness {
  /** The file the child rewrites every second while its event loop turns (its counters). */
  readonly file: (pid: number) => string;
  /** Milliseconds stopped, or without a rewrite, before the child is taken for dead and killed. */
  readonly timeoutMs: number;
  /** Whether the folder of the files can be written now. @default {() => true} */
  readonly writable?: () => boolean;
  /** The monotonic clock, in ms. @default {performance.now} */
  readonly now?: () => number;
  /** Whether a process is stopped. @default {processStopped} */
  readonly stopped?: (pid: number) => boolean;
}

/**
 * One role's process, restarted with a {@linkcode RestartBackoff} when it dies (once
 * {@linkcode SupervisedProcess.supervise} is called), until {@linkcode SupervisedProcess.stop}.
 * Every restart is logged at warning level.
 */
export class SupervisedProcess {
  readonly #spawn: () => Deno.ChildProcess;
  readonly #backoff: RestartBackoff;
  readonly #log: Logger;
  #child: Deno.ChildProcess;
  /** {@linkcode SupervisedProcess.supervise} was called: it is restarted when it dies. */
  #supervised = false;
  #stopping = false;
  #timer?: ReturnType<typeof setTimeout>;
  readonly #liveness?: Liveness;
  #livenessTimer?: ReturnType<typeof setInterval>;
  /** The current child's liveness, and whether it was killed for silence or has exited. */
  #clock?: LivenessClock;
  #killedSilent = false;
  #exited = false;
  /** Restarts so far. */
  restarts = 0;
  /** Children killed by the liveness check (stopped or hung). */
  silentKills = 0;

  /**
   * Spawns the first process. `backoff`: the delays between restarts; `liveness`: how to tell
   * that the child is stopped or hung, to kill it (none: never).
   */
  constructor(
    readonly label: string,
    spawn: () => Deno.ChildProcess,
    log: Logger,
    { backoff = new RestartBackoff(), liveness }: { backoff?: RestartBackoff; liveness?: Liveness } = {},
  ) {
    this.#spawn = spawn;
    this.#log = log;
    this.#backoff = backoff;
    this.#liveness = liveness && liveness.timeoutMs > 0 ? liveness : undefined;
    this.#child = spawn();
    this.#spawned();
    // From the spawn on, before `supervise` too: a role stopped while `start` waits for it to be
    // ready is killed (and `start` fails) instead of waited for forever.
    if (this.#liveness) {
      this.#livenessTimer = setInterval(
        () => this.#checkLiveness(),
        Math.min(1000, this.#liveness.timeoutMs / 4),
      );
      this.#watchExit(this.#child);
    }
  }

  #spawned(): void {
    this.#backoff.started();
    this.#clock = this.#liveness && new LivenessClock();
    this.#killedSilent = false;
    this.#exited = false;
  }

  /** The current process. */
  get child(): Deno.ChildProcess {
    return this.#child;
  }

  /**
   * Restarts the process whenever it exits, from now on (also when it already has). (With a
   * {@linkcode Liveness}, a child stopped or hung is killed from its spawn on, supervised or not:
   * see {@linkcode LivenessClock}.)
   */
  supervise(): this {
    this.#supervised = true;
    const p = this.#child;
    p.status.then((s) => {
      if (this.#stopping || p !== this.#child) return;
      const ms = this.#backoff.exited();
      this.#log.warn(`${this.label} (pid {pid}) exited with {code}; restarting in {ms} ms`, {
        pid: p.pid,
        code: s.signal ?? s.code,
        ms,
      });
      this.#restartAfter(ms);
    });
    return this;
  }

  #restartAfter(ms: number): void {
    this.#timer = setTimeout(() => {
      if (this.#stopping) return;
      try {
        this.#child = this.#spawn();
      } catch (e) {
        const next = this.#backoff.exited();
        this.#log.error(`${this.label} could not be started: {error}; trying again in {ms} ms`, {
          error: (e as Error).message,
          ms: next,
        });
        return this.#restartAfter(next);
      }
      this.#spawned();
      if (this.#liveness) this.#watchExit(this.#child);
      this.restarts++;
      this.#log.warn(`${this.label} restarted (pid {pid})`, { pid: this.#child.pid });
      this.supervise();
    }, ms);
  }

  /**
   * Marks the child exited once it is, so that the liveness check leaves it to its restart, and
   * removes its liveness file: a killed child cannot, and a file left behind would be taken for
   * a live one's (by `reload`, say) or judge a later child given the same pid.
   */
  #watchExit(p: Deno.ChildProcess): void {
    p.status.then(() => {
      if (p === this.#child) this.#exited = true;
      try {
        Deno.removeSync(this.#liveness!.file(p.pid));
      } catch { /* removed by the child, or never written */ }
    });
  }

  #now(): number {
    return (this.#liveness?.now ?? (() => performance.now()))();
  }

  #checkLiveness(): void {
    const l = this.#liveness!;
    // An exited child waits for its restart (the backoff), which brings a clock of its own.
    if (this.#stopping || this.#killedSilent || this.#exited) return;
    const p = this.#child;
    let mtime: number | undefined;
    try {
      mtime = Deno.statSync(l.file(p.pid)).mtime?.getTime();
    } catch { /* not written yet */ }
    const stopped = (l.stopped ?? processStopped)(p.pid);
    const writable = l.writable?.() ?? true;
    const over = this.#clock!.look({ mtime, stopped, writable }, this.#now(), l.timeoutMs);
    if (!over) return;
    this.#killedSilent = true;
    this.silentKills++;
    const why = over.why === "stopped"
      ? "has been stopped (SIGSTOP) for {ms} ms"
      : "has not rewritten its counters for {ms} ms (hung)";
    // Not supervised yet (before `start` is ready): its exit fails the start, nothing restarts it.
    const then = this.#supervised ? "killing it to restart it" : "killing it";
    this.#log.warn(`${this.label} (pid {pid}) ${why}; ${then}`, {
      pid: p.pid,
      ms: Math.round(over.ms),
    });
    try {
      p.kill("SIGKILL");
    } catch { /* exited meanwhile */ }
  }

  /** Stops restarting, then stops the current process (see {@linkcode stopChild}). */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    clearInterval(this.#livenessTimer);
    await stopChild(this.#child, graceMs, this.#log, this.label);
  }
}

/** The lock of a runtime directory, held by the `start` that owns it. */
export interface RuntimeLock {
  /** Lets the directory go. */
  release(): void;
}

/** The name of the lock file in the runtime directory. */
export const LOCK_FILE = "start.lock";

/**
 * Takes the runtime directory for this process: an exclusive `flock` on `<dir>/start.lock`,
 * which holds the pid. The kernel releases the lock when the process dies, however it dies, so
 * a lock left by a SIGKILLed `start` is simply taken over. Returns the pid of the holder when
 * another live process holds it.
 */
export function lockRuntimeDir(dir: string): RuntimeLock | { heldBy: number | undefined } {
  return lockFile(`${dir}/${LOCK_FILE}`);
}

/**
 * An exclusive `flock` on the file at `path` (created, mode 0600), which then holds this
 * process's pid; released when the process dies, however it dies. Returns the pid of the
 * holder when another live process holds it.
 */
export function lockFile(path: string): RuntimeLock | { heldBy: number | undefined } {
  const file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o600 });
  if (!file.tryLockSync(true)) {
    let heldBy: number | undefined;
    try {
      const n = Number(new TextDecoder().decode(Deno.readFileSync(path)).trim());
      if (Number.isInteger(n) && n > 0) heldBy = n;
    } catch { /* unreadable: the pid stays unknown */ }
    file.close();
    return { heldBy };
  }
  file.truncateSync(0);
  const bytes = new TextEncoder().encode(`${Deno.pid}\n`);
  for (let off = 0; off < bytes.length;) off += file.writeSync(bytes.subarray(off));
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      try {
        file.truncateSync(0); // the file stays: removing it would let two processes lock two files
        file.close(); // releases the lock
      } catch { /* the directory is gone */ }
    },
  };
}
