import assert from "node:assert/strict";
import { parseMappingFile } from "../src/topic/mapping_file.ts";
import { buildCatalog } from "../src/topic/catalog.ts";
import {
  componentPermissions,
  deniedMessage,
  formatPermissions,
  grantAdvice,
} from "../src/topic/permissions.ts";

Deno.test("mapping file: entries of [actionmapping]; other sections ignored", () => {
  const text = [
    "[actionmapping]",
    "IAM??Type = digitalpy.core.iam.IAMController.evaluate_request",
    "",
    "; comment",
    "??Echo=./echo.ts#Echo.run",
    "[Request]",
    "__class = digitalpy.core.routing.impl.default_request.DefaultRequest",
    "[servicemapping]",
    "anything goes here ; even this",
  ].join("\n");
  const { entries, diagnostics } = parseMappingFile(text, "m.ini");
  assert.deepEqual(diagnostics, []);
  assert.deepEqual(entries.map((e) => [e.text, e.lookup, e.target, e.line]), [
    ["IAM??Type", "IAM??Type", "digitalpy.core.iam.IAMController.evaluate_request", 2],
    ["??Echo", "??Echo", "./echo.ts#Echo.run", 5],
  ]);
});

Deno.test("mapping file: the same key in different contexts is not a duplicate", () => {
  const text = "[actionmapping]\n?MEMORY?X = a.b\n?CACHING?X = a.c\n??X = a.d\n";
  const { entries, diagnostics } = parseMappingFile(text, "m.ini");
  assert.deepEqual(diagnostics, []);
  assert.equal(entries.length, 3);
});

Deno.test("mapping file: two entries reducing to one lookup key are an error naming both lines", () => {
  const text = "[actionmapping]\nS?C?A = a.b\nS?C@PUBLISH?A = a.c\n";
  const { entries, diagnostics } = parseMappingFile(text, "m.ini");
  assert.equal(entries.length, 1);
  assert.equal(diagnostics.length, 1);
  const d = diagnostics[0];
  assert.equal(d.line, 3);
  assert.match(d.message, /repeats lookup key "S\?C\?A" of line 2/);
  assert.deepEqual(d.related, [{ file: "m.ini", line: 2, column: 1 }]);
});

Deno.test("mapping file: every bad entry is reported with its column", () => {
  const text = [
    "[actionmapping]",
    "no separator here", // 2
    "  bad key?a?b = x.y", // 3: space in key at column 6
    "??ok =", // 4: empty target
    " = x.y", // 5: no key
    "[actionmapping", // 6: malformed header inside the mapping section
  ].join("\n");
  const { diagnostics } = parseMappingFile(text, "m.ini");
  assert.deepEqual(diagnostics.map((d) => `${d.line}:${d.column}`), ["2:1", "3:6", "4:7", "5:2", "6:15"]);
  assert.match(diagnostics[0].message, /has no '='/);
  assert.match(diagnostics[2].message, /empty target/);
});

Deno.test("mapping file: section name matched case-insensitively", () => {
  const { entries } = parseMappingFile("[ActionMapping]\n??A = x.y\n", "m.ini");
  assert.equal(entries.length, 1);
});

Deno.test("mapping file: [actiontimeout] entries; a bad value or a repeated key is an error at its place", () => {
  const text = [
    "[actionmapping]",
    "??Slow = ./slow.ts#slow",
    "[actiontimeout]",
    "??Slow = 1500",
    "S?C?Fast = 20 ; inline comment",
    "??Bad =  soon",
    "??Zero = 0",
    "??Slow = 10",
  ].join("\n");
  const { entries, timeouts, diagnostics } = parseMappingFile(text, "m.ini");
  assert.equal(entries.length, 1);
  assert.deepEqual(timeouts.map((t) => [t.lookup, t.ms, t.line]), [["??Slow", 1500, 4], ["S?C?Fast", 20, 5]]);
  assert.deepEqual(diagnostics.map((d) => [d.line, d.column]), [[6, 10], [7, 10], [8, 1]]);
  assert.match(diagnostics[0].message, /"soon": write a whole number of milliseconds/);
  assert.match(diagnostics[2].message, /repeats the timeout key "\?\?Slow" of line 4/);
});

