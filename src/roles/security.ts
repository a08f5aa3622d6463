/**
 * CURVE and ZAP for the roles: the keys a process loads from its settings, and the gatekeeper
 * of a role that binds tcp endpoints: a ZAP handler (RFC 27) on `inproc://zeromq.zap.01` in the
 * role's own context, serviced by the role's reactor, that checks each connecting key against
 * its endpoint's allowlist (a folder of `.pub` files), logs and counts each refusal, and reloads
 * the allowlists on SIGHUP and when a folder changes. Peers already connected stay connected:
 * ZAP is asked at the handshake only.
 *
 * Every socket a role binds or connects goes through {@linkcode bindSecure} or
 * {@linkcode connectSecure}.
 *
 * @module
 */

import { MonitorEvent, Opt } from "../zmq/ffi.ts";
import {
  connectRedialing,
  type CurveClientKeys,
  curveClientOptions,
  curveKeyPair,
  curvePublicKey,
  curveServerOptions,
  CurveUnavailableError,
  isTcp,
  requireCurve,
  z85Key,
} from "../zmq/curve.ts";
import { monitorSocket } from "../zmq/monitor.ts";
import type { Reactor, ReactorSocket } from "../zmq/reactor.ts";
import type { SocketOptions } from "../zmq/socket.ts";
import { logger } from "../log.ts";
import { type Allowlists, decideZap, parseKeyFile, parseZapRequest, type ZapDomain } from "./zap.ts";
import { dirname } from "node:path";

/** The keys and allowlists of a process, loaded from its settings. */
export interface Security {
  /** This process's key pair and the Subject's / IM's public key. */
  readonly keys: CurveClientKeys;
  /** The allowlist folder of each domain (the `subject` domain accepts only `keys.serverKey`). */
  readonly allow: Readonly<Partial<Record<ZapDomain, string>>>;
}

/** The security settings (a subset of the config). */
export interface SecuritySettings {
  /** Path of this process's secret key file (`NAME.key`); empty: no CURVE. */
  readonly curve_secret_key: string;
  /** Path of the Subject's / IM's public key file; empty: this process's own public key. */
  readonly curve_server_key: string;
  /** Allowlist folder for services. */
  readonly curve_allow_services: string;
  /** Allowlist folder for workers. */
  readonly curve_allow_workers: string;
  /** Allowlist folder for subscribers. */
  readonly curve_allow_subscribers: string;
}

/** A key file or an allowlist cannot be used. */
export class SecurityError extends Error {
  /** What kind of error this is, for programs: `bad_security`. */
  readonly code = "bad_security";
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SecurityError";
  }
}

async function readKeyFile(path: string, secret: boolean): Promise<string> {
  let content: string;
  try {
    if (secret && Deno.build.os !== "windows") {
      const mode = (await Deno.stat(path)).mode ?? 0;
      if (mode & 0o077) {
        throw new SecurityError(
          `${path}: permissions 0${
            (mode & 0o777).toString(8)
          } are too open for a secret key; chmod 600 ${path}`,
        );
      }
    }
    content = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof SecurityError) throw e;
    throw new SecurityError(`${path}: cannot read the key file: ${(e as Error).message}`, { cause: e });
  }
  try {
    return parseKeyFile(content, path, secret ? "secret" : "public");
  } catch (e) {
    throw new SecurityError((e as Error).message, { cause: e });
  }
}

/**
 * Loads the keys the settings name; `undefined` when `curve_secret_key` is empty (no CURVE:
 * tcp endpoints are plaintext, as ipc ones always are).
 *
 * @throws {SecurityError} for an unreadable or too open key file.
 * @throws {CurveUnavailableError} when keys are set but libzmq has no CURVE.
 */
export async function loadSecurity(settings: SecuritySettings): Promise<Security | undefined> {
  if (!settings.curve_secret_key) {
    const stray = ([
      "curve_server_key",
      "curve_allow_services",
      "curve_allow_workers",
      "curve_allow_subscribers",
    ] as const)
      .filter((k) => settings[k]);
    if (stray.length) {
      throw new SecurityError(`${stray.join(", ")} set without curve_secret_key: set this process's key too`);
    }
    return undefined;
  }
  requireCurve();
  const secretKey = await readKeyFile(settings.curve_secret_key, true);
  const publicKey = curvePublicKey(secretKey);
  const serverKey = settings.curve_server_key
    ? await readKeyFile(settings.curve_server_key, false)
    : publicKey;
  return {
    keys: { publicKey, secretKey, serverKey },
    allow: {
      services: settings.curve_allow_services || undefined,
      workers: settings.curve_allow_workers || undefined,
      subscribers: settings.curve_allow_subscribers || undefined,
    },
  };
}

