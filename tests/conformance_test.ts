import assert from "node:assert/strict";
import { coverageTable, diffRecordings, fixtureFiles, loadFixtures } from "../testing/conformance.ts";
import { parseFaultPolicy } from "../testing/fault.ts";
import { runCli } from "./helpers.ts";

Deno.test("diff: equal recordings give no lines; a mismatch shows expected and actual", () => {
  const rec = [[{ topic: "F~~~~done", values: { a: 1 } }]];
  assert.deepEqual(diffRecordings(rec, structuredClone(rec)), []);
  const lines = diffRecordings(rec, [[{ topic: "F~~~~error", values: { a: 1 }, error: "no_handler" }]]);
  assert.deepEqual(lines, [
    "  request 0:",
    '    - {"topic":"F~~~~done","values":{"a":1}}',
    '    + {"topic":"F~~~~error","values":{"a":1},"error":"no_handler"}',
  ]);
  assert.deepEqual(diffRecordings(rec, [[]]), [
    "  request 0:",
    '    - {"topic":"F~~~~done","values":{"a":1}}',
  ]);
});

Deno.test("every fixture is recorded, names SPEC sections, and its files exist", async () => {
  const fixtures = await loadFixtures();
  assert.ok(fixtures.length >= 28);
  for (const f of fixtures) {
    assert.ok(f.fixture.spec.length > 0, `${f.name} names a SPEC section`);
    assert.equal(
      f.fixture.recording?.length,
      f.fixture.requests.length,
      `${f.name} has a recording per request`,
    );
    if (!f.fixture.files) assert.ok(fixtureFiles(f.fixture)?.length, `${f.name}'s component files exist`);
  }
  for (let rule = 1; rule <= 7; rule++) {
    assert.match(coverageTable(fixtures), new RegExp(`§2 resolution rule ${rule} `));
  }
  for (const code of ["unknown_flow", "no_handler", "handler_error", "timeout", "step_limit", "bad_resume"]) {
    assert.match(coverageTable(fixtures), new RegExp(`§6 ${code}`));
  }
});

Deno.test("the coverage table in fixtures/README.md is exactly the one the fixtures' spec tags give", async () => {
  // deno fmt pads Markdown tables: compare rows with runs of spaces and dashes folded. The
  // table is the last thing in the file, so it can claim no row that no fixture checks.
  const fold = (t: string) => t.trim().split("\n").map((l) => l.replace(/-{3,}/g, "---").replace(/ +/g, " "));
  const readme = await Deno.readTextFile(new URL("../fixtures/README.md", import.meta.url));
  const table = readme.slice(readme.indexOf("| SPEC"));
  assert.deepEqual(
    fold(table),
    fold(coverageTable(await loadFixtures())),
    "run deno run -A cli.ts conformance --coverage and paste the table",
  );
});

Deno.test("conformance --faults: fixtures replayed through a fault proxy give the recorded publications", async () => {
  const r = await runCli([
    "conformance",
    "--filter",
    "publish",
    "--faults",
    "duplicate=0.5,drop=0.1,jitter=2",
    "--json",
  ]);
  const report = JSON.parse(r.stdout);
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual([report.passed, report.failed], [3, 0]);
  assert.ok(report.faults.duplicated > 0, JSON.stringify(report.faults));
});

Deno.test("fault policies parse from text; bad ones name the problem", () => {
  assert.deepEqual(parseFaultPolicy("drop=0.02, duplicate=0.05,delay=1,jitter=3"), {
    drop: 0.02,
    duplicate: 0.05,
    delayMs: 1,
    jitterMs: 3,
  });
  assert.deepEqual(parseFaultPolicy(""), {});
  assert.match(parseFaultPolicy("drop=2") as string, /probability between 0 and 1/);
  assert.match(parseFaultPolicy("lose=0.1") as string, /unknown fault "lose"/);
  assert.match(parseFaultPolicy("drop") as string, /not name=number/);
  assert.match(parseFaultPolicy("jitter=-1") as string, /not name=number/);
});
