/**
 * The ZAP decision (RFC 27, ZeroMQ Authentication Protocol), pure: which client keys each kind of
 * endpoint accepts, what a ZAP request asks, and the reply. The sockets that carry the requests
 * are in `security.ts`.
 *
 * @module
 */

/**
 * The ZAP domain of each kind of bound tcp endpoint (`ZMQ_ZAP_DOMAIN`), which picks the
 * allowlist a connecting key is checked against: `services` (the Subject's request endpoint),
 * `workers` (the Subject's worker endpoint), `subscribers` (the IM's publish endpoint) and
 * `subject` (the IM's pull endpoint, which only the Subject's own key may join).
 */
export type ZapDomain = "services" | "workers" | "subscribers" | "subject";

/** Every ZAP domain, in documentation order. */
export const ZAP_DOMAINS: readonly ZapDomain[] = ["services", "workers", "subscribers", "subject"];

/** The client public keys (Z85 text) each domain accepts. */
export type Allowlists = Readonly<Record<ZapDomain, ReadonlySet<string>>>;

/** What a ZAP request asks (RFC 27 frames, after the ROUTER's envelope). */
export interface ZapRequest {
  /** The request id, echoed in the reply. */
  readonly requestId: Uint8Array;
  /** The ZAP domain of the socket the peer connected to. */
  readonly domain: string;
  /** The peer's address (IP). */
  readonly address: string;
  /** The security mechanism: `CURVE` here. */
  readonly mechanism: string;
  /** The client's long-term public key, 32 bytes (CURVE). */
  readonly key?: Uint8Array;
}

/** What a ZAP handler decided about one request. */
export interface ZapDecision {
  /** Allowed. */
  readonly allowed: boolean;
  /** The domain, when it is one of ours. */
  readonly domain?: ZapDomain;
  /** The client key in Z85 text, when there was one. */
  readonly key?: string;
  /** The peer's address. */
  readonly address: string;
  /** Why, in a few words (the ZAP status text). */
  readonly reason: string;
  /** The reply frames to send after the ROUTER's envelope. */
  readonly reply: Uint8Array[];
}

const utf8 = new TextEncoder();
const text = new TextDecoder();
/** The Z85 alphabet: a Z85 CURVE key is 40 of these. */
const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** Whether `s` is a CURVE key in Z85 text (40 characters of the Z85 alphabet). */
export function isZ85Key(s: string): boolean {
  return Z85_KEY.test(s);
}

/**
 * Reads a key file: one Z85 key on a line of its own; blank lines and lines starting with `#`
 * are ignored. With `kind`, a file whose comment says it holds the other kind of key (as
 * `keygen` writes: `# ZManager CURVE secret key …`, `# ZManager CURVE public key`) is refused: a
 * hub's secret key given where its public key belongs has been copied to where it must not be.
 *
 * @throws {SyntaxError} naming the file when there is not exactly one key, or the wrong kind.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseKeyFile } from "./zap.ts";
 * const k = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
 * assert.equal(parseKeyFile(`# a comment\n${k}\n`, "a.pub"), k);
 * ```
 */
export function parseKeyFile(content: string, file: string, kind?: "secret" | "public"): string {
  const all = content.split(/\r?\n/).map((l) => l.trim());
  if (kind) {
    const other = kind === "secret" ? "public" : "secret";
    if (all.some((l) => l.startsWith("#") && new RegExp(`\\b${other} key\\b`, "i").test(l))) {
      throw new SyntaxError(
        `${file}: holds a ${other} key where a ${kind} key belongs (its comment says so): ${
          kind === "public"
            ? "give the public key file (NAME.pub, as `keygen` writes it), and keep the secret one (NAME.key) on its own host"
            : "give the secret key file (NAME.key, as `keygen` writes it)"
        }`,
      );
    }
  }
  const lines = all.filter((l) => l && !l.startsWith("#"));
  if (lines.length !== 1 || !isZ85Key(lines[0])) {
    throw new SyntaxError(
      `${file}: expected one CURVE key (40 characters of Z85 text), as \`keygen\` writes`,
    );
  }
  return lines[0];
}

/** Parses the frames of a ZAP request (after the ROUTER's routing id and empty delimiter). */
export function parseZapRequest(frames: readonly Uint8Array[]): ZapRequest | undefined {
  if (frames.length < 6 || text.decode(frames[0]) !== "1.0") return undefined;
  return {
    requestId: frames[1],
    domain: text.decode(frames[2]),
    address: text.decode(frames[3]),
    mechanism: text.decode(frames[5]),
    key: frames[6],
  };
}

/**
 * Decides a ZAP request: a CURVE peer whose key is on its domain's allowlist is allowed (status
 * 200, the key as user id); anything else is refused (400). `keyText` turns a 32-byte key into
 * Z85 text.
 */
export function decideZap(
  request: ZapRequest,
  allowlists: Allowlists,
  keyText: (key: Uint8Array) => string,
): ZapDecision {
  const domain = (ZAP_DOMAINS as readonly string[]).includes(request.domain)
    ? request.domain as ZapDomain
    : undefined;
  const key = request.key?.length === 32 ? keyText(request.key) : undefined;
  let reason: string;
  let allowed = false;
  if (!domain) reason = `unknown domain "${request.domain}"`;
  else if (request.mechanism !== "CURVE" || !key) reason = `mechanism ${request.mechanism} is not allowed`;
  else if (!allowlists[domain].has(key)) reason = `key not on the ${domain} allowlist`;
  else {
    allowed = true;
    reason = "OK";
  }
  const reply = [
    utf8.encode("1.0"),
    request.requestId,
    utf8.encode(allowed ? "200" : "400"),
    utf8.encode(reason),
    utf8.encode(allowed ? key! : ""),
    new Uint8Array(0),
  ];
  return { allowed, domain, key, address: request.address, reason, reply };
}