Deno.test("catalog: a file with only [actiontimeout] is a mapping file; the later file's timeout wins", () => {
  const c = buildCatalog([
    { file: "a.ini", text: "[actiontimeout]\n??X = 100\n" },
    { file: "b.ini", text: "[actiontimeout]\n??X = 200\n" },
  ]);
  assert.deepEqual(c.files.map((f) => f.kind), ["mapping", "mapping"]);
  assert.equal(c.timeouts.get("??X")?.ms, 200);
  assert.equal(c.diagnostics.length, 1);
  assert.equal(c.diagnostics[0].severity, "warning");
  assert.match(c.diagnostics[0].message, /timeout "\?\?X" is set in 2 places/);
});

Deno.test("[permissions]: read, write, net, env and run lists, * for all; DigitalPy files without it load unchanged", () => {
  const r = parseMappingFile(
    "[actionmapping]\n??A = ./a.ts#a\n[permissions]\nread = data, /etc/ssl\nnet = 127.0.0.1:5432\nenv = *\n",
    "/srv/c/m.ini",
  );
  assert.deepEqual(r.diagnostics, []);
  assert.deepEqual(r.permissions?.grants, { read: ["data", "/etc/ssl"], net: ["127.0.0.1:5432"], env: true });
  assert.deepEqual(r.permissions?.lines, { read: 4, net: 5, env: 6 });
  const p = componentPermissions("/srv/c/m.ini", r.permissions);
  assert.deepEqual(p, {
    read: ["/srv/c", "/srv/c/data", "/etc/ssl"],
    write: [],
    net: ["127.0.0.1:5432"],
    env: true,
    run: [],
  });
  assert.equal(formatPermissions(p), "read /srv/c, /srv/c/data, /etc/ssl; net 127.0.0.1:5432; env *");
  // Without the section: its own folder, read only.
  const plain = parseMappingFile("[actionmapping]\n??A = ./a.ts#a\n", "/srv/c/m.ini");
  assert.equal(plain.permissions, undefined);
  assert.deepEqual(componentPermissions("/srv/c/m.ini", plain.permissions), {
    read: ["/srv/c"],
    write: [],
    net: [],
    env: [],
    run: [],
  });
});

Deno.test("[permissions] errors name the line: an unknown kind, a kind given twice, * among other entries", () => {
  const r = parseMappingFile("[permissions]\nsys = *\nread = a\nread = b\nnet = *, x:1\n", "m.ini");
  assert.deepEqual(r.diagnostics.map((d) => [d.line, d.message]), [
    [2, 'unknown permission "sys"; known: read, write, net, env, run'],
    [4, '"read" is given twice (line 3); list it once'],
    [5, "net = * grants all: write it alone, without other entries"],
  ]);
});

Deno.test("a denied operation's message names the permission and the resource", () => {
  assert.equal(
    deniedMessage('Requires read access to "/etc/passwd", run again with the --allow-read flag'),
    'read access to "/etc/passwd" denied',
  );
  assert.equal(
    deniedMessage("Requires run access, run again with the --allow-run flag"),
    "run access denied",
  );
  assert.equal(deniedMessage("something else"), undefined);
});

Deno.test("a permission denied while a handler module is imported is told with the [permissions] line that grants it", () => {
  const uncaught = "Uncaught (in promise) NotCapable: ";
  assert.equal(
    grantAdvice(`${uncaught}Requires env access to "HOME", run again with the --allow-env flag`, [
      "/c/a.ini",
    ]),
    'env access to "HOME" denied: grant it in the [permissions] section of /c/a.ini (env = HOME)',
  );
  assert.equal(
    grantAdvice(`${uncaught}Requires net access to "db:5432", run again with the --allow-net flag`, [
      "a.ini",
      "b.ini",
    ]),
    'net access to "db:5432" denied: grant it in the [permissions] section of a.ini or b.ini (net = db:5432)',
  );
  assert.equal(
    grantAdvice("Requires run access, run again with the --allow-run flag", ["a.ini"]),
    "run access denied: grant it in the [permissions] section of a.ini (run = *)",
  );
  assert.equal(
    grantAdvice('Requires ffi access to "/x.so", run again with the --allow-ffi flag', ["a.ini"]),
    'ffi access to "/x.so" denied: handlers cannot be granted ffi access (a [permissions] section grants read, write, net, env, run)',
  );
  assert.equal(grantAdvice("SyntaxError: nope", ["a.ini"]), undefined);
});
