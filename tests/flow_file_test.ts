import assert from "node:assert/strict";
import { formatDiagnostic } from "../src/topic/diagnostics.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";

Deno.test("flow file: sections of keys, comments, blank lines", () => {
  const text =
    "; a comment\n# another\n[IAMConnection]\n?IAMConnection?Push\n\nSubject?IAMConnection?Connection\n??done\n";
  const { flows, diagnostics } = parseFlowFile(text, "f.ini");
  assert.deepEqual(diagnostics, []);
  assert.equal(flows.length, 1);
  assert.equal(flows[0].name, "IAMConnection");
  assert.equal(flows[0].line, 3);
  assert.deepEqual(flows[0].steps.map((s) => [s.text, s.line]), [
    ["?IAMConnection?Push", 4],
    ["Subject?IAMConnection?Connection", 6],
    ["??done", 7],
  ]);
});

Deno.test("flow file: empty section, repeated key, no final newline, CRLF, indentation", () => {
  const text = "[Empty]\n[Rep]\r\n  ?R?Push\r\n S?R?a\nS?R?a\n??done";
  const { flows, diagnostics } = parseFlowFile(text, "f.ini");
  assert.deepEqual(diagnostics, []);
  assert.deepEqual(flows.map((f) => [f.name, f.steps.length]), [["Empty", 0], ["Rep", 4]]);
  assert.equal(flows[1].steps[1].column, 2);
  assert.equal(flows[1].steps[3].text, "??done");
});

Deno.test("flow file: inline comments after white space", () => {
  const { flows, diagnostics } = parseFlowFile("[F]\n?F?Push ; entry\n??done\t# end\n", "f.ini");
  assert.deepEqual(diagnostics, []);
  assert.deepEqual(flows[0].steps.map((s) => s.text), ["?F?Push", "??done"]);
});

Deno.test("flow file: every error is reported as file:line:column", () => {
  const text = [
    "stray?line?here", // 1: outside a section
    "[Good]",
    "?Good?Push",
    "bad key?x?y", // 4: space at column 4
    "a?b?c?d", // 5: third ?
    "[Good]", // 6: duplicate section
    "x?y?z",
    "[bad~name]", // 8
    "[unclosed", // 9
    "[F] trailing", // 10
    "  ?F?x.y", // 11: '.' at column 7
  ].join("\n");
  const { diagnostics, flows } = parseFlowFile(text, "bad.ini");
  const lines = diagnostics.map(formatDiagnostic);
  assert.deepEqual(lines.map((l) => l.split(": ")[0]), [
    "bad.ini:1:1",
    "bad.ini:4:4",
    "bad.ini:5:6",
    "bad.ini:6:1",
    "bad.ini:8:5",
    "bad.ini:9:10",
    "bad.ini:10:4",
    "bad.ini:11:7",
  ]);
  assert.match(lines[0], /outside a section; add a \[FlowName\] header/);
  assert.match(lines[1], /invalid action key "bad key\?x\?y": invalid character ' '/);
  assert.match(lines[3], /defined twice in this file \(first at line 2\)/);
  assert.match(lines[4], /invalid flow name "bad~name": character '~'/);
  assert.equal(flows.length, 1, "only the valid flow is kept");
  assert.equal(flows[0].steps.length, 1, "the duplicate section's steps are not merged");
  assert.ok(diagnostics.every((d) => d.severity === "error"));
});

Deno.test("flow file: empty file", () => {
  assert.deepEqual(parseFlowFile("", "e.ini"), { flows: [], diagnostics: [] });
});
