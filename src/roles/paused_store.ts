/**
 * Durable state of paused (`@ASYNC`) flows, in SQLite through Deno's built-in `node:sqlite`:
 * no server, no unstable flag (Deno KV needs `--unstable-kv`), synchronous writes that are on
 * disk before the pause is published, and an atomic take (`UPDATE … RETURNING`) so that a
 * token resumes a flow once.
 *
 * A taken token stays in the store, marked with the resume that took it and the Subject
 * incarnation that took it, until its deadline. So when the Subject dies while a resumed flow
 * runs, the same resume, sent again to its successor, takes the token again and the flow runs
 * again from its `@ASYNC` step; any other resume of it is still refused. Once the flow has ended
 * ({@linkcode PausedStore.finish}: its final publication reached the Integration Manager) the
 * token no longer expires into a `timeout` and the same resume does not take it again (unless
 * `rerunEnded`); nor once it paused again (`save` with `ends`): the new pause's token drives the
 * flow on.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";

/** A paused flow. */
export interface PausedFlow {
  /** The resume token. */
  readonly token: string;
  /** The original request id. */
  readonly id: string;
  /** The flow name. */
  readonly flow: string;
  /** Position of the `@ASYNC` step. */
  readonly position: number;
  /** Steps run so far. */
  readonly n: number;
  /** The values so far, as JSON text. */
  readonly values: string;
  /** When it paused, ms since the epoch. */
  readonly pausedAt: number;
  /** When it expires, ms since the epoch. */
  readonly deadline: number;
  /** The configuration version it ran on (`config_versions.ts`), if recorded. */
  readonly version?: number;
  /** The id of the resume that took its token, if one did (its flow has not ended). */
  readonly takenBy?: string;
}

/** Who takes a token: a resume, in a Subject incarnation. */
export interface Taker {
  /** The resume's id. */
  readonly resume: string;
  /** The Subject incarnation it reached. */
  readonly incarnation: string;
  /**
   * Until when the taken token is kept if its flow never ends (its Subject died and the resume
   * is not sent again): then {@linkcode PausedStore.expire} ends it.
   */
  readonly keepUntil: number;
  /**
   * Take again a token this resume took in another incarnation even when its flow had ended
   * ({@linkcode PausedStore.finish}): where a final the IM acknowledged can die with the Subject
   * (the IM in its process). Else that is a `repeat`. @default {false}
   */
  readonly rerunEnded?: boolean;
}

/**
 * What a resume's take came to: `taken` (the flow is the resume's to run: a first take, or the
 * same resume sent again to a later Subject incarnation than the one that took it, whose flow
 * had not ended, or had ended with `rerunEnded`), `repeat` (this resume took it before, and its
 * flow runs in this incarnation, ended, or paused again: nothing to do), or `none` (unknown,
 * expired, or taken by another resume).
 */
export type Take =
  | { readonly kind: "taken"; readonly paused: PausedFlow }
  | { readonly kind: "repeat"; readonly id: string }
  | { readonly kind: "none" };

/** `done` of a row: its flow paused, or resumed and running; ended; paused again under another token. */
const RUNNING = 0, ENDED = 1, PAUSED_AGAIN = 2;

/**
 * A connection to the SQLite file at `path` in WAL mode, with `synchronous` as given and waiting
 * at most `busyMs` for a lock: the paused flows' (`FULL`) and the kept finals' (`NORMAL`).
 */
