/**
 * Durable state of paused (`@ASYNC`) flows, in SQLite through Deno's built-in `node:sqlite`:
 * no server, no unstable flag (Deno KV needs `--unstable-kv`), synchronous writes that are on
 * disk before the pause is published, and an atomic take (`DELETE … RETURNING`) so that a
 * token resumes a flow once.
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
}

/** Paused flows by token, in a SQLite file (or `:memory:`). */
export class PausedStore {
  readonly #db: DatabaseSync;
  readonly #save: StatementSync;
  readonly #take: StatementSync;
  readonly #expire: StatementSync;
  readonly #count: StatementSync;
  readonly #list: StatementSync;

  /** Opens (or creates) the store. */
  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = FULL;
      PRAGMA busy_timeout = 2000;
      CREATE TABLE IF NOT EXISTS paused (
        token TEXT PRIMARY KEY, id TEXT NOT NULL, flow TEXT NOT NULL, position INTEGER NOT NULL,
        n INTEGER NOT NULL, "values" TEXT NOT NULL, paused_at INTEGER NOT NULL, deadline INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS paused_deadline ON paused (deadline);
    `);
    // A store written before configuration versions gets their column (empty: version 1).
    const columns = this.#db.prepare(`PRAGMA table_info(paused)`).all() as { name: string }[];
    if (!columns.some((c) => c.name === "version")) {
      this.#db.exec(`ALTER TABLE paused ADD COLUMN version INTEGER`);
    }
    const cols = `token, id, flow, position, n, "values", paused_at AS pausedAt, deadline, version`;
    this.#save = this.#db.prepare(
      `INSERT INTO paused (token, id, flow, position, n, "values", paused_at, deadline, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#take = this.#db.prepare(`DELETE FROM paused WHERE token = ? AND deadline > ? RETURNING ${cols}`);
    this.#expire = this.#db.prepare(`DELETE FROM paused WHERE deadline <= ? RETURNING ${cols}`);
    this.#count = this.#db.prepare(`SELECT count(*) AS c FROM paused`);
    this.#list = this.#db.prepare(`SELECT ${cols} FROM paused ORDER BY paused_at`);
  }

  /** Saves a paused flow (on disk when this returns). */
  save(p: PausedFlow): void {
    this.#save.run(
      p.token,
      p.id,
      p.flow,
      p.position,
      p.n,
      p.values,
      p.pausedAt,
      p.deadline,
      p.version ?? null,
    );
  }

  /** Removes and returns the flow a token pauses, unless it is unknown, used or expired. */
  take(token: string, now: number = Date.now()): PausedFlow | undefined {
    const row = this.#take.get(token, now);
    return row ? withVersion(row) : undefined;
  }

  /** Removes and returns every flow whose deadline has passed. */
  expire(now: number = Date.now()): PausedFlow[] {
    return this.#expire.all(now).map(withVersion);
  }

  /** Paused flows now. */
  count(): number {
    return Number((this.#count.get() as { c: number }).c);
  }

  /** Every paused flow, oldest first. */
  list(): PausedFlow[] {
    return this.#list.all().map(withVersion);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

/** A row as a {@linkcode PausedFlow}: an empty version column is left out. */
function withVersion(row: Record<string, unknown>): PausedFlow {
  const { version, ...rest } = row;
  return (version === null || version === undefined
    ? { ...rest }
    : { ...rest, version: Number(version) }) as unknown as PausedFlow;
}
