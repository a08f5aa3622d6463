import assert from "node:assert/strict";
import { buildCatalog, detectKind, hasErrors } from "../src/topic/catalog.ts";

Deno.test("kind is told by content: an [actionmapping] section makes a mapping file", () => {
  assert.equal(detectKind("[actionmapping]\n??A = x.y\n"), "mapping");
  assert.equal(detectKind("[Request]\n__class = a\n  [ actionmapping ]  \n"), "mapping");
  assert.equal(detectKind("[F]\n?F?Push\n"), "flow");
  assert.equal(detectKind("[actionmappings]\n"), "flow");
});

Deno.test("kind can be forced", () => {
  const c = buildCatalog([{ file: "m.ini", text: "[F]\n??A = x.y\n", kind: "mapping" }]);
  assert.equal(c.mappings.size, 0, "no [actionmapping] section, so nothing to read");
  assert.equal(c.allFlows.length, 0);
  assert.deepEqual(c.files, [{ file: "m.ini", kind: "mapping" }]);
});

Deno.test("flows and mappings from several files", () => {
  const c = buildCatalog([
    { file: "a.ini", text: "[A]\n?A?Push\nS?A?go\n??done\n" },
    { file: "b.ini", text: "[B]\n?B?Push\n??done\n" },
    { file: "m.ini", text: "[actionmapping]\n??go = ./h.ts#go\n" },
  ]);
  assert.deepEqual([...c.flows.keys()], ["A", "B"]);
  assert.equal(c.mappings.get("??go")?.target, "./h.ts#go");
  assert.deepEqual(c.diagnostics, []);
});

Deno.test("a flow in two files: warning, later file wins", () => {
  const c = buildCatalog([
    { file: "a.ini", text: "[F]\n?F?Push\nS?F?one\n" },
    { file: "b.ini", text: "\n[F]\n?F?Push\nS?F?two\n" },
  ]);
  assert.equal(c.flows.get("F")?.file, "b.ini");
  assert.equal(c.allFlows.length, 2);
  assert.equal(c.diagnostics.length, 1);
  const d = c.diagnostics[0];
  assert.equal(d.severity, "warning");
  assert.equal(`${d.file}:${d.line}`, "b.ini:2");
  assert.match(d.message, /flow "F" is defined in 2 files \(a\.ini:1, b\.ini:2\); the last, b\.ini:2, wins/);
  assert.ok(!hasErrors(c.diagnostics));
});

Deno.test("a mapping key in two files: warning, later file wins; strict makes it an error", () => {
  const files = [
    { file: "ext.ini", text: "[actionmapping]\n??GetAllConnections = a.b\n" },
    { file: "int.ini", text: "[actionmapping]\n\n??GetAllConnections = c.d\n" },
  ];
  const c = buildCatalog(files);
  assert.equal(c.mappings.get("??GetAllConnections")?.target, "c.d");
  assert.equal(c.diagnostics.length, 1);
  assert.equal(c.diagnostics[0].severity, "warning");
  assert.match(c.diagnostics[0].message, /ext\.ini:2, int\.ini:3/);
  const strict = buildCatalog(files, { strict: true });
  assert.equal(strict.diagnostics[0].severity, "error");
  assert.match(strict.diagnostics[0].message, /strict mode forbids this/);
  assert.ok(hasErrors(strict.diagnostics));
});

Deno.test("a flow twice in one file stays an error, strict or not", () => {
  const c = buildCatalog([{ file: "a.ini", text: "[F]\n[F]\n" }]);
  assert.ok(hasErrors(c.diagnostics));
});
