import assert from "node:assert/strict";
import { coverageTable, diffRecordings, fixtureFiles, loadFixtures } from "../src/conformance.ts";

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

Deno.test("the coverage table in fixtures/README.md is up to date", async () => {
  // deno fmt pads Markdown tables: compare each row with runs of spaces and dashes folded.
  const fold = (t: string) => t.replace(/-{3,}/g, "---").replace(/ +/g, " ");
  const readme = fold(await Deno.readTextFile(new URL("../fixtures/README.md", import.meta.url)));
  for (const row of fold(coverageTable(await loadFixtures())).split("\n")) {
    assert.ok(readme.includes(row), `${row} is missing: run deno run -A cli.ts conformance --coverage`);
  }
});
