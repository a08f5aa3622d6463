// The layout explains the design (docs/architecture.md), and these checks keep it so: the pure
// topic system does no I/O, the product never reaches into the tooling, and the public API is a
// named list.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(new URL(dir, root))) {
    const path = `${dir}${e.name}`;
    if (e.isDirectory) out.push(...await tsFiles(`${path}/`));
    else if (e.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** Code without comments (doc examples included) and the module specifiers it imports. */
async function importsOf(path: string): Promise<{ code: string; specifiers: string[] }> {
  const text = await Deno.readTextFile(new URL(path, root));
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const specifiers = [...code.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]);
  return { code, specifiers };
}

/** `spec` imported by `from` as a path from the repository's root (or the bare specifier). */
function resolved(from: string, spec: string): string {
  if (!spec.startsWith(".")) return spec;
  return new URL(spec, new URL(from, root)).pathname.slice(root.pathname.length);
}

Deno.test("the topic system (src/topic/) is pure: no Deno API, node:, npm: or socket module, only its own folder and the wire's types", async () => {
  for (const f of await tsFiles("src/topic/")) {
    const { code, specifiers } = await importsOf(f);
    assert.doesNotMatch(code, /\bDeno\./, `${f} uses the Deno API`);
    for (const s of specifiers) {
      const r = resolved(f, s);
      assert.ok(
        r.startsWith("src/topic/") || r === "src/wire/protocol.ts",
        `${f} imports ${s}: the topic system imports only itself and the wire's types`,
      );
    }
  }
});

Deno.test("the ZMTP codec (src/zmtp/codec.ts) is pure: no Deno API and no imports", async () => {
  const { code, specifiers } = await importsOf("src/zmtp/codec.ts");
  assert.doesNotMatch(code, /\bDeno\./, "the codec uses the Deno API");
  assert.deepEqual(specifiers, []);
});

Deno.test("nothing under src/ imports the tooling (testing/, bench/)", async () => {
  for (const f of await tsFiles("src/")) {
    for (const s of (await importsOf(f)).specifiers) {
      const r = resolved(f, s);
      assert.ok(!r.startsWith("testing/") && !r.startsWith("bench/"), `${f} imports ${s}`);
    }
  }
});

Deno.test("mod.ts and testing/mod.ts export named lists only", async () => {
  for (const f of ["mod.ts", "testing/mod.ts"]) {
    const { code } = await importsOf(f);
    assert.doesNotMatch(code, /export \*/, `${f} has export *`);
  }
});

Deno.test("a service that only wants a client loads no node:sqlite (the token codec is in the wire layer)", async () => {
  const seen = new Set<string>();
  const visit = async (f: string): Promise<void> => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const s of (await importsOf(f)).specifiers) {
      assert.notEqual(s, "node:sqlite", `${f} imports node:sqlite`);
      const r = resolved(f, s);
      if (r.endsWith(".ts") && !r.startsWith("npm:") && !r.startsWith("node:")) await visit(r);
    }
  };
  await visit("src/client/client.ts");
  assert.ok(seen.size > 5, "the client's modules were followed");
});

/** The roles' pure bookkeeping: decisions the Subject (and the IM link) carry out on sockets. */
const PURE_ROLE_PARTS = [
  "src/roles/worker_pool.ts",
  "src/roles/dispatch_table.ts",
  "src/roles/pause_book.ts",
  "src/roles/intake.ts",
  "src/roles/result_gate.ts",
  "src/roles/im_outbox.ts",
  "src/roles/recent_keys.ts",
  "src/roles/byte_budget.ts",
  "src/roles/connection_quota.ts",
  "src/roles/request_table.ts",
];

Deno.test("the roles' pure parts use no Deno API and import (other than types) only the topic system, the wire and each other", async () => {
  for (const f of PURE_ROLE_PARTS) {
    const { code } = await importsOf(f);
    assert.doesNotMatch(code, /\bDeno\./, `${f} uses the Deno API`);
    // Import and re-export statements (a type-only one, `import type { … }`, loads nothing at
    // run time) and dynamic imports.
    const statements = [...code.matchAll(/^(?:import|export)\s(?!type\s)[\s\S]*?from\s*["']([^"']+)["']/gm)]
      .map((m) => m[1]);
    const dynamic = [...code.matchAll(/\bimport\s*\(\s*["']([^"']+)["']/g)].map((m) => m[1]);
    for (const s of [...statements, ...dynamic]) {
      const r = resolved(f, s);
      assert.ok(
        r.startsWith("src/topic/") || r.startsWith("src/wire/") || PURE_ROLE_PARTS.includes(r),
        `${f} imports ${s}: a pure part imports only the topic system, the wire and other pure parts`,
      );
    }
  }
});
