import assert from "node:assert/strict";
import {
  ConfigError,
  configFromEnv,
  endpointProblem,
  loadConfig,
  parseConfigIni,
  resolveConfig,
  settingsTable,
} from "../src/config.ts";

Deno.test("defaults: ipc endpoints in the runtime directory", () => {
  const c = resolveConfig({ runtime_dir: "/tmp/zm-x/" });
  assert.equal(c.subject_pull_address, "ipc:///tmp/zm-x/subject");
  assert.equal(c.integration_manager_pub_address, "ipc:///tmp/zm-x/im-pub");
  assert.equal(c.step_limit, 100);
  assert.ok(c.worker_count >= 1);
});

Deno.test("integration_manager_in_subject: off by default, on/off from a file or a flag, anything else names the setting", () => {
  assert.equal(resolveConfig({}).integration_manager_in_subject, false);
  assert.equal(resolveConfig({ integration_manager_in_subject: "on" }).integration_manager_in_subject, true);
  assert.equal(
    resolveConfig({ integration_manager_in_subject: "false" }).integration_manager_in_subject,
    false,
  );
  assert.throws(
    () => resolveConfig({ integration_manager_in_subject: "maybe" }),
    /setting integration_manager_in_subject must be on or off \(or true\/false, yes\/no, 1\/0\), got "maybe"/,
  );
});

Deno.test("environment: a ZMANAGER_ variable that is not a setting, or a log level that is not one, is an error naming it; the others are taken", () => {
  // A misspelt variable was ignored, and the deployment ran with the default (an outside attack).
  assert.throws(
    () => configFromEnv({ ZMANAGER_STEP_LIMT: "5", PATH: "/bin" }),
    (e) =>
      e instanceof ConfigError &&
      /^environment variable ZMANAGER_STEP_LIMT is not a setting: unset it, or use ZMANAGER_<SETTING> with one of runtime_dir, /
        .test(e.message),
  );
  assert.throws(
    () => configFromEnv({ ZMANAGER_LOG: "verbose" }),
    /environment variable ZMANAGER_LOG is "verbose": use one of debug, info, warning, error/,
  );
  const ok = configFromEnv({
    ZMANAGER_STEP_LIMIT: "5",
    ZMANAGER_LOG: "debug",
    ZMANAGER_LIBZMQ: "/usr/lib/x86_64-linux-gnu/libzmq.so.5",
    ZMANAGER_TEST_LOGS: "1",
  });
  assert.deepEqual(ok, { step_limit: "5" });
});

Deno.test("precedence: defaults < file < environment < flags", () => {
  const file = parseConfigIni(
    "[Other]\nstep_limit = 1\n[ZManager]\nstep_limit = 10\nworker_count = 3\nsubject_pull_address = tcp://a:1\n",
    "z.ini",
  );
  const env = configFromEnv({ ZMANAGER_WORKER_COUNT: "5", ZMANAGER_HANDLER_TIMEOUT: "77" });
  const c = resolveConfig(file, env, { handler_timeout: "99" });
  assert.equal(c.step_limit, 10, "file over default");
  assert.equal(c.worker_count, 5, "environment over file");
  assert.equal(c.handler_timeout, 99, "flag over environment");
  assert.equal(c.subject_pull_address, "tcp://a:1");
});

