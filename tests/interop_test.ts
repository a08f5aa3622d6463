// The wire protocol is language-neutral: a Python program using only pyzmq (Debian's
// python3-zmq, which .ci/run installs) pushes a request and reads its done publication.
import assert from "node:assert/strict";
import { startDeployment } from "./helpers.ts";

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
