/**
 * The Subject's reloads (`cli.ts reload`, `Client.reload`, `start --watch`): a new set of flow and
 * mapping files, checked as `flows --strict` checks them, is rolled out as the next configuration
 * version (`config_versions.ts`). Every worker is sent it (`CONFIG`) and imports its handler
 * modules before it answers (`LOADED`); only when all have it do new requests start on it. A
 * refusal, or a worker that does not answer in time, drops it everywhere (`RETIRE`) and the
 * caller is told why: nothing changed. A worker that joins is sent every live version before it is
 * given work, so no step reaches a worker without its version. Versions no request uses any more
 * are retired on every worker.
 *
 * @module
 */

import { buildCatalog, hasErrors, type SourceFile } from "../topic/catalog.ts";
import { formatDiagnostic } from "../topic/diagnostics.ts";
import {
  type ConfigMessage,
  CONTROL_FRAMES,
  decodeObject,
  decodeWorkerStatus,
  type ReloadAnswer,
} from "../wire/control.ts";
import { utf8 } from "../wire/protocol.ts";
import type { logger } from "../log.ts";
import { Rollout, sourcesHash, type VersionBook } from "./config_versions.ts";

/** What the reloads ask of the Subject. */
export interface ReloadHost {
  /** Sends `frames` to the worker with routing id `idFrame`. */
  toWorker(idFrame: Uint8Array, frames: Uint8Array[]): void;
  /** Sends `frames` to the service with routing id `idFrame`. */
  toService(idFrame: Uint8Array, frames: Uint8Array[]): void;
  /** A worker held until it had every live version now has them: let it join with its status message. */
  admit(key: string, type: "READY" | "HB", status: Uint8Array | undefined, idFrame: Uint8Array): void;
}

/** Options of {@linkcode Reloads}. */
export interface ReloadsOptions {
  /** The secret a `RELOAD` must carry; none: reloads are refused. */
  readonly key?: string;
  /** Milliseconds every worker has to load a version. */
  readonly timeoutMs: number;
  /**
   * Milliseconds after which a held worker that wrote nothing is forgotten, and a rollout no
   * longer waits for it (as a worker given work is dropped then). @default {60_000}
   */
  readonly silentAfterMs?: number;
  /** With the files' `[permissions]`: let components ask to run programs or for any network access. */
  readonly allowComponentPermissions?: boolean;
  /** The Subject's logger. */
  readonly log: ReturnType<typeof logger>;
  /** Hears of each version made current: its files. */
  readonly onCurrent?: (sources: readonly SourceFile[]) => void;
  /**
   * Version 1 is a reload's files that a restarted Subject went on with: no worker's own files
   * are it, whatever their hash (handler code may have changed since the worker started).
   */
  readonly restored?: boolean;
  /** The clock, in ms. @default {performance.now} */
  readonly now?: () => number;
}

/** A worker not yet given work: the versions it still has to load, and its last status message. */
interface Joining {
  readonly idFrame: Uint8Array;
  readonly needed: Set<number>;
  type: "READY" | "HB";
  status: Uint8Array | undefined;
  seen: number;
  failed: boolean;
}

/** The reload in progress: its rollout, and who asked. */
interface InProgress {
  readonly rollout: Rollout;
  readonly idFrame: Uint8Array;
  readonly ref: string;
}

/** The Subject's configuration versions and their rollouts. */
export class Reloads {
  /** The versions, and the version of each request in flight. */
  readonly book: VersionBook;
  /** Names this Subject incarnation's numbering (a worker's versions of another one are not these). */
  readonly incarnation = crypto.randomUUID();
  readonly #host: ReloadHost;
  readonly #o: ReloadsOptions;
  readonly #now: () => number;
  /** Admitted workers: routing id, and the versions each holds. */
  readonly #workers = new Map<string, { idFrame: Uint8Array; versions: Set<number> }>();
  readonly #joining = new Map<string, Joining>();
  #reload?: InProgress;
  /** Rollouts that failed, and reloads refused for their files. */
  failed = 0;