/**
 * The CURVE keys the settings name (see `security.ts`), or `null` after printing why they
 * cannot be used (a key file, an allowlist, a libzmq without CURVE): a start-up error, never a
 * plaintext fallback.
 */
export async function securityOrError(
  settings: SecuritySettings,
  printError: (line: string) => void = console.error,
): Promise<Security | undefined | null> {
  try {
    return await loadSecurity(settings);
  } catch (e) {
    if (e instanceof SecurityError || e instanceof CurveUnavailableError) {
      printError(`error: ${e.message}`);
      return null;
    }
    throw e;
  }
}

/**
 * `keygen NAME`: writes a new key pair, `NAME.key` (the secret key, mode 0600) and `NAME.pub`
 * (the public key). Refuses to overwrite either unless `force`. Returns the public key.
 */
export async function writeKeyPair(name: string, options: { force?: boolean } = {}): Promise<string> {
  const pair = curveKeyPair();
  // The folder the pair goes in (`keys/` in the README's walk-through), made if missing, private.
  await Deno.mkdir(dirname(name), { recursive: true, mode: 0o700 });
  const flags = { createNew: !options.force, mode: 0o600 };
  await Deno.writeTextFile(
    `${name}.key`,
    `# ZManager CURVE secret key: keep it private (mode 0600)\n${pair.secretKey}\n`,
    flags,
  );
  await Deno.chmod(`${name}.key`, 0o600);
  await Deno.writeTextFile(`${name}.pub`, `# ZManager CURVE public key\n${pair.publicKey}\n`, {
    createNew: !options.force,
    mode: 0o644,
  });
  return pair.publicKey;
}

/** Reads every `.pub` file of a folder; a file that is not a key is skipped with a warning. */
async function readAllowlist(dir: string, warn: (msg: string) => void): Promise<Set<string>> {
  const out = new Set<string>();
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    warn(`${dir}: cannot read the allowlist folder (${(e as Error).message}): it allows no key`);
    return out;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".pub")) continue;
    try {
      out.add(parseKeyFile(await Deno.readTextFile(`${dir}/${e.name}`), `${dir}/${e.name}`, "public"));
    } catch (err) {
      warn(`${(err as Error).message}: skipped`);
    }
  }
  return out;
}

/** Counters per domain. */
type Counts = Record<ZapDomain, number>;
const zero = (): Counts => ({ services: 0, workers: 0, subscribers: 0, subject: 0 });

/** What a gatekeeper counted, as `stats` shows it under `security`. */
export interface SecurityStats {
  /** Handshakes allowed, by domain. */
  readonly allowed: Counts;
  /** Keys refused (not on the domain's allowlist), by domain. */
  readonly refused: Counts;
  /** Handshakes that failed before ZAP (a plaintext peer, a wrong server key), by domain. */
  readonly handshakeFailed: Counts;
  /** Keys on each allowlist now. */
  readonly allowlist: Counts;
  /** Allowlist reloads. */
  readonly reloads: number;
}

/** Milliseconds a peer of a bound tcp endpoint has to complete its handshake (libzmq's default: 30 s). */
export const HANDSHAKE_TIMEOUT_MS = 5000;
/** The well-known endpoint of a context's ZAP handler (RFC 27). */
export const ZAP_ENDPOINT = "inproc://zeromq.zap.01";
/** Milliseconds after a folder change before the allowlists are read again (changes come in bursts). */
const RELOAD_DELAY_MS = 50;
/** Milliseconds during which a repeated refusal of the same peer and key is counted, not logged again. */
const LOG_EVERY_MS = 60_000;

const gatekeepers = new Map<Reactor, Gatekeeper>();

