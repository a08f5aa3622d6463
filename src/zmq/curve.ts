/**
 * CURVE keys (RFC 26) on sockets: key pairs made by libzmq, and the socket options of a CURVE
 * client and server. Only `tcp://` endpoints use CURVE; `ipc://` and `inproc://` stay keyless
 * (an ipc endpoint is guarded by its file permissions).
 *
 * @module
 */

import { cstr, CURVE_ADVICE, libzmq, MonitorEvent } from "./ffi.ts";
import type { SocketOptions } from "./socket.ts";
import type { Reactor, ReactorSocket } from "./reactor.ts";
import { monitorSocket } from "./monitor.ts";

/** A CURVE key pair in Z85 text (40 characters each). */
export interface CurveKeyPair {
  /** The public key: give it to peers. */
  readonly publicKey: string;
  /** The secret key: keep it private. */
  readonly secretKey: string;
}

/** The keys a connecting side needs: its own pair and the server's public key. */
export interface CurveClientKeys extends CurveKeyPair {
  /** The public key of the server it connects to (the Subject's and the IM's). */
  readonly serverKey: string;
}

/** The libzmq in use has no CURVE, and keys were configured. */
export class CurveUnavailableError extends Error {
  /** What kind of error this is, for programs: `curve_unavailable`. */
  readonly code = "curve_unavailable";
  /** Builds the error, naming the libzmq in use and how to get one with CURVE. */
  constructor() {
    const lib = libzmq();
    super(
      `the libzmq in use (${lib.version}, ${lib.path}) has no CURVE, which CURVE keys need; ` +
        `nothing is sent in plaintext instead; ${CURVE_ADVICE}`,
    );
    this.name = "CurveUnavailableError";
  }
}

/** Throws {@linkcode CurveUnavailableError} when the libzmq in use has no CURVE. */
export function requireCurve(): void {
  if (!libzmq().curve) throw new CurveUnavailableError();
}

const text = new TextDecoder();

/** A new key pair from libzmq (`zmq_curve_keypair`). */
export function curveKeyPair(): CurveKeyPair {
  requireCurve();
  const pub = new Uint8Array(41);
  const sec = new Uint8Array(41);
  if (libzmq().symbols.zmq_curve_keypair(pub, sec) !== 0) throw new Error("zmq_curve_keypair failed");
  return { publicKey: text.decode(pub.subarray(0, 40)), secretKey: text.decode(sec.subarray(0, 40)) };
}

/** The public key of a secret key (`zmq_curve_public`). */
export function curvePublicKey(secretKey: string): string {
  requireCurve();
  const pub = new Uint8Array(41);
  if (libzmq().symbols.zmq_curve_public(pub, cstr(secretKey)) !== 0) {
    throw new Error("zmq_curve_public failed: not a Z85 secret key");
  }
  return text.decode(pub.subarray(0, 40));
}

/** A 32-byte key as Z85 text (`zmq_z85_encode`). */
export function z85Key(key: Uint8Array): string {
  const out = new Uint8Array(41);
  libzmq().symbols.zmq_z85_encode(out, key as Uint8Array<ArrayBuffer>, key.length as unknown as bigint);
  return text.decode(out.subarray(0, 40));
}

/** Whether an endpoint takes CURVE keys (tcp); ipc and inproc never do. */
export function isTcp(endpoint: string): boolean {
  return endpoint.startsWith("tcp://");
}

/**
 * Socket options of a CURVE client connecting to `endpoint`: its key pair and the server's
 * key; none when `keys` is undefined or the endpoint is not tcp.
 */
export function curveClientOptions(keys: CurveClientKeys | undefined, endpoint: string): SocketOptions {
  if (!keys || !isTcp(endpoint)) return {};
  requireCurve();
  return { curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, curveServerKey: keys.serverKey };
}

/**
 * Socket options of a CURVE server bound at `endpoint` whose clients are checked in ZAP domain
 * `domain`; none when `keys` is undefined or the endpoint is not tcp.
 */
export function curveServerOptions(
  keys: CurveKeyPair | undefined,
  endpoint: string,
  domain: string,
): SocketOptions {
  if (!keys || !isTcp(endpoint)) return {};
  requireCurve();
  return { curveServer: true, curveSecretKey: keys.secretKey, zapDomain: domain };
}

/** Milliseconds between a refused CURVE handshake and the next attempt. */
export const REDIAL_MS = 250;
/**
 * Connects a CURVE client and connects again {@linkcode REDIAL_MS} after each refused
 * handshake: libzmq 4.3 gives up a connection whose handshake the server refused (a key not on
 * its allowlist yet), and a key added to the allowlist must be taken without restarting anything.
 */
export async function connectRedialing(
  reactor: Reactor,
  socket: ReactorSocket,
  endpoint: string,
  options: { onAccepted?: () => void } = {},
): Promise<void> {
  if (!isTcp(endpoint)) return await socket.connect(endpoint);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = MonitorEvent.HANDSHAKE_FAILED_AUTH | MonitorEvent.HANDSHAKE_FAILED_PROTOCOL |
    MonitorEvent.HANDSHAKE_FAILED_NO_DETAIL;
  // One monitor per socket (libzmq replaces an earlier one): successes are reported from here too.
  await monitorSocket(reactor, socket, failed | MonitorEvent.HANDSHAKE_SUCCEEDED, (event) => {
    if (event === MonitorEvent.HANDSHAKE_SUCCEEDED) return options.onAccepted?.();
    if (timer !== undefined || socket.closed) return;
    timer = setTimeout(async () => {
      timer = undefined;
      if (socket.closed) return;
      await socket.disconnect(endpoint).catch(() => {}); // already gone with the refused session
      await socket.connect(endpoint).catch(() => {});
    }, REDIAL_MS);
    Deno.unrefTimer(timer);
  });
  await socket.connect(endpoint);
}