  /** Reloads over version 1, `first`. */
  constructor(book: VersionBook, host: ReloadHost, options: ReloadsOptions) {
    this.book = book;
    this.#host = host;
    this.#o = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * A worker's `READY` or `HB`: `true` when it is held (the worker lacks a live version and has
   * been sent it), `false` when the worker side may take it.
   */
  hold(key: string, idFrame: Uint8Array, type: "READY" | "HB", status: Uint8Array | undefined): boolean {
    if (this.#workers.has(key)) return false;
    let j = this.#joining.get(key);
    if (j) {
      // (frames may be views of a buffer the socket reuses: what is kept is copied)
      if (type === "READY" || j.type === "HB") [j.type, j.status] = [type, status?.slice()];
      j.seen = this.#now();
      return true;
    }
    const base = decodeWorkerStatus(status).base;
    // A worker that does not say which files it loaded does not take versions: it runs its own.
    if (base === undefined) return false;
    j = {
      idFrame: idFrame.slice(),
      needed: new Set(),
      type,
      status: status?.slice(),
      seen: this.#now(),
      failed: false,
    };
    this.#joining.set(key, j);
    const pending = this.book.pending;
    for (const v of this.book.live()) {
      // Its own files are version 1, still current, as loaded at start: it need not load them
      // again (the CONFIG without files, sent ahead of any step, says so). A later version, with
      // the same files, may have other handler code: it loads that afresh.
      const own = v.version === 1 && this.book.current === 1 && !this.#o.restored && base === v.hash;
      if (v.version !== pending && !own) j.needed.add(v.version);
      this.#sendConfig(
        j.idFrame,
        { incarnation: this.incarnation, version: v.version },
        own ? undefined : v.sources,
      );
    }
    if (pending !== undefined) this.#reload?.rollout.joined(key);
    if (j.needed.size > 0) return true;
    // It has them all already (its own files are the current version): it joins at once.
    this.#register(key, j);
    return false;
  }

