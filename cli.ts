/**
 * The `zmanager` command line: `deno run -A cli.ts <command> …`. Run with `--help`.
 *
 * Exit codes: 0 success; 1 failure (load errors, an error publication, failed checks);
 * 2 `explain` found no entry; 3 `send` timed out (no final publication with --wait, no
 * acknowledgement from the Subject without it); 4 `send --wait`: the flow paused (its pause
 * publication, with the token, is printed); 64 bad usage.
 *
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import {
  consoleOutput,
  ExitCode,
  explainCommand,
  flowsCommand,
  type Output,
  pausedCommand,
  sendCommand,
  statsCommand,
  tapCommand,
} from "./src/cli/commands.ts";
import { type Config, CONFIG_KEYS, ConfigError, loadConfig, type PartialConfig } from "./src/config.ts";
import { setupLogging } from "./src/log.ts";
import { ZmqError } from "./src/zmq/ffi.ts";
import { conformanceCommand } from "./testing/conformance.ts";
import { doctorCommand, keygenCommand } from "./src/cli/doctor.ts";
import { runIntegrationManager, runSubject, runWorker } from "./src/cli/run.ts";
import { parseRoles, runStart, START_ROLES } from "./src/cli/start.ts";
import { reloadCommand } from "./src/cli/reload.ts";
import { checkTokenFile, parseListen, runGateway } from "./src/cli/gateway.ts";

/** Why the IM cannot run on its own while `integration_manager_in_subject` is on. */
const IM_IN_SUBJECT =
  "integration_manager_in_subject is on: the Integration Manager runs in the Subject's process";

/** The longest delay a timer takes (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const kindOption = () =>
  new Option("--kind <kind>", "read every file as this kind instead of telling it by content")
    .choices(["flow", "mapping"]);

const allowPermissionsOption = () =>
  new Option(
    "--allow-component-permissions",
    "with --strict: let components ask to run programs or for unrestricted network access",
  );

const noSandboxOption = () =>
  new Option("--no-sandbox", "run handlers on the worker's own thread, with its permissions (sandbox = off)");

const supervisedOption = () =>
  new Option("--supervised", "run under `start`: stop when standard input closes, ignore SIGINT/SIGTERM")
    .hideHelp();

/** Adds `--config`, `--runtime-dir` and one flag per setting (`--step-limit`, …). */
function withConfig(cmd: Command): Command {
  cmd.option("--config <file>", "an INI file with a [ZManager] section (DigitalPy key names)");
  for (const key of CONFIG_KEYS) {
    if (key === "worker_count") continue; // `start --workers`
    cmd.option(`--${key.replaceAll("_", "-")} <value>`, `setting ${key}`);
  }
  return cmd;
}