/** The ZAP handler of one reactor's context. Use {@linkcode bindSecure}. */
export class Gatekeeper {
  readonly #reactor: Reactor;
  readonly #security: Security;
  #allow: Allowlists;
  readonly #stats = { allowed: zero(), refused: zero(), handshakeFailed: zero(), reloads: 0 };
  readonly #logged = new Map<string, number>();
  readonly #log = logger("security");
  readonly #watchers: Deno.FsWatcher[] = [];
  #reloadTimer?: ReturnType<typeof setTimeout>;
  readonly #onHup = () => void this.reload();
  #closed = false;

  private constructor(reactor: Reactor, security: Security) {
    this.#reactor = reactor;
    this.#security = security;
    const empty = new Set<string>();
    this.#allow = { services: empty, workers: empty, subscribers: empty, subject: empty };
  }

  /** The gatekeeper of a reactor, started (ZAP handler bound, allowlists read) on first use. */
  static async of(reactor: Reactor, security: Security): Promise<Gatekeeper> {
    let g = gatekeepers.get(reactor);
    if (g) return g;
    g = new Gatekeeper(reactor, security);
    gatekeepers.set(reactor, g);
    await g.reload();
    const zap = reactor.socket("ROUTER", { linger: 0 });
    await zap.bind(ZAP_ENDPOINT);
    zap.onMessage((f) => g.#onZap(zap, f));
    Deno.addSignalListener("SIGHUP", g.#onHup);
    for (const dir of new Set(Object.values(security.allow))) g.#watch(dir!);
    void reactor.closed().then(() => g.close());
    return g;
  }

  #watch(dir: string): void {
    let w: Deno.FsWatcher;
    try {
      w = Deno.watchFs(dir, { recursive: false });
    } catch (e) {
      this.#log.warn("Cannot watch {dir} ({reason}): reload it with SIGHUP", {
        dir,
        reason: (e as Error).message,
      });
      return;
    }
    this.#watchers.push(w);
    void (async () => {
      try {
        for await (const _ of w) {
          clearTimeout(this.#reloadTimer);
          this.#reloadTimer = setTimeout(() => void this.reload(), RELOAD_DELAY_MS);
        }
      } catch { /* closed */ }
    })();
  }

  /** Reads the allowlist folders again. */
  async reload(): Promise<void> {
    const warn = (msg: string) => this.#log.warn("{msg}", { msg });
    const s = this.#security;
    const read = (d: ZapDomain) =>
      s.allow[d] ? readAllowlist(s.allow[d]!, warn) : Promise.resolve(new Set<string>());
    const [services, workers, subscribers] = await Promise.all([
      read("services"),
      read("workers"),
      read("subscribers"),
    ]);
    // The role's own key is on every list: `start`'s readiness probe, `send`, `tap` and the
    // Subject's connection to the IM use it on the hub.
    for (const set of [services, workers, subscribers]) set.add(s.keys.publicKey);
    this.#allow = { services, workers, subscribers, subject: new Set([s.keys.serverKey, s.keys.publicKey]) };
    this.#stats.reloads++;
    this.#log.info("Allowlists: {services} services, {workers} workers, {subscribers} subscribers", {
      services: services.size,
      workers: workers.size,
      subscribers: subscribers.size,
    });
  }

  #onZap(zap: ReactorSocket, frames: Uint8Array[]): void {
    // [routing id, empty, ...request]
    const request = frames.length > 2 ? parseZapRequest(frames.slice(2)) : undefined;
    if (!request) return;
    const d = decideZap(request, this.#allow, z85Key);
    if (d.domain) (d.allowed ? this.#stats.allowed : this.#stats.refused)[d.domain]++;
    if (!d.allowed) this.#refusal(d.domain ?? request.domain, d.address, d.key ?? "-", d.reason);
    void zap.send([frames[0], frames[1], ...d.reply]).catch(() => {});
  }

  #refusal(domain: string, address: string, key: string, reason: string): void {
    const id = `${domain} ${address} ${key}`;
    const now = performance.now();
    if (now - (this.#logged.get(id) ?? -Infinity) < LOG_EVERY_MS) return;
    if (this.#logged.size > 10_000) this.#logged.clear();
    this.#logged.set(id, now);
    this.#log.warn("Refused a {domain} peer from {address} with key {key}: {reason}", {
      domain,
      address,
      key,
      reason,
    });
  }

  /** Counts the handshakes that fail before ZAP on `socket` (plaintext peers, wrong server keys). */
  async watch(socket: ReactorSocket, domain: ZapDomain): Promise<void> {
    const events = MonitorEvent.HANDSHAKE_FAILED_NO_DETAIL | MonitorEvent.HANDSHAKE_FAILED_PROTOCOL;
    await monitorSocket(this.#reactor, socket, events, (_, endpoint) => {
      this.#stats.handshakeFailed[domain]++;
      this.#refusal(
        domain,
        `a peer of ${endpoint}`,
        "-",
        "its handshake failed (plaintext, or a wrong server key)",
      );
    });
  }

  /** The counters. */
  stats(): SecurityStats {
    const size = (d: ZapDomain) => this.#allow[d].size;
    return {
      allowed: { ...this.#stats.allowed },
      refused: { ...this.#stats.refused },
      handshakeFailed: { ...this.#stats.handshakeFailed },
      allowlist: {
        services: size("services"),
        workers: size("workers"),
        subscribers: size("subscribers"),
        subject: size("subject"),
      },
      reloads: this.#stats.reloads,
    };
  }

  /** Stops watching the folders and SIGHUP (the ZAP socket closes with the reactor). Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reloadTimer);
    Deno.removeSignalListener("SIGHUP", this.#onHup);
    for (const w of this.#watchers) {
      try {
        w.close();
      } catch { /* already closed */ }
    }
    gatekeepers.delete(this.#reactor);
  }
}

