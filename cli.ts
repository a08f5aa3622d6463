/**
 * The `zmanager` command line: `deno run -A cli.ts <command> …`. Run with `--help`.
 *
 * Exit codes: 0 success; 1 failure (load errors, an error publication, failed checks);
 * 2 `explain` found no entry; 3 `send --wait` timed out; 64 bad usage.
 *
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import {
  consoleOutput,
  doctorCommand,
  ExitCode,
  explainCommand,
  flowsCommand,
  type Output,
} from "./src/commands.ts";

const kindOption = () =>
  new Option("--kind <kind>", "read every file as this kind instead of telling it by content")
    .choices(["flow", "mapping"]);

/** Builds the command tree; `run` is called with each command's exit code. */
export function buildProgram(io: Output, setCode: (code: number) => void): Command {
  const program = new Command("zmanager")
    .description("ZManager for Deno: a ZeroMQ message router for DigitalPy-style flows")
    .showHelpAfterError("(add --help for usage)")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, "")),
      writeErr: (s) => io.err(s.replace(/\n$/, "")),
    });

  program.command("flows")
    .description("load flow and mapping files and list the flows, steps and mappings found")
    .argument("<files...>", "flow and mapping files (.ini)")
    .option("--json", "print one JSON document")
    .option("--strict", "cross-file conflicts and unresolved targets are errors")
    .addOption(kindOption())
    .action(async (files: string[], opts) => setCode(await flowsCommand(files, opts, io)));

  program.command("explain")
    .description("show which mapping entry a concrete key resolves to, and by which of the seven rules")
    .argument("<key>", "a concrete action key, e.g. Subject?IAMConnection?Connection")
    .argument("<files...>", "mapping files (flow files among them are allowed)")
    .option("--json", "print one JSON document")
    .addOption(kindOption())
    .action(async (key: string, files: string[], opts) =>
      setCode(await explainCommand(key, files, opts, io))
    );

  program.command("doctor")
    .description("show the libzmq in use: version, the file it was loaded from, and its capabilities")
    .option("--json", "print one JSON document")
    .action((opts) => setCode(doctorCommand(opts, io)));

  program.command("start")
    .description("run Subject, Integration Manager and workers together (not yet available)")
    .argument("[files...]", "flow and mapping files")
    .action(() => {
      io.err("start: not yet available; the runtime roles land with the runtime issue");
      setCode(ExitCode.failure);
    });

  return program;
}

/** Runs the CLI with the given arguments and returns the exit code. */
export async function main(args: readonly string[], io: Output = consoleOutput): Promise<number> {
  let code: number = ExitCode.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync([...args], { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here too, with exitCode 0
      return e.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    throw e;
  }
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
