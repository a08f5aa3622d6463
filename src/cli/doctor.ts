/**
 * The commands about the machine and its keys: `doctor` (which libzmq is loaded and what it can
 * do) and `keygen` (a CURVE key pair). Each returns an exit code.
 *
 * @module
 */

import { writeKeyPair } from "../roles/security.ts";
import { capabilities, CURVE_ADVICE, curveLibrary, libzmq, LibZmqNotFoundError } from "../zmq/ffi.ts";
import { consoleOutput, ExitCode, type Output } from "./commands.ts";

/** `doctor`: which libzmq is loaded, from where, and what it can do. */
export function doctorCommand(options: { json?: boolean }, io: Output = consoleOutput): number {
  let lib;
  try {
    lib = libzmq();
  } catch (e) {
    if (e instanceof LibZmqNotFoundError) {
      io.err(e.message);
      return ExitCode.failure;
    }
    throw e;
  }
  const caps = capabilities();
  const withCurve = lib.curve ? lib.path : curveLibrary();
  const info = {
    libzmq: lib.version,
    path: lib.path,
    source: lib.source,
    curve: lib.curve,
    capabilities: caps,
    curveLibrary: withCurve ?? null,
    ...(withCurve ? {} : { advice: `CURVE (keys on tcp endpoints) is not available: ${CURVE_ADVICE}` }),
    deno: Deno.version.deno,
    os: `${Deno.build.os}-${Deno.build.arch}`,
  };
  if (options.json) io.out(JSON.stringify(info, null, 2));
  else {
    const from = { env: "ZMANAGER_LIBZMQ", system: "the system", npm: `the npm:zeromq addon` }[lib.source];
    io.out(`libzmq ${info.libzmq}`);
    io.out(`loaded from ${info.path} (${from})`);
    io.out(`capabilities: ${Object.entries(caps).map(([k, v]) => `${k}=${v ? "yes" : "no"}`).join(" ")}`);
    io.out(
      lib.curve
        ? "CURVE: available"
        : withCurve
        ? `CURVE: not in this libzmq; ${withCurve} has it (unset ZMANAGER_LIBZMQ to use it)`
        : `CURVE: not available; ${CURVE_ADVICE}`,
    );
    io.out(`deno ${info.deno} on ${info.os}`);
  }
  return ExitCode.ok;
}

/**
 * `keygen NAME`: writes a CURVE key pair, `NAME.key` (secret, mode 0600) and `NAME.pub`
 * (public), and prints the public key; makes NAME's folder (mode 0700) if it is missing. Never
 * overwrites a file unless `force`.
 */
export async function keygenCommand(
  name: string,
  options: { force?: boolean },
  io: Output = consoleOutput,
): Promise<number> {
  try {
    const pub = await writeKeyPair(name, options);
    io.out(pub);
    io.err(`wrote ${name}.key (secret, mode 0600) and ${name}.pub (public)`);
    return ExitCode.ok;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      io.err(`error: ${name}.key or ${name}.pub exists already; pass --force to replace them`);
      return ExitCode.failure;
    }
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      io.err(`error: cannot write ${name}.key: ${(e as Error).message}`);
      return ExitCode.failure;
    }
    if ((e as { code?: string }).code === "curve_unavailable") {
      io.err(`error: ${(e as Error).message}`);
      return ExitCode.failure;
    }
    throw e;
  }
}
