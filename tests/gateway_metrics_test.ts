// GET /metrics over a real deployment: the Subject's per-flow counts and histograms, every role's
// CPU and RSS, through the metrics topic; the format checked by promtool (Debian `prometheus`).
import assert from "node:assert/strict";
import { freePort } from "../testing/deployment.ts";
import { startDeployment } from "./helpers.ts";

const havePromtool = await new Deno.Command("promtool", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false);
if (!havePromtool) {
  console.error("promtool not found (apt-get install prometheus): the format check is skipped");
}

function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("gateway: GET /metrics counts each flow's outcomes and latencies, shows every role and its configuration version, and passes promtool", async () => {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const d = await startDeployment({ workers: 2, args: ["--http", `127.0.0.1:${port}`] });
  try {
    const post = (flow: string) =>
      fetch(`${url}/v1/flows/${flow}`, { method: "POST", body: "{}" }).then((r) => r.text());
    await Promise.all([...Array(20).fill("Three"), ...Array(7).fill("Boom")].map(post));
    let text = "";
    for (let i = 0; i < 50; i++) {
      const r = await fetch(`${url}/metrics`);
      assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
      text = await r.text();
      // Both flows' counts: a snapshot (taken each second) may hold the first flow's and not yet the other's.
      const ready = value(text, 'zmanager_requests_total{flow="Three",outcome="done"}') === 20 &&
        value(text, 'zmanager_requests_total{flow="Boom",outcome="handler_error"}') === 7 &&
        (text.match(/^zmanager_role_up\{/gm) ?? []).length === 5;
      if (ready) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(value(text, 'zmanager_requests_total{flow="Three",outcome="done"}'), 20, text);
    assert.equal(value(text, 'zmanager_requests_total{flow="Boom",outcome="handler_error"}'), 7);
    assert.equal(value(text, 'zmanager_request_duration_seconds_count{flow="Three"}'), 20);
    assert.equal(value(text, 'zmanager_request_duration_seconds_bucket{flow="Three",le="+Inf"}'), 20);
    assert.ok(value(text, 'zmanager_request_duration_seconds_sum{flow="Three"}')! > 0);
    assert.match(text, /^zmanager_workers\{pid="\d+"\} 2$/m);
    assert.match(text, /^zmanager_worker_credit_available\{pid="\d+"\} \d+$/m);
    assert.match(text, /^zmanager_paused_flows\{pid="\d+"\} 0$/m);
    // The configuration version each role runs (issue 22): 1, the files it started with.
    assert.match(text, /^zmanager_config_version\{role="subject",pid="\d+"\} 1$/m);
    assert.equal((text.match(/^zmanager_config_version\{role="worker",pid="\d+"\} 1$/gm) ?? []).length, 2);
    for (const role of ["subject", "integration-manager", "worker", "gateway"]) {
      assert.match(
        text,
        new RegExp(
          `^zmanager_process_resident_memory_bytes\\{role="${role}",pid="\\d+",host="[^"]*"\\} [1-9]\\d*$`,
          "m",
        ),
        role,
      );
      assert.match(text, new RegExp(`^zmanager_process_cpu_seconds_total\\{role="${role}",`, "m"), role);
    }
    if (havePromtool) {
      const p = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
      const w = p.stdin.getWriter();
      await w.write(new TextEncoder().encode(text));
      await w.close();
      const out = await p.output();
      const dec = new TextDecoder();
      assert.equal(out.code, 0, dec.decode(out.stdout) + dec.decode(out.stderr));
      assert.equal(dec.decode(out.stdout) + dec.decode(out.stderr), "", "no lint findings");
    }
  } finally {
    await d.stop();
  }
});