  #sendConfig(idFrame: Uint8Array, m: ConfigMessage, files: readonly SourceFile[] | undefined): void {
    const body = files ? { ...m, files: files.map((f) => ({ file: f.file, text: f.text })) } : m;
    this.#host.toWorker(idFrame, [CONTROL_FRAMES.CONFIG, utf8(JSON.stringify(body)).slice()]);
  }

  #admit(key: string, j: Joining): void {
    this.#register(key, j);
    this.#host.admit(key, j.type, j.status, j.idFrame);
  }

  #register(key: string, j: Joining): void {
    this.#joining.delete(key);
    const versions = new Set(this.book.live().map((v) => v.version).filter((v) => v !== this.book.pending));
    this.#workers.set(key, { idFrame: j.idFrame, versions });
  }

  /** A worker's `LOADED`. */
  onLoaded(key: string, body: Uint8Array | undefined): void {
    const m = decodeObject(body);
    const version = Number(m?.version);
    if (!Number.isInteger(version)) return;
    const error = typeof m?.error === "string" ? m.error : undefined;
    const j = this.#joining.get(key);
    if (j && j.needed.has(version)) {
      if (error !== undefined) {
        if (!j.failed) {
          this.#o.log.error(
            "Worker {worker} cannot load live version {version}: {error}; it is given no work",
            {
              worker: key,
              version,
              error,
            },
          );
        }
        j.failed = true;
      } else {
        // A load that failed (a timeout, say) may succeed later: the worker is admitted once it
        // holds every live version, whatever it reported before (a worker stopped mid-load, then
        // continued, stayed out for good otherwise).
        j.needed.delete(version);
        if (j.needed.size === 0) {
          if (j.failed) {
            this.#o.log.info("Worker {worker} now holds every live version: it is given work", {
              worker: key,
            });
          }
          this.#admit(key, j);
        }
      }
    } else if (error === undefined) this.#workers.get(key)?.versions.add(version);
    const r = this.#reload;
    if (r && r.rollout.version === version) {
      if (error === undefined) r.rollout.loaded(key);
      else r.rollout.refused(key, error);
      this.#settle();
    }
  }

  /** A worker left (`BYE`, or silent past the heartbeat timeout). */
  left(key: string): void {
    this.#workers.delete(key);
    this.#joining.delete(key);
    this.#reload?.rollout.left(key);
    this.#settle();
  }

  /** Every tick: a rollout past its deadline fails; held workers gone silent are forgotten. */
  tick(): void {
    this.#settle();
    const now = this.#now();
    // A held worker gone silent (killed while it joined, say) is forgotten like one given work:
    // a rollout waited for it until its deadline, and every rollout after it too while it was
    // remembered (an outside attack: four reloads in a row failed naming a dead worker). If it
    // speaks again, it joins afresh.
    const silentAfter = this.#o.silentAfterMs ?? 60_000;
    for (const [k, j] of this.#joining) {
      if (now - j.seen <= silentAfter) continue;
      this.#o.log.info("Worker {worker} went silent while it joined: forgotten", { worker: k });
      this.left(k);
    }
    this.#retire(this.book.sweep());
  }

  /** Request `id` ended or paused: retire the version it held if no other request uses it. */
  ended(id: string): void {
    if (this.book.tracked) this.#retire(this.book.end(id));
  }

  /** Workers admitted (told every live version). */
  get workers(): number {
    return this.#workers.size;
  }

  /** A `RELOAD` from the service with routing id `idFrame`. */
  async onReload(idFrame: Uint8Array, body: Uint8Array | undefined): Promise<void> {
    idFrame = idFrame.slice();
    const m = decodeObject(body);
    const ref = typeof m?.ref === "string" ? m.ref.slice(0, 100) : "";
    const answer = (a: Omit<ReloadAnswer, "ref">) => {
      if (a.error !== undefined) {
        this.failed++;
        this.#o.log.warn("Refused a reload: {error}", { error: a.error });
      }
      this.#host.toService(idFrame, [CONTROL_FRAMES.RELOADED, utf8(JSON.stringify({ ref, ...a })).slice()]);
    };
    if (this.#o.key === undefined || typeof m?.key !== "string" || m.key !== this.#o.key) {
      return answer({
        error:
          "reload refused: the key is not the Subject's (reload.key in its runtime directory; a Subject restarted since the key was read writes a new one: send the reload again)",
      });
    }
    const files = Array.isArray(m.files) ? m.files : [];
    const sources: SourceFile[] = files.filter((f) =>
      typeof f?.file === "string" && typeof f?.text === "string"
    )
      .map((f) => ({ file: f.file, text: f.text }));
    if (!sources.length || sources.length !== files.length) {
      return answer({ error: "a reload names its files: [{file, text}, …], at least one" });
    }
    if (this.#reload) return answer({ error: `version ${this.#reload.rollout.version} is being rolled out` });
    const catalog = buildCatalog(sources, {
      strict: true,
      allowComponentPermissions: this.#o.allowComponentPermissions,
    });
    if (hasErrors(catalog.diagnostics)) {
      const diagnostics = catalog.diagnostics.filter((d) => d.severity === "error").map(formatDiagnostic);
      return answer({ error: `the files have ${diagnostics.length} error(s): nothing changed`, diagnostics });
    }
    const hash = await sourcesHash(sources);
    const busy = this.#reload as InProgress | undefined; // (set by another reload meanwhile)
    if (busy) return answer({ error: `version ${busy.rollout.version} is being rolled out` });
    let version: number;
    try {
      version = this.book.propose({ flows: catalog.flows, sources, hash });
    } catch (e) {
      return answer({ error: `cannot roll out now: ${(e as Error).message}` });
    }
    const rollout = new Rollout(
      version,
      [...this.#workers.keys(), ...this.#joining.keys()],
      this.#o.timeoutMs,
      this.#now(),
    );
    this.#reload = { rollout, idFrame, ref };
    this.#o.log.info("Rolling out configuration version {version} ({files} files) to {n} workers", {
      version,
      files: sources.length,
      n: rollout.waiting.length,
    });
    const msg = { incarnation: this.incarnation, version };
    for (const w of this.#workers.values()) this.#sendConfig(w.idFrame, msg, sources);
    for (const j of this.#joining.values()) this.#sendConfig(j.idFrame, msg, sources);
    this.#settle();
  }

  /** Ends the rollout in progress if its outcome is known. */
  #settle(): void {
    const r = this.#reload;
    if (!r) return;
    const out = r.rollout.outcome(this.#now());
    if (out.state === "pending") return;
    this.#reload = undefined;
    const version = r.rollout.version;
    const answer = (a: Omit<ReloadAnswer, "ref">) =>
      this.#host.toService(r.idFrame, [
        CONTROL_FRAMES.RELOADED,
        utf8(JSON.stringify({ ref: r.ref, ...a })).slice(),
      ]);
    if (out.state === "failed") {
      this.failed++;
      this.book.drop(version);
      this.#o.log.error("Configuration version {version} was not rolled out: {reason}", {
        version,
        reason: out.reason,
      });
      this.#retire([version]);
      return answer({ error: `${out.reason}; nothing changed` });
    }
    const retired = this.book.commit(version);
    this.#o.onCurrent?.(this.book.get(version)!.sources);
    for (const w of this.#workers.values()) w.versions.add(version);
    this.#o.log.info("Configuration version {version} is current", { version });
    this.#retire(retired);
    answer({ version });
  }

  /** Tells every worker that `versions` are gone. */
  #retire(versions: readonly number[]): void {
    for (const version of versions) {
      const frame = utf8(JSON.stringify({ version })).slice();
      for (const w of this.#workers.values()) {
        w.versions.delete(version);
        this.#host.toWorker(w.idFrame, [CONTROL_FRAMES.RETIRE, frame]);
      }
      for (const j of this.#joining.values()) {
        j.needed.delete(version);
        this.#host.toWorker(j.idFrame, [CONTROL_FRAMES.RETIRE, frame]);
      }
    }
    for (const [k, j] of this.#joining) {
      if (j.needed.size === 0 && !j.failed && versions.length) this.#admit(k, j);
    }
  }
}
