// The wire protocol is language-neutral: a Python program using only pyzmq (Debian's
// python3-zmq, which .ci/run installs) pushes a request and reads its done publication.
import assert from "node:assert/strict";
import { RUNTIME_FIXTURE, startDeployment } from "./helpers.ts";
import { loopbackEndpoints, makeAllowlists, makeKeys, runRole, writeHostConfig } from "./curve_fixture.ts";

async function pythonWithZmq(): Promise<string | undefined> {
  for (const py of ["/usr/bin/python3", "python3"]) {
    try {
      const r = await new Deno.Command(py, { args: ["-c", "import zmq"], stdout: "null", stderr: "null" })
        .output();
      if (r.success) return py;
    } catch { /* not installed */ }
  }
  return undefined;
}

const python = await pythonWithZmq();

Deno.test({
  name: "a pyzmq program pushes a request and reads its done publication",
  ignore: python === undefined && !Deno.env.get("CI"),
  async fn() {
    assert.ok(python, "python3 with pyzmq is required in CI (apt-get install python3-zmq)");
    await using d = await startDeployment({ workers: 1 });
    const out = await new Deno.Command(python, {
      args: [
        new URL("./peers/pyzmq_client.py", import.meta.url).pathname,
        d.subject,
        d.publisher,
        "Three",
        '{"from": "python"}',
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    const p = JSON.parse(dec.decode(out.stdout));
    assert.equal(p.topic, "Three~~~~done");
    assert.match(p.header.id, /^py-/);
    assert.deepEqual(p.values, { from: "python", trace: ["one", "two", "three"] });
  },
});

Deno.test({
  name: "a pyzmq worker written from PROTOCOL.md joins and runs flows, pauses included",
  ignore: python === undefined && !Deno.env.get("CI"),
  async fn() {
    assert.ok(python, "python3 with pyzmq is required in CI (apt-get install python3-zmq)");
    // No worker of our own: every step is run by the Python worker.
    await using d = await startDeployment({ workers: 0 });
    const worker = new Deno.Command(python, {
      args: [
        new URL("./peers/pyzmq_worker.py", import.meta.url).pathname,
        `ipc://${d.dir}/workers`,
        new URL("../fixtures/components/basic/flows.ini", import.meta.url).pathname,
        "60",
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    try {
      await using client = await d.connect();
      const done = await Promise.all(
        Array.from({ length: 50 }, (_, k) => client.request("Three", { k }, { timeout: 20_000 })),
      );
      done.forEach((p, k) => {
        assert.equal(p.topic, "Three~~~~done", JSON.stringify(p));
        assert.deepEqual(p.values, { k, trace: ["one@python", "two@python", "three@python"] });
      });
      // A flow that pauses at @ASYNC: the worker's pause result, then the resumed step ("r": 1,
      // no handler: passed through) and the rest of the flow.
      const pauses = await client.subscribe("Pause~ASYNC~");
      const final = client.request("Pause", { q: 1 }, { timeout: 20_000 });
      const pause = (await pauses.next()).value as { resume?: string; values: unknown };
      assert.deepEqual(pause.values, { q: 1, trace: ["one@python"] });
      const resumed = await client.resume(pause.resume!, { reply: "r" }, { timeout: 20_000 });
      assert.deepEqual(resumed.values, { q: 1, reply: "r", trace: ["one@python", "two@python"] });
      assert.deepEqual((await final).values, resumed.values);
      await pauses.return!();
    } finally {
      worker.kill("SIGKILL");
      await worker.status;
    }
  },
});

Deno.test({
  name:
    "a pyzmq service with CURVE keys (PROTOCOL.md, Security) pushes a request and reads its done publication over tcp",
  ignore: python === undefined && !Deno.env.get("CI"),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(python, "python3 with pyzmq is required in CI (apt-get install python3-zmq)");
    const dir = await Deno.makeTempDir();
    const ep = loopbackEndpoints();
    await makeKeys(dir, ["hub", "py", "other"]);
    await makeAllowlists(dir, { services: ["py"], workers: [], subscribers: ["py"] });
    await writeHostConfig(`${dir}/hub.ini`, dir, ep, { key: "hub", hub: true });
    const hub = await runRole([
      "start",
      "--workers",
      "1",
      "--config",
      `${dir}/hub.ini`,
      "--",
      ...RUNTIME_FIXTURE,
    ], {
      ready: true,
      runtimeDir: `${dir}/rt`,
    });
    const py = (key: string, pingSeconds = 20) =>
      new Deno.Command(python!, {
        args: [
          new URL("./peers/pyzmq_client.py", import.meta.url).pathname,
          ep.subject,
          ep.imPub,
          "Three",
          '{"from": "python"}',
          `${dir}/keys/${key}.key`,
          `${dir}/keys/hub.pub`,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { ZM_PING_SECONDS: String(pingSeconds) },
      }).output();
    try {
      const dec = new TextDecoder();
      const out = await py("py");
      assert.equal(out.code, 0, dec.decode(out.stderr));
      const p = JSON.parse(dec.decode(out.stdout));
      assert.equal(p.topic, "Three~~~~done");
      assert.deepEqual(p.values, { from: "python", trace: ["one", "two", "three"] });
      // The same program with a key not on the allowlist gets nothing back (its ping never returns).
      // An allowed key's ping comes back once its connection is up; a refused key's never does: 5 s tell.
      const refused = await py("other", 5);
      assert.notEqual(refused.code, 0);
      assert.match(dec.decode(refused.stderr), /no ping came back/);
    } finally {
      await hub.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
