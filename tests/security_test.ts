// CURVE keys and the ZAP decision: the pure allowlist check, key files, `keygen`, the libzmq
// choice (`doctor`), and the start-up error when keys are set on a libzmq without CURVE.
import assert from "node:assert/strict";
import { decideZap, isZ85Key, parseKeyFile, parseZapRequest } from "../src/roles/zap.ts";
import { loadSecurity, SecurityError } from "../src/roles/security.ts";
import { curveKeyPair, curvePublicKey, z85Key } from "../src/zmq/curve.ts";
import { libzmq } from "../src/zmq/ffi.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const utf8 = new TextEncoder();
const text = new TextDecoder();

async function cli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The prebuilt libzmq inside npm:zeromq, which has no CURVE. */
async function addonPath(): Promise<string | undefined> {
  const dir = decodeURIComponent(new URL(".", import.meta.resolve("zeromq/package.json")).pathname);
  const base = `${dir}build/linux/${Deno.build.arch === "x86_64" ? "x64" : "arm64"}/node`;
  try {
    for await (const e of Deno.readDir(base)) {
      if (e.isDirectory && /^\d+$/.test(e.name)) return `${base}/${e.name}/addon.node`;
    }
  } catch { /* no addon for this platform */ }
  return undefined;
}

function zapFrames(domain: string, key: Uint8Array | undefined, mechanism = "CURVE"): Uint8Array[] {
  return [
    utf8.encode("1.0"),
    utf8.encode("req-1"),
    utf8.encode(domain),
    utf8.encode("10.0.0.3"),
    new Uint8Array(0),
    utf8.encode(mechanism),
    ...(key ? [key] : []),
  ];
}

function rawKey(z85: string): Uint8Array {
  const out = new Uint8Array(32);
  libzmq().symbols.zmq_z85_decode(out, utf8.encode(z85 + "\0"));
  return out;
}

Deno.test("zap: a key is allowed only in the domains whose allowlist holds it; the reply follows RFC 27", () => {
  const worker = curveKeyPair().publicKey;
  const subscriber = curveKeyPair().publicKey;
  const allow = {
    services: new Set<string>(),
    workers: new Set([worker]),
    subscribers: new Set([subscriber]),
    subject: new Set<string>(),
  };
  const asWorker = decideZap(parseZapRequest(zapFrames("workers", rawKey(worker)))!, allow, z85Key);
  assert.equal(asWorker.allowed, true);
  assert.deepEqual(asWorker.reply.map((f) => text.decode(f)), ["1.0", "req-1", "200", "OK", worker, ""]);
  // A key that may subscribe cannot join as a worker, nor send requests.
  for (const domain of ["workers", "services"]) {
    const d = decideZap(parseZapRequest(zapFrames(domain, rawKey(subscriber)))!, allow, z85Key);
    assert.equal(d.allowed, false, domain);
    assert.equal(text.decode(d.reply[2]), "400");
    assert.equal(d.key, subscriber);
    assert.equal(d.address, "10.0.0.3");
  }
  assert.equal(decideZap(parseZapRequest(zapFrames("other", rawKey(worker)))!, allow, z85Key).allowed, false);
  assert.equal(
    decideZap(parseZapRequest(zapFrames("workers", undefined, "NULL"))!, allow, z85Key).allowed,
    false,
  );
  assert.equal(parseZapRequest([utf8.encode("2.0"), ...zapFrames("workers", undefined).slice(1)]), undefined);
});

Deno.test("key files: one Z85 key per file, comments allowed; anything else names the file", () => {
  const { publicKey, secretKey } = curveKeyPair();
  assert.ok(isZ85Key(publicKey) && isZ85Key(secretKey));
  assert.equal(curvePublicKey(secretKey), publicKey);
  assert.equal(parseKeyFile(`# hub\n\n${publicKey}\n`, "hub.pub"), publicKey);
  assert.throws(() => parseKeyFile("", "a.pub"), /a\.pub: expected one CURVE key/);
  assert.throws(() => parseKeyFile(`${publicKey}\n${publicKey}`, "b.pub"), /b\.pub/);
  assert.throws(() => parseKeyFile("short", "c.pub"), /c\.pub/);
});

