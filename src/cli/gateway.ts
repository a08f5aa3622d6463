/**
 * `gateway`: the HTTP gateway's process main (also run by `start --http HOST:PORT`).
 *
 * @module
 */

import { securityOrError } from "../roles/security.ts";
import type { Config } from "../config.ts";
import { Gateway } from "../gateway/gateway.ts";
import { parseTokenFile, type TokenEntry } from "../gateway/auth.ts";
import { logger } from "../log.ts";
import { loadForRole, serveUntilStopped } from "./run.ts";

/** Splits `HOST:PORT` (`[::1]:8080`, `:8080` for all interfaces); `undefined` when malformed. */
export function parseListen(text: string): { hostname: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** Why the config's token file (`http_tokens`) cannot be used, or `undefined` when it can (or is not set). */
export async function checkTokenFile(config: Config): Promise<string | undefined> {
  if (!config.http_tokens) return undefined;
  try {
    parseTokenFile(await Deno.readTextFile(config.http_tokens), config.http_tokens);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Runs the gateway until SIGINT/SIGTERM (or, `supervised`, until standard input closes).
 * Prints `listening on http://HOST:PORT` on standard output once it serves. Returns the exit
 * code: 1 when the files, the token file or the address are bad.
 */
export async function runGateway(
  config: Config,
  files: readonly string[],
  options: { listen: string; strict?: boolean; supervised?: boolean },
): Promise<number> {
  const log = logger("gateway");
  const at = parseListen(options.listen);
  if (!at) {
    console.error(`error: --listen must be HOST:PORT (e.g. 127.0.0.1:8080), got "${options.listen}"`);
    return 64;
  }
  const catalog = await loadForRole(files, options.strict);
  if (!catalog) return 1;
  let tokens: TokenEntry[] | undefined;
  if (config.http_tokens) {
    try {
      tokens = parseTokenFile(await Deno.readTextFile(config.http_tokens), config.http_tokens);
    } catch (e) {
      console.error(`error: http_tokens: ${(e as Error).message}`);
      return 1;
    }
  }
  const security = await securityOrError(config);
  if (security === null) return 1;
  let gateway: Gateway;
  try {
    gateway = await Gateway.start({
      curve: security?.keys,
      subject: config.subject_pull_address,
      publisher: config.integration_manager_pub_address,
      flows: catalog.flows,
      hostname: at.hostname,
      port: at.port,
      waitTimeout: config.http_wait_timeout,
      maxMessageSize: config.max_message_size,
      clientBuffer: config.http_client_buffer,
      maxStreams: config.http_max_streams,
      connectionLimits: config.http_connection_limits,
      maxConnections: config.http_max_connections,
      maxConnectionsPerAddress: config.http_max_connections_per_ip,
      headerTimeout: config.http_header_timeout,
      idleTimeout: config.http_idle_timeout,
      bodyTimeout: config.http_body_timeout,
      heartbeat: config.http_heartbeat,
      tokens,
      bodyLimit: config.http_body_limit,
      corsOrigins: config.http_cors_origins.split(",").map((s) => s.trim()),
      pausedStore: config.async_store,
    });
  } catch (e) {
    console.error(`error: the gateway cannot listen on ${options.listen}: ${(e as Error).message}`);
    return 1;
  }
  console.log(`listening on ${gateway.url}`);
  if (tokens) log.info("Gateway on {url} ({tokens} tokens)", { url: gateway.url, tokens: tokens.length });
  else log.info("Gateway on {url}", { url: gateway.url });
  return await serveUntilStopped(
    config,
    "gateway",
    options.supervised ?? false,
    () => gateway.stats(),
    () => gateway.close(),
    security?.keys,
  );
}