export function openDatabase(path: string, synchronous: "FULL" | "NORMAL", busyMs: number): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${synchronous}; PRAGMA busy_timeout = ${busyMs};`);
  return db;
}

/**
 * Writes to a store that fail fast for a while after one failed (the file locked from outside, a
 * full disk): a write waits for a lock on the caller's thread, the Subject's, and a burst of them
 * would hold it for seconds (an outside attack: 15 resumes during a lock, the Subject killed as
 * hung by `liveness_timeout` 2000). Pure but for the clock.
 */
export class WriteGate {
  /** Until when (`performance.now()`) writes are not tried. */
  #failedUntil = 0;

  /** For `pauseMs` after a failed write, writes throw at once. */
  constructor(readonly pauseMs: number) {}

  /** Runs `write`, or throws at once while a failed one is recent; a failure starts the pause. */
  run<T>(write: () => T, now: number = performance.now()): T {
    if (now < this.#failedUntil) {
      throw new Error(`not tried: a write to the store failed less than ${this.pauseMs} ms ago`);
    }
    try {
      return write();
    } catch (e) {
      this.#failedUntil = now + this.pauseMs;
      throw e;
    }
  }
}

/**
 * Runs `statements` in one transaction of `db`. On an error, rolls back if SQLite has not already
 * (it does by itself on a full disk) and throws that first error, not the rollback's.
 */
export function inTransaction(
  db: DatabaseSync,
  begin: "BEGIN" | "BEGIN IMMEDIATE",
  statements: () => void,
): void {
  try {
    db.exec(begin);
    statements();
    db.exec("COMMIT");
  } catch (e) {
    try {
      if (db.isTransaction) db.exec("ROLLBACK");
    } catch { /* rolled back */ }
    throw e;
  }
}

/** Paused flows by token, in a SQLite file (or `:memory:`). */
export class PausedStore {
  readonly #db: DatabaseSync;
  readonly #save: StatementSync;
  readonly #take: StatementSync;
  readonly #taker: StatementSync;
  readonly #finish: StatementSync;
  readonly #expire: StatementSync;
  readonly #purge: StatementSync;
  readonly #count: StatementSync;
  readonly #waiting: StatementSync;
  readonly #known: StatementSync;
  readonly #list: StatementSync;

  /** Opens (or creates) the store. */
  constructor(path: string) {
    // A lock held from outside is waited for 200 ms at most, on the Subject's thread: the Subject
    // tries a failed write again at its next tick (`Subject`'s store backlog).
    this.#db = openDatabase(path, "FULL", 200);
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS paused (
        token TEXT PRIMARY KEY, id TEXT NOT NULL, flow TEXT NOT NULL, position INTEGER NOT NULL,
        n INTEGER NOT NULL, "values" TEXT NOT NULL, paused_at INTEGER NOT NULL, deadline INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS paused_deadline ON paused (deadline);
      CREATE INDEX IF NOT EXISTS paused_id ON paused (id);
    `);
    // A store written before configuration versions gets their column (empty: version 1).
    const columns = this.#db.prepare(`PRAGMA table_info(paused)`).all() as { name: string }[];
    if (!columns.some((c) => c.name === "version")) {
      this.#db.exec(`ALTER TABLE paused ADD COLUMN version INTEGER`);
    }
    // …and the columns of taken tokens (none taken: those stores deleted a token as it was taken).
    if (!columns.some((c) => c.name === "taken_by")) {
      this.#db.exec(`
        ALTER TABLE paused ADD COLUMN taken_by TEXT;
        ALTER TABLE paused ADD COLUMN taken_in TEXT;
        ALTER TABLE paused ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
      `);
    }
    const cols =
      `token, id, flow, position, n, "values", paused_at AS pausedAt, deadline, version, taken_by AS takenBy`;
    this.#save = this.#db.prepare(
      `INSERT INTO paused (token, id, flow, position, n, "values", paused_at, deadline, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    // Free, or taken by this very resume in another (an earlier) Subject incarnation.
    this.#take = this.#db.prepare(
      `UPDATE paused SET taken_by = :by, taken_in = :inc, deadline = :until, done = ${RUNNING}
       WHERE token = :token AND deadline > :now
         AND (taken_by IS NULL OR (taken_by = :by AND taken_in <> :inc
           AND (done = ${RUNNING} OR (done = ${ENDED} AND :rerun = 1))))
       RETURNING ${cols}`,
    );
    this.#taker = this.#db.prepare(`SELECT id, taken_by AS takenBy FROM paused WHERE token = ?`);
    this.#finish = this.#db.prepare(`UPDATE paused SET done = ? WHERE token = ? AND taken_by IS NOT NULL`);
    // A token taken in this incarnation is left to its flow, which ends here.
    this.#expire = this.#db.prepare(
      `DELETE FROM paused WHERE deadline <= :now AND done = ${RUNNING} AND (taken_in IS NULL OR taken_in <> :inc)
       RETURNING ${cols}`,
    );
    this.#purge = this.#db.prepare(`DELETE FROM paused WHERE deadline <= ? AND done <> ${RUNNING}`);
    this.#count = this.#db.prepare(`SELECT count(*) AS c FROM paused WHERE taken_by IS NULL`);
    // Waiting for a resume, or taken by one whose flow has not ended (in this Subject or in one
    // that died: the resume, sent again, takes it again).
    this.#waiting = this.#db.prepare(
      `SELECT 1 FROM paused WHERE id = ? AND (taken_by IS NULL OR done = ${RUNNING}) LIMIT 1`,
    );
    this.#known = this.#db.prepare(`SELECT 1 FROM paused WHERE id = ? LIMIT 1`);
    this.#list = this.#db.prepare(`SELECT ${cols} FROM paused WHERE taken_by IS NULL ORDER BY paused_at`);
  }

  /**
   * Saves a paused flow (on disk when this returns). `ends`: the token a resume took to run the
   * flow to this pause, finished in the same transaction (see {@linkcode PausedStore.finish}).
   */
  save(p: PausedFlow, ends?: string): void {
    const row = [p.token, p.id, p.flow, p.position, p.n, p.values, p.pausedAt, p.deadline, p.version ?? null];
    this.#writes.run(() => {
      if (ends === undefined) this.#save.run(...row);
      else {
        inTransaction(this.#db, "BEGIN IMMEDIATE", () => {
          this.#save.run(...row);
          this.#finish.run(PAUSED_AGAIN, ends);
        });
      }
    });
  }

  /** Each write waits 200 ms at most for a lock; for half a second after a failed one, none is tried. */
  readonly #writes = new WriteGate(500);

  /**
   * Takes the token for `taker`'s resume (see {@linkcode Take}): atomic, so of resumes racing
   * for one token exactly one takes it. The taken token is kept until `taker.keepUntil`
   * ({@linkcode PausedStore.finish} marks its flow ended).
   */
  take(token: string, taker: Taker, now: number = Date.now()): Take {
    const row = this.#writes.run(() =>
      this.#take.get({
        token,
        by: taker.resume,
        inc: taker.incarnation,
        until: taker.keepUntil,
        rerun: taker.rerunEnded ? 1 : 0,
        now,
      })
    );
    if (row) return { kind: "taken", paused: withVersion(row) };
    const held = this.#taker.get(token) as { id: string; takenBy: string | null } | undefined;
    return held && held.takenBy === taker.resume ? { kind: "repeat", id: held.id } : { kind: "none" };
  }

  /**
   * The flow a taken token resumed has ended: its final publication reached the Integration
   * Manager. The token's row is kept until its deadline, so that the same resume sent again is a
   * `repeat` (in a later incarnation with `rerunEnded`, it takes the token again: the final may
   * have died with an IM in the Subject's process), and it never expires into a `timeout`.
   */
  finish(token: string): void {
    this.#writes.run(() => this.#finish.run(ENDED, token));
  }

  /**
   * Removes and returns every flow whose deadline has passed: paused flows never resumed, and
   * resumed flows whose Subject (another incarnation than `incarnation`) died before they ended
   * and whose resume was not sent again (these have `takenBy`). Ended flows' marks are removed
   * silently; a token taken in `incarnation` is left to its running flow.
   */
  expire(now: number = Date.now(), incarnation = ""): PausedFlow[] {
    return this.#writes.run(() => {
      this.#purge.run(now);
      return this.#expire.all({ now, inc: incarnation }).map(withVersion);
    });
  }

  /** Paused flows waiting for a resume now. */
  count(): number {
    return Number((this.#count.get() as { c: number }).c);
  }

  /**
   * Whether request `id` has not ended: paused, waiting for a resume, or resumed by one whose flow
   * has not ended (here, or in a Subject that died: that resume, sent again, runs it on).
   */
  waiting(id: string): boolean {
    return this.#waiting.get(id) !== undefined;
  }

  /**
   * Whether request `id` has paused at all (until its row's deadline): it has run, and a copy of
   * it must not run from its start.
   */
  known(id: string): boolean {
    return this.#known.get(id) !== undefined;
  }

  /** Every paused flow waiting for a resume, oldest first. */
  list(): PausedFlow[] {
    return this.#list.all().map(withVersion);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

/** A row as a {@linkcode PausedFlow}: empty version and taker columns are left out. */
function withVersion(row: Record<string, unknown>): PausedFlow {
  const { version, takenBy, ...rest } = row;
  const p: Record<string, unknown> = { ...rest };
  if (version !== null && version !== undefined) p.version = Number(version);
  if (takenBy !== null && takenBy !== undefined) p.takenBy = String(takenBy);
  return p as unknown as PausedFlow;
}