Deno.test("bad settings are errors naming the file, line and fix", () => {
  assert.throws(() => parseConfigIni("[ZManager]\nnot_a_setting = 1\n", "z.ini"), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /^z\.ini:2:1: unknown setting "not_a_setting"; known: runtime_dir/);
    return true;
  });
  assert.throws(
    () => resolveConfig({ step_limit: "many" }),
    /step_limit must be a whole number of at least 1, got "many"/,
  );
  // Number() would read these as 0 (turning a check off) or as another number.
  for (const raw of ["", " ", "0x7d0", "2e3", "2000.5", "-1", "1_000"]) {
    assert.throws(
      () => resolveConfig({ liveness_timeout: raw }),
      new RegExp(`liveness_timeout must be a whole number of at least 0, got "${raw.replace(".", "\\.")}"`),
      JSON.stringify(raw),
    );
  }
  assert.equal(resolveConfig({ liveness_timeout: " 2000 " }).liveness_timeout, 2000);
  // The Subject allocates replay_buffer at once: 99999999999 failed at the first keyed request.
  assert.throws(
    () => resolveConfig({ replay_buffer: "99999999999" }),
    /replay_buffer must be at most 1073741824, got "99999999999"/,
  );
  assert.equal(resolveConfig({ replay_buffer: 2 ** 30 }).replay_buffer, 2 ** 30);
  assert.equal(resolveConfig({ liveness_timeout: 0 }).liveness_timeout, 0);
  assert.throws(
    () => resolveConfig({ liveness_timeout: "1999" }),
    /liveness_timeout must be 0 \(never\) or at least 2000 .*, got "1999"/,
  );
});

Deno.test("endpoint settings: tcp with a port, ipc within the kernel's 107 bytes, inproc; anything else names the fix", () => {
  for (
    const ok of [
      "tcp://127.0.0.1:5555",
      "tcp://*:5555",
      "tcp://[::1]:5555",
      "tcp://host:*",
      "ipc:///tmp/x",
      "inproc://a",
    ]
  ) {
    assert.equal(endpointProblem(ok), undefined, ok);
  }
  assert.match(endpointProblem("foo://x")!, /not a ZeroMQ endpoint: write tcp:\/\/HOST:PORT/);
  assert.match(endpointProblem("127.0.0.1:5555")!, /not a ZeroMQ endpoint/);
  assert.match(endpointProblem("tcp://localhost")!, /needs a port/);
  // libzmq would take 99999 as 34463 (modulo 65,536); 0, as *, binds any port.
  assert.match(endpointProblem("tcp://127.0.0.1:99999")!, /port 99999 is not a tcp port: write 1 to 65535/);
  assert.match(endpointProblem("tcp://127.0.0.1:65536")!, /port 65536 is not a tcp port/);
  assert.equal(endpointProblem("tcp://127.0.0.1:0"), undefined);
  assert.equal(endpointProblem("tcp://127.0.0.1:65535"), undefined);
  assert.equal(endpointProblem("tcp://127.0.0.1:1"), undefined);
  assert.match(endpointProblem("ipc://")!, /has no path/);
  assert.equal(endpointProblem(`ipc:///${"a".repeat(106)}`), undefined, "107 bytes");
  assert.match(endpointProblem(`ipc:///${"a".repeat(107)}`)!, /over 107 bytes/);
  assert.throws(
    () => resolveConfig({ runtime_dir: `/tmp/${"d".repeat(100)}` }),
    /setting subject_pull_address: the ipc path is over 107 bytes \(the kernel's limit\): use a shorter runtime_dir/,
  );
});

Deno.test("the README's settings table is the one src/config.ts makes (every setting, its default, its meaning)", async () => {
  const fold = (t: string) =>
    t.trim().split("\n").map((l) => l.replace(/-{3,}/g, "---").replace(/ +/g, " ").trim());
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("| setting ");
  const table = readme.slice(start, readme.indexOf("\n\n", start));
  assert.deepEqual(
    fold(table),
    fold(settingsTable()),
    `regenerate it: deno eval 'import {settingsTable} from "./src/config.ts"; console.log(settingsTable())'`,
  );
});

Deno.test("errors carry a code for programs, and the error behind them as cause", async () => {
  const e = await loadConfig({ file: "/nonexistent/zmanager.ini" }).catch((e) => e);
  assert.ok(e instanceof ConfigError);
  assert.equal(e.code, "bad_config");
  assert.ok(e.cause instanceof Deno.errors.NotFound, String(e.cause));
  assert.match(e.message, /\/nonexistent\/zmanager.ini: cannot read the config file/);
});
