import assert from "node:assert/strict";
import { main } from "../cli.ts";
import type { Output } from "../src/cli/commands.ts";
import { HandlerRegistry } from "../src/handler.ts";
import { loadFiles, pathToFileUrl } from "../src/load.ts";

const CORPUS = new URL("../../shared/corpus/", import.meta.url);

async function corpusFiles(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".ini")) out.push(p);
    }
  };
  await walk(CORPUS.pathname.replace(/\/$/, ""));
  return out.sort();
}

function capture(): Output & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l) };
}

async function runCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../cli.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  });
  const r = await cmd.output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

Deno.test({
  name: "flows: the whole corpus loads without a parse error and finds what is there",
  ignore: !(await Deno.stat(CORPUS).then(() => true, () => false)),
  async fn() {
    const files = await corpusFiles();
    assert.equal(files.length, 53);
    const io = capture();
    const code = await main(["flows", "--json", ...files], io);
    assert.equal(code, 0);
    const doc = JSON.parse(io.stdout.join("\n"));
    assert.deepEqual(doc.errors, []);
    const flowFiles = doc.files.filter((f: { kind: string }) => f.kind === "flow");
    assert.equal(flowFiles.length, 12);
    assert.equal(doc.flows.length, 59);
    assert.equal(doc.flows.reduce((n: number, f: { steps: string[] }) => n + f.steps.length, 0), 176);
    assert.equal(doc.mappings.length, 318);
    // Every Python target is reported unresolved, with its file and line.
    assert.ok(doc.mappings.every((m: { resolved: boolean }) => !m.resolved));
    const unresolved = doc.warnings.filter((w: { message: string }) =>
      w.message.startsWith("unresolved target")
    );
    assert.equal(unresolved.length, 318);
    assert.ok(unresolved.every((w: { file: string; line: number }) => w.file.endsWith(".ini") && w.line > 0));
    // Cross-file conflicts: the 29 repeated mapping keys and the flow [actionflow1].
    const conflicts = doc.warnings.filter((w: { message: string }) => / is defined in \d+ /.test(w.message));
    assert.equal(conflicts.filter((w: { message: string }) => w.message.startsWith("mapping")).length, 29);
    assert.equal(conflicts.filter((w: { message: string }) => w.message.startsWith("flow")).length, 1);
    assert.ok(conflicts.some((w: { message: string }) => w.message.includes('"??GetAllConnections"')));

    const strict = capture();
    assert.equal(await main(["flows", "--strict", ...files], strict), 1);
    assert.ok(strict.stderr.some((l) => /: error: mapping "\?\?GetAllConnections" is defined in/.test(l)));
    assert.ok(strict.stderr.some((l) => /: error: unresolved target /.test(l)));
  },
});

Deno.test("flows: bad files exit 1 listing every error as file:line:column", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/bad.ini`, "[F]\n?F?Push\nbad key?x?y\n[F]\na?b?c?d\n");
    const r = await runCli("flows", `${dir}/bad.ini`, `${dir}/missing.ini`);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${dir}/bad.ini:3:4: error: invalid action key`));
    assert.match(r.stderr, new RegExp(`${dir}/bad.ini:4:1: error: flow "F" is defined twice`));
    assert.match(r.stderr, new RegExp(`${dir}/bad.ini:5:6: error: invalid action key`));
    assert.match(r.stderr, new RegExp(`${dir}/missing.ini:1:1: error: cannot read the file`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TypeScript targets: module#Export.member resolved relative to the mapping file", async () => {
  const mapping = new URL("./testdata/mapping.ini", import.meta.url).pathname;
  const io = capture();
  assert.equal(await main(["flows", "--json", mapping], io), 0);
  const doc = JSON.parse(io.stdout.join("\n"));
  const byKey = Object.fromEntries(doc.mappings.map((m: { key: string }) => [m.key, m]));
  assert.equal(byKey["??Echo"].resolved, true);
  assert.equal(byKey["?Greet?Hello"].resolved, true);
  assert.match(byKey["??Number"].reason, /is a number, not a function/);
  assert.match(byKey["??Missing"].reason, /has no Nope/);
  assert.match(byKey["??Python"].reason, /Python dotted path/);
  assert.match(byKey["??NoModule"].reason, /cannot import/);
  assert.equal(await main(["flows", "--strict", mapping], capture()), 1);

  // A member reached through a class is called with the class as `this`.
  const catalog = await loadFiles([mapping]);
  const reg = new HandlerRegistry();
  await reg.loadEntries(catalog.mappings.values(), pathToFileUrl);
  const r = reg.resolve({ sender: "S", context: "Greet", action: "Hello" });
  assert.equal(r?.rule, 3);
  const ctx = {} as Parameters<typeof r.entry.call>[1];
  assert.deepEqual(await r!.entry.call({ a: 1 }, ctx), { a: 1, greeting: "hello" });
});