Deno.test("a secret key file where a public key belongs (and the reverse) is refused before any connection, naming the fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal((await cli(["keygen", `${dir}/hub`])).code, 0);
    assert.equal((await cli(["keygen", `${dir}/client`])).code, 0);
    const hubKey = await Deno.readTextFile(`${dir}/hub.key`);
    assert.throws(
      () => parseKeyFile(hubKey, "hub.key", "public"),
      /hub\.key: holds a secret key where a public key belongs .*give the public key file \(NAME\.pub/,
    );
    const hubPub = await Deno.readTextFile(`${dir}/hub.pub`);
    assert.throws(
      () => parseKeyFile(hubPub, "hub.pub", "secret"),
      /holds a public key where a secret key belongs/,
    );
    assert.ok(isZ85Key(parseKeyFile(hubPub, "hub.pub", "public")), "the right kind still loads");
    // Before, `send` connected with the hub's secret key as its server key and waited out its timeout.
    const r = await cli([
      "send",
      "Hello",
      "--subject-pull-address",
      "tcp://127.0.0.1:1",
      "--integration-manager-pub-address",
      "tcp://127.0.0.1:2",
      "--curve-secret-key",
      `${dir}/client.key`,
      "--curve-server-key",
      `${dir}/hub.key`,
      "--timeout",
      "20000",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /hub\.key: holds a secret key where a public key belongs/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keygen: NAME.key is mode 0600 and holds the secret of NAME.pub; never overwrites without --force; makes a missing folder, mode 0700", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await cli(["keygen", `${dir}/hub`]);
    assert.equal(r.code, 0, r.stderr);
    const pub = parseKeyFile(await Deno.readTextFile(`${dir}/hub.pub`), "hub.pub");
    assert.equal(r.stdout.trim(), pub);
    assert.equal((await Deno.stat(`${dir}/hub.key`)).mode! & 0o777, 0o600);
    const sec = parseKeyFile(await Deno.readTextFile(`${dir}/hub.key`), "hub.key");
    assert.equal(curvePublicKey(sec), pub);
    const again = await cli(["keygen", `${dir}/hub`]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists already; pass --force/);
    assert.equal(parseKeyFile(await Deno.readTextFile(`${dir}/hub.pub`), "hub.pub"), pub);
    assert.equal((await cli(["keygen", "--force", `${dir}/hub`])).code, 0);
    assert.notEqual(parseKeyFile(await Deno.readTextFile(`${dir}/hub.pub`), "hub.pub"), pub);
    // A folder that does not exist yet is made, private (the README's `keygen keys/hub` in a fresh
    // directory failed with NotFound).
    const fresh = await cli(["keygen", `${dir}/new/keys/hub`]);
    assert.equal(fresh.code, 0, fresh.stderr);
    assert.equal((await Deno.stat(`${dir}/new/keys`)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(`${dir}/new/keys/hub.key`)).mode! & 0o777, 0o600);
    // A secret key others can read is refused, as ssh refuses one.
    await Deno.chmod(`${dir}/hub.key`, 0o644);
    await assert.rejects(
      loadSecurity({
        curve_secret_key: `${dir}/hub.key`,
        curve_server_key: "",
        curve_allow_services: "",
        curve_allow_workers: "",
        curve_allow_subscribers: "",
      }),
      (e) => e instanceof SecurityError && /too open.*chmod 600/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor: a system libzmq with CURVE is preferred; without CURVE it says how to get it", async () => {
  const ok = await cli(["doctor", "--json"]);
  assert.equal(ok.code, 0, ok.stderr);
  const info = JSON.parse(ok.stdout);
  // This machine (and CI, whose .ci/run installs libzmq5) has Debian's libzmq5.
  assert.equal(info.source, "system");
  assert.equal(info.curve, true);
  assert.equal(info.capabilities.curve, true);
  assert.equal(info.advice, undefined);
  const addon = await addonPath();
  assert.ok(addon, "npm:zeromq's addon is on disk");
  const plain = await cli(["doctor"], { ZMANAGER_LIBZMQ: addon });
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /curve=no/);
  // The system one that has it is named.
  assert.match(
    plain.stdout,
    /CURVE: not in this libzmq; \S*libzmq\.so\.5 has it \(unset ZMANAGER_LIBZMQ to use it\)/,
  );
});

Deno.test("keys on a libzmq without CURVE: every role and `start` exit 1 at start-up with the advice, never plaintext", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal((await cli(["keygen", `${dir}/hub`])).code, 0);
    await Deno.mkdir(`${dir}/allow`);
    const addon = (await addonPath())!;
    const flags = [
      "--runtime-dir",
      `${dir}/rt`,
      "--curve-secret-key",
      `${dir}/hub.key`,
      "--curve-allow-services",
      `${dir}/allow`,
      "--curve-allow-workers",
      `${dir}/allow`,
      "--curve-allow-subscribers",
      `${dir}/allow`,
      "--subject-pull-address",
      "tcp://127.0.0.1:0",
    ];
    for (const args of [["start", "--workers", "1"], ["subject"], ["integration-manager"], ["worker"]]) {
      const r = await cli([...args, ...flags], { ZMANAGER_LIBZMQ: addon });
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /has no CURVE, which CURVE keys need; nothing is sent in plaintext/, args[0]);
      assert.match(r.stderr, /apt-get install libzmq5/, args[0]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("start --roles: an unknown or empty role list is a usage error naming the roles", async () => {
  for (const roles of ["subject,nonsense", ","]) {
    const r = await cli(["start", "--roles", roles]);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /the roles are subject, integration-manager, workers/);
  }
});

Deno.test("the runtime directory: created 0700; one that others may enter is refused at start-up", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.chmod(dir, 0o755);
    for (const args of [["start", "--workers", "0"], ["subject"], ["integration-manager"]]) {
      const r = await cli([...args, "--runtime-dir", dir]);
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /is mode 0755: other users could reach its ipc endpoints.*chmod 700/, args[0]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