/** The counters of this process's gatekeepers, for a role's stats: `{}` when it has none. */
export function securityStats(): { security?: SecurityStats } {
  const [g] = gatekeepers.values();
  return g ? { security: g.stats() } : {};
}

function apply(socket: ReactorSocket, o: SocketOptions): void {
  const raw = socket.raw;
  if (o.curveServer) raw.setInt(Opt.CURVE_SERVER, 1);
  if (o.curvePublicKey) raw.setBytes(Opt.CURVE_PUBLICKEY, o.curvePublicKey);
  if (o.curveSecretKey) raw.setBytes(Opt.CURVE_SECRETKEY, o.curveSecretKey);
  if (o.curveServerKey) raw.setBytes(Opt.CURVE_SERVERKEY, o.curveServerKey);
  if (o.zapDomain !== undefined) raw.setBytes(Opt.ZAP_DOMAIN, o.zapDomain);
}

/**
 * Binds a role's socket. On a tcp endpoint with `security`, the socket is a CURVE server whose
 * clients are checked against `domain`'s allowlist by the reactor's gatekeeper (started first,
 * so that no handshake happens without it); anything else binds as before.
 */
export async function bindSecure(
  reactor: Reactor,
  socket: ReactorSocket,
  endpoint: string,
  domain: ZapDomain,
  security: Security | undefined,
): Promise<void> {
  // A peer that connects and stays silent is dropped after HANDSHAKE_TIMEOUT_MS (ZMQ_HANDSHAKE_IVL),
  // with or without keys: it cannot hold a half-open connection.
  if (isTcp(endpoint)) await reactor.exec(() => socket.raw.setInt(Opt.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS));
  if (security && isTcp(endpoint)) {
    if (domain !== "subject" && !security.allow[domain]) {
      throw new SecurityError(
        `${endpoint} is a tcp endpoint and CURVE keys are set, but curve_allow_${domain} is not: ` +
          `set it to a folder of the .pub files that may connect`,
      );
    }
    const g = await Gatekeeper.of(reactor, security);
    await reactor.exec(() => apply(socket, curveServerOptions(security.keys, endpoint, domain)));
    await g.watch(socket, domain);
  }
  await socket.bind(endpoint);
}

/** Connects a role's socket: as a CURVE client on a tcp endpoint with `security`. */
export async function connectSecure(
  reactor: Reactor,
  socket: ReactorSocket,
  endpoint: string,
  security: Security | undefined,
): Promise<void> {
  const o = curveClientOptions(security?.keys, endpoint);
  if (!o.curveServerKey) return await socket.connect(endpoint);
  await reactor.exec(() => apply(socket, o));
  await connectRedialing(reactor, socket, endpoint);
}