Deno.test("explain: the rule that resolves, --json, and exit 2 when nothing does", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const m = `${dir}/m.ini`;
    await Deno.writeTextFile(m, "[actionmapping]\n??Connection = a.b\n?IAMConnection? = c.d\n");
    const text = await runCli("explain", "Subject?IAMConnection?Connection", m);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /resolves by rule 6 \(\?\?a\) to a\.b/);
    const json = await runCli("explain", "--json", "Subject?IAMConnection?Connection", m);
    const doc = JSON.parse(json.stdout);
    assert.deepEqual(
      { key: doc.key, target: doc.target, rule: doc.rule, file: doc.file, line: doc.line },
      { key: "Subject?IAMConnection?Connection", target: "a.b", rule: 6, file: m, line: 2 },
    );
    const none = await runCli("explain", "Subject?Other?Thing", m);
    assert.equal(none.code, 2);
    assert.match(none.stdout, /resolves to nothing/);
    const bad = await runCli("explain", "not a key", m);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /column 4/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("usage errors exit 64 and --help exits 0", async () => {
  assert.equal(await main(["flows"], capture()), 64);
  assert.equal(await main(["nonsense"], capture()), 64);
  const help = capture();
  assert.equal(await main(["flows", "--help"], help), 0);
  assert.match(help.stdout.join("\n"), /Usage: zmanager flows/);
});

Deno.test("a misspelt ZMANAGER_ environment variable stops every command with exit 64, naming it", async () => {
  for (const args of [["stats"], ["start", "--no-sandbox"]]) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../cli.ts", import.meta.url).pathname, ...args],
      env: { ZMANAGER_STEP_LIMT: "5" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 64, `${args.join(" ")}: ${stderr}`);
    assert.match(stderr, /environment variable ZMANAGER_STEP_LIMT is not a setting/);
  }
});

Deno.test("start takes worker_count as --worker-count (the README's flag per setting) and as --workers", async () => {
  for (const flag of ["--worker-count", "--workers"]) {
    const out = capture();
    assert.equal(await main(["start", flag, "abc"], out), 64, flag);
    assert.match(
      out.stderr.join("\n"),
      /setting worker_count must be a whole number of at least 0, got "abc"/,
    );
  }
});

Deno.test("a bad endpoint setting is a usage error naming the setting and the fix, in every command that connects", async () => {
  // It was a zmq_connect failure thrown from inside `send` and `start` (exit 1, a stack trace).
  for (const args of [["send", "Hello"], ["stats"], ["tap"], ["start", "--no-sandbox"]]) {
    const out = capture();
    assert.equal(await main([...args, "--subject-pull-address", "foo://x"], out), 64, args.join(" "));
    assert.match(
      out.stderr.join("\n"),
      /setting subject_pull_address: not a ZeroMQ endpoint: write tcp:\/\/HOST:PORT, ipc:\/\/PATH or inproc:\/\/NAME, got "foo:\/\/x"/,
    );
  }
  const noPort = capture();
  assert.equal(
    await main(["send", "Hello", "--integration-manager-pub-address", "tcp://localhost"], noPort),
    64,
  );
  assert.match(noPort.stderr.join("\n"), /integration_manager_pub_address: a tcp endpoint needs a port/);
  // libzmq took 99999 as port 34463 and `start` said ready (an outside attack).
  for (const args of [["start", "--no-sandbox"], ["send", "Hello"]]) {
    const out = capture();
    assert.equal(await main([...args, "--subject-pull-address", "tcp://127.0.0.1:99999"], out), 64);
    assert.match(
      out.stderr.join("\n"),
      /subject_pull_address: port 99999 is not a tcp port: write 1 to 65535/,
    );
  }
});

Deno.test("doctor: names the libzmq in use, and what was tried when none loads", async () => {
  const ok = await runCli("doctor", "--json");
  assert.equal(ok.code, 0);
  const info = JSON.parse(ok.stdout);
  assert.match(info.libzmq, /^4\./);
  assert.equal(info.capabilities.ipc, true);
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../cli.ts", import.meta.url).pathname, "doctor"],
    env: { ZMANAGER_LIBZMQ: "/nonexistent/libzmq.so.5" },
    stdout: "piped",
    stderr: "piped",
  });
  const bad = await cmd.output();
  assert.equal(bad.code, 1);
  assert.match(
    new TextDecoder().decode(bad.stderr),
    /Could not load libzmq\. Tried:\n {2}\/nonexistent\/libzmq\.so\.5: /,
  );
});
