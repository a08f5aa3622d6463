/**
 * The Subject's kept finals on disk (see `final_replay.ts`): a table of the same SQLite file as
 * the paused flows (`async_store`), so that a keyed request sent again after a Subject restart
 * is answered with the final its first run kept instead of running again. What is kept and
 * forgotten is queued, and written in one transaction by {@linkcode KeptStore.commit} (the
 * Subject commits before each batch of finals leaves for the IM, and at the end of each pass): one write of each record cost about 48 µs here (a
 * transaction each), and many records of a pass share one. Through its own connection with
 * `synchronous = NORMAL`: a commit is in the file (the operating system's cache) when it
 * returns, so it survives the Subject's process being killed, not a crash of the machine; no
 * `fsync` per commit (the paused flows' connection keeps `FULL`). It waits at most 100 ms for a
 * lock (the file locked from outside): the Subject's thread waits with it, and a commit that fails
 * leaves those finals in memory only.
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import { inTransaction, openDatabase, WriteGate } from "./paused_store.ts";

/** A kept final (or pause) as stored: its request id, whether it is a pause, and its frames. */
export interface StoredFinal {
  readonly id: string;
  readonly pause: boolean;
  readonly frames: readonly [topic: Uint8Array, header: Uint8Array, values: Uint8Array];
}

/** Kept finals by request id, oldest first, in a SQLite file (or `:memory:`). */
export class KeptStore {
  readonly #db: DatabaseSync;
  readonly #put: StatementSync;
  readonly #remove: StatementSync;
  readonly #all: StatementSync;
  /** What is to be written at the next commit, in order: a record kept, or an id forgotten. */
  #queue: (readonly [id: string, pause: boolean, frames: readonly Uint8Array[]] | string)[] = [];
  /** For a second after a failed commit, none is tried. */
  readonly #commits = new WriteGate(1000);

  /** Opens (or creates) the table in the file at `path`. */
  constructor(path: string) {
    this.#db = openDatabase(path, "NORMAL", 100);
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS kept_finals (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, pause INTEGER NOT NULL,
        topic BLOB NOT NULL, header BLOB NOT NULL, body BLOB NOT NULL
      );
    `);
    // A record kept again (a pause, then the final) takes a new place: the newest.
    this.#put = this.#db.prepare(
      `INSERT OR REPLACE INTO kept_finals (id, pause, topic, header, body) VALUES (?, ?, ?, ?, ?)`,
    );
    this.#remove = this.#db.prepare(`DELETE FROM kept_finals WHERE id = ?`);
    this.#all = this.#db.prepare(`SELECT id, pause, topic, header, body FROM kept_finals ORDER BY seq`);
  }

  /**
   * Keeps `id`'s final (or pause), replacing what it had, at the next commit. `frames` are copied
   * now: they may be views of a batch that is reused.
   */
  put(id: string, pause: boolean, frames: readonly Uint8Array[]): void {
    this.#queue.push([id, pause, frames.map((f) => f.slice())]);
  }

  /** `id` is no longer kept (forgotten for the bounds, or its pause was resumed), at the next commit. */
  remove(id: string): void {
    this.#queue.push(id);
  }

  /** Whether anything waits for {@linkcode KeptStore.commit}. */
  get pending(): boolean {
    return this.#queue.length > 0;
  }

  /**
   * Writes what was kept and forgotten since the last commit, in one transaction. If it throws,
   * nothing of it is written, and it is not tried again (those records stay in memory only). For
   * a second after a failed commit, commits are not tried (each would wait for the lock on the
   * caller's thread): they throw at once.
   */
  commit(now: number = performance.now()): void {
    if (this.#queue.length === 0) return;
    const queue = this.#queue;
    this.#queue = [];
    this.#commits.run(() =>
      inTransaction(this.#db, "BEGIN", () => {
        for (const op of queue) {
          if (typeof op === "string") this.#remove.run(op);
          else this.#put.run(op[0], op[1] ? 1 : 0, op[2][0], op[2][1], op[2][2]);
        }
      }), now);
  }

  /** Every kept record, oldest first. */
  *all(): Generator<StoredFinal> {
    for (const row of this.#all.iterate() as Iterable<Record<string, unknown>>) {
      yield {
        id: String(row.id),
        pause: row.pause === 1,
        frames: [row.topic as Uint8Array, row.header as Uint8Array, row.body as Uint8Array],
      };
    }
  }

  /** Commits what waits, then closes the file. Safe to call twice. */
  close(): void {
    if (!this.#db.isOpen) return;
    try {
      this.commit();
    } finally {
      this.#db.close();
    }
  }
}