function camel(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Resolves the config of a command: defaults < --config file < environment < flags. */
async function configFrom(opts: Record<string, unknown>, io: Output): Promise<Config | undefined> {
  const flags: PartialConfig = {};
  for (const key of CONFIG_KEYS) {
    const v = opts[camel(key)];
    if (typeof v === "string") flags[key] = v;
  }
  if (typeof opts.workers === "string") flags.worker_count = opts.workers;
  if (typeof opts.workerCount === "string") flags.worker_count = opts.workerCount;
  if (opts.sandbox === false) flags.sandbox = "off"; // --no-sandbox
  try {
    return await loadConfig({ file: opts.config as string | undefined, flags });
  } catch (e) {
    if (e instanceof ConfigError) {
      io.err(`error: ${e.message}`);
      return undefined;
    }
    throw e;
  }
}

/** The flags that give a child process exactly this config. */
function configArgs(config: Config, _file?: string): string[] {
  const out: string[] = [];
  for (const key of CONFIG_KEYS) {
    if (key === "worker_count") continue;
    out.push(`--${key.replaceAll("_", "-")}`, String(config[key]));
  }
  return out;
}

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
    .addOption(allowPermissionsOption())
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

  program.command("keygen")
    .description("write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public, printed)")
    .argument("<name>", "path and name of the pair, e.g. keys/hub")
    .option("--force", "replace existing files")
    .action(async (name: string, opts) => setCode(await keygenCommand(name, opts, io)));

  withConfig(
    program.command("start")
      .description(
        "run the Integration Manager, the Subject and N worker processes together (the bundled example when no files are given)",
      )
      .argument("[files...]", "flow and mapping files")
      .option("--workers <n>", "worker processes (worker_count)")
      .option("--worker-count <n>", "the same as --workers")
      .option(
        "--roles <list>",
        `the roles this host runs, comma-separated: ${START_ROLES.join(", ")} (default: all)`,
      )
      .option("--http <host:port>", "also run the HTTP gateway on this address")
      .option("--watch", "reload when the files or the handler modules they map change on disk")
      .option("--strict", "cross-file conflicts and unresolved targets are errors")
      .addOption(allowPermissionsOption())
      .addOption(noSandboxOption()),
  ).action(async (files: string[], opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    let roles;
    try {
      roles = opts.roles === undefined ? undefined : parseRoles(opts.roles);
    } catch (e) {
      io.err(`error: ${(e as Error).message}`);
      return setCode(ExitCode.usage);
    }
    if (config.integration_manager_in_subject && roles?.has("integration-manager") && !roles.has("subject")) {
      io.err(`error: ${IM_IN_SUBJECT}; give --roles subject on this host, or turn the setting off`);
      return setCode(ExitCode.usage);
    }
    if (opts.watch && roles && !roles.has("subject")) {
      io.err(
        "error: --watch reloads through the Subject's reload key: it needs the subject role on this host",
      );
      return setCode(ExitCode.usage);
    }
    if (opts.http !== undefined) {
      if (!parseListen(opts.http)) {
        io.err(`error: --http must be HOST:PORT (e.g. 127.0.0.1:8080), got "${opts.http}"`);
        return setCode(ExitCode.usage);
      }
      const bad = await checkTokenFile(config);
      if (bad) {
        io.err(`error: http_tokens: ${bad}`);
        return setCode(ExitCode.failure);
      }
    }
    setCode(
      await runStart(config, {
        roleArgs: configArgs(config, opts.config),
        files,
        strict: opts.strict,
        allowComponentPermissions: opts.allowComponentPermissions,
        http: opts.http,
        roles,
        watch: opts.watch,
      }),
    );
  });

  withConfig(
    program.command("gateway")
      .description("run the HTTP gateway (REST, Server-Sent Events, WebSocket) for a running deployment")
      .argument(
        "[files...]",
        "the deployment's flow and mapping files (for /v1/flows and the OpenAPI document)",
      )
      .option("--listen <host:port>", "the address to listen on", "127.0.0.1:8080")
      .option("--strict", "cross-file conflicts and unresolved targets are errors")
      .addOption(supervisedOption()),
  ).action(async (files: string[], opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    setupLogging();
    setCode(
      await runGateway(config, files, {
        listen: opts.listen,
        strict: opts.strict,
        supervised: opts.supervised,
      }),
    );
  });

  for (
    const [name, description, run] of [
      ["subject", "run the Subject alone", runSubject],
      ["worker", "run one worker alone", runWorker],
    ] as const
  ) {
    const cmd = program.command(name).description(description);
    if (name === "worker") cmd.addOption(noSandboxOption());
    withConfig(
      cmd
        .argument("[files...]", "flow and mapping files (the bundled example when none are given)")
        .option("--strict", "cross-file conflicts and unresolved targets are errors")
        .addOption(allowPermissionsOption())
        .addOption(supervisedOption()),
    ).action(async (files: string[], opts) => {
      const config = await configFrom(opts, io);
      if (!config) return setCode(ExitCode.usage);
      setupLogging();
      setCode(await run(config, files, opts.strict, opts.supervised, opts.allowComponentPermissions));
    });
  }

  withConfig(
    program.command("integration-manager").description("run the Integration Manager alone")
      .addOption(supervisedOption()),
  ).action(async (opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    if (config.integration_manager_in_subject) {
      io.err(`error: ${IM_IN_SUBJECT}; run \`subject\`, or turn the setting off to run the IM alone`);
      return setCode(ExitCode.usage);
    }
    setupLogging();
    setCode(await runIntegrationManager(config, opts.supervised));
  });

  withConfig(
    program.command("send")
      .description("push a request to the Subject; with --wait print its final publication as JSON")
      .argument("[flow]", "the flow to run (not needed with --resume)")
      .option("--data <json>", "the request's values, a JSON object", "{}")
      .option(
        "--wait",
        "wait for the final publication; exit 1 on an error publication, 3 on timeout, 4 when the flow pauses (the pause publication, with its token, is printed)",
      )
      .option("--through-pauses", "with --wait: wait through pauses for the final publication")
      .option("--key <key>", "the action key the request names (default: the flow's entry)")
      .option("--id <id>", "the request id (default: a random UUID)")
      .option(
        "--timeout <ms>",
        "milliseconds to wait for the final publication (--wait) or else for the Subject's acknowledgement",
        "30000",
      )
      .option("--resume <token>", "resume the flow paused with this token (FLOW is not needed)"),
  ).action(async (flow: string | undefined, opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    if (flow === undefined && opts.resume === undefined) {
      io.err("error: missing argument FLOW (or --resume TOKEN); see send --help");
      return setCode(ExitCode.usage);
    }
    const timeout = Number(opts.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) {
      io.err(`error: --timeout must be a positive number of milliseconds, got "${opts.timeout}"`);
      return setCode(ExitCode.usage);
    }
    setCode(await sendCommand(config, flow ?? "", { ...opts, timeout }, io));
  });

  withConfig(
    program.command("tap")
      .description("print Integration Manager publications as JSON lines (all when no prefix is given)")
      .argument("[prefixes...]", "topic prefixes, e.g. Hello~ or Hello~PUBLISH~")
      .option("--count <n>", "exit after this many publications"),
  ).action(async (prefixes: string[], opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    const count = opts.count === undefined ? undefined : Number(opts.count);
    setCode(await tapCommand(config, prefixes, { count }, io));
  });

  program.command("conformance")
    .description(
      "replay the recorded fixtures (fixtures/cases) against real roles over ipc; exit 1 on any difference",
    )
    .argument("[action]", "`record` to write what happens into the fixtures instead of comparing")
    .option("--filter <text>", "run only fixtures whose name contains this")
    .option("--json", "print a JSON report")
    .option("--target <endpoints>", "replay against a running deployment: subject=ENDPOINT,im=ENDPOINT")
    .option("--coverage", "print the SPEC coverage table of the fixtures")
    .option(
      "--faults <policy>",
      "drop, duplicate or delay messages between the services and the Subject, e.g. drop=0.02,duplicate=0.05,jitter=2",
    )
    .action(async (action: string | undefined, opts) => {
      if (action !== undefined && action !== "record") {
        io.err(`error: unknown conformance action "${action}"; the only one is record`);
        return setCode(ExitCode.usage);
      }
      setCode(await conformanceCommand({ ...opts, record: action === "record" }, io));
    });

  program.command("bench")
    .description("measure the raw one-hop ZeroMQ rate and end-to-end flows through real roles")
    .option("--json <file>", "also write the figures as JSON")
    .option("--seconds <n>", "seconds of each closed-loop measurement", "3")
    .action(async (opts) => {
      // The bench lives in the repository, not in the published package: loaded when asked for.
      const where = new URL("./bench/bench.ts", import.meta.url).href;
      const bench: { runBench(o: { json?: string; seconds?: number }): Promise<unknown> } | undefined =
        await import(where).catch(() => undefined);
      if (!bench) {
        io.err("error: bench is part of the repository, not of the published package: run it from a clone");
        return setCode(ExitCode.failure);
      }
      await bench.runBench({ json: opts.json, seconds: Number(opts.seconds) });
      setCode(ExitCode.ok);
    });

  withConfig(
    program.command("paused")
      .description("list flows paused at an @ASYNC step: flow, request id, age, deadline, token")
      .option("--json", "print one JSON document"),
  ).action(async (opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    setCode(pausedCommand(config, opts, io));
  });

  withConfig(
    program.command("stats")
      .description(
        "show each running role's counters (received, dispatched, published, errors, in flight), from the " +
          "metrics every role publishes through the Integration Manager (any host); exit 1 when none arrive",
      )
      .option("--json", "print one JSON document")
      .option(
        "--window <ms>",
        "milliseconds to listen for the roles' metrics once connected to the IM (one each second per role)",
        "1500",
      )
      .option("--local", "read the counters the roles of this host write to <runtime_dir>/stats instead"),
  ).action(async (opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    const window = Number(opts.window);
    if (!Number.isFinite(window) || window <= 0 || window > MAX_TIMER_MS) {
      io.err(
        `error: --window must be a positive number of milliseconds up to ${MAX_TIMER_MS}, got "${opts.window}"`,
      );
      return setCode(ExitCode.usage);
    }
    setCode(await statsCommand(config, { ...opts, window }, io));
  });

  withConfig(
    program.command("reload")
      .description(
        "roll out new flow and mapping files (and handler code) to the running deployment without a restart; checked as flows --strict",
      )
      .argument("[files...]", "the complete new set of files (default: the current version's, read again)")
      .option("--timeout <ms>", "milliseconds to wait for every worker to load it", "60000")
      .addOption(allowPermissionsOption()),
  ).action(async (files: string[], opts) => {
    const config = await configFrom(opts, io);
    if (!config) return setCode(ExitCode.usage);
    const timeout = Number(opts.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) {
      io.err(`error: --timeout must be a positive number of milliseconds, got "${opts.timeout}"`);
      return setCode(ExitCode.usage);
    }
    setCode(
      await reloadCommand(config, files, {
        timeout,
        allowComponentPermissions: opts.allowComponentPermissions,
      }, io),
    );
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
    if (e instanceof ZmqError) {
      // A connect or bind that libzmq refused (an endpoint it cannot reach or take): said, not thrown.
      io.err(`error: ${e.message}`);
      return ExitCode.failure;
    }
    throw e;
  }
  return code;
}

if (import.meta.main) {
  setupLogging();
  Deno.exit(await main(Deno.args));
}
