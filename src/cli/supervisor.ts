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
 * `graceMs` (a child that cannot read its input: stopped, or its event loop blocked) it is
 * sent SIGKILL.
 */
export async function stopChild(
  p: Deno.ChildProcess,
  graceMs: number,
  log?: Logger,
  label = "child",
): Promise<void> {
  await p.stdin.close().catch(() => {});
  if ((await withTimeout(p.status, graceMs)) !== TIMED_OUT) return;
  log?.warn(`${label} (pid {pid}) did not stop within {ms} ms; killing it`, {
    pid: p.pid,
    ms: graceMs,
  });
  try {
    p.kill("SIGKILL");
  } catch { /* exited meanwhile */ }
  await p.status;
}

/**
 * Whether a child still rewrites its liveness file. It sees the file's modification time at each
 * look and counts from the last look at which it had changed (or from the spawn), on a monotonic
 * clock: the file's time is only compared with the one seen before, so a step of the wall clock
 * (NTP, a resumed VM) neither kills a healthy child nor spares a stopped one. Pure.
 *
 * @example
 * ```ts
 * import { LivenessClock } from "./supervisor.ts";
 * const c = new LivenessClock(0); // spawned at 0
 * c.look(undefined, 2500, 3000); // 0: no file yet, within 3 s of the spawn
 * c.look(1_700_000_000_000, 2600, 3000); // 0: written
 * c.look(1_700_000_000_000, 6000, 3000); // 400: not rewritten since 2600
 * ```
 */
export class LivenessClock {
  #seen?: number;
  #since: number;

  /** A child spawned at `now` (monotonic ms). */
  constructor(now: number) {
    this.#since = now;
  }

  /**
   * A look at `now` (monotonic ms) that found the file modified at `mtime` (`undefined`: no file):
   * the milliseconds it is past `timeoutMs` without a change, or 0 within it.
   */
  look(mtime: number | undefined, now: number, timeoutMs: number): number {
    if (mtime !== undefined && mtime !== this.#seen) {
      this.#seen = mtime;
      this.#since = now;
    }
    return Math.max(0, now - this.#since - timeoutMs);
  }
}

/** How a {@linkcode SupervisedProcess} tells that its child still runs (see `liveness_timeout`). */
export interface Liveness {
  /** The file the child rewrites every second while its event loop turns (its counters). */
  readonly file: (pid: number) => string;
  /** Milliseconds without a rewrite before the child is taken for stopped or hung and killed. */
  readonly timeoutMs: number;
  /** The monotonic clock, in ms. @default {performance.now} */
  readonly now?: () => number;
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
  /** Children killed because they stopped rewriting their liveness file. */
  silentKills = 0;

  /** Spawns the first process. */
  constructor(
    readonly label: string,
    spawn: () => Deno.ChildProcess,
    log: Logger,
    backoff: RestartBackoff = new RestartBackoff(),
    liveness?: Liveness,
  ) {
    this.#spawn = spawn;
    this.#log = log;
    this.#backoff = backoff;
    this.#liveness = liveness && liveness.timeoutMs > 0 ? liveness : undefined;
    this.#child = spawn();
    this.#spawned();
  }

  #spawned(): void {
    this.#backoff.started();
    this.#clock = this.#liveness && new LivenessClock(this.#now());
    this.#killedSilent = false;
    this.#exited = false;
  }

  /** The current process. */
  get child(): Deno.ChildProcess {
    return this.#child;
  }

  /**
   * Restarts the process whenever it exits, from now on (also when it already has); with a
   * {@linkcode Liveness}, also kills it (to restart it) once it has gone `timeoutMs` without
   * rewriting its file: stopped (SIGSTOP), or its event loop blocked.
   */
  supervise(): this {
    if (this.#liveness && this.#livenessTimer === undefined) {
      this.#livenessTimer = setInterval(
        () => this.#checkLiveness(),
        Math.min(1000, this.#liveness.timeoutMs / 4),
      );
    }
    const p = this.#child;
    p.status.then((s) => {
      if (p === this.#child) this.#exited = true;
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
      this.restarts++;
      this.#log.warn(`${this.label} restarted (pid {pid})`, { pid: this.#child.pid });
      this.supervise();
    }, ms);
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
    const over = this.#clock!.look(mtime, this.#now(), l.timeoutMs);
    if (over === 0) return;
    this.#killedSilent = true;
    this.silentKills++;
    this.#log.warn(
      `${this.label} (pid {pid}) has not written its counters for {ms} ms (stopped or hung); killing it to restart it`,
      { pid: p.pid, ms: l.timeoutMs + over },
    );
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
  const path = `${dir}/${LOCK_FILE}`;
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
