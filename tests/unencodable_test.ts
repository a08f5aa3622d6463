// The path finder of src/wire/unencodable.ts: where JSON.stringify would fail, and why.
import assert from "node:assert/strict";
import { findUnencodable } from "../src/wire/unencodable.ts";

/** Asserts that JSON.stringify refuses `v` and the finder names `path` and a reason matching `reason`. */
function refused(v: unknown, path: string, reason: RegExp): void {
  assert.throws(() => JSON.stringify(v), "JSON.stringify refuses it");
  const got = findUnencodable(v);
  assert.ok(got, "the finder finds it");
  assert.equal(got.path, path);
  assert.match(got.reason, reason);
}

Deno.test("findUnencodable: a BigInt, at the root, in objects and arrays, wrapped", () => {
  refused(1n, "values", /^BigInt$/);
  refused({ a: { b: [1, 2, 3n] } }, "values.a.b[2]", /^BigInt$/);
  refused({ "a key": { "0": 5n } }, 'values["a key"]["0"]', /^BigInt$/);
  refused({ x: Object(7n) }, "values.x", /^BigInt$/);
});

Deno.test("findUnencodable: circular references name the ancestor they point to", () => {
  const self: Record<string, unknown> = { ok: 1 };
  self.self = self;
  refused(self, "values.self", /^circular reference \(to values\)$/);
  const a: Record<string, unknown> = {};
  const deep = { a: { b: [0, a] } };
  a.up = deep.a;
  refused(deep, "values.a.b[1].up", /^circular reference \(to values\.a\)$/);
});

Deno.test("findUnencodable: the first offender in JSON.stringify's order", () => {
  const loop: Record<string, unknown> = {};
  loop.loop = loop;
  refused({ first: [1, { n: 2n }], second: loop }, "values.first[1].n", /BigInt/);
  refused({ first: loop, second: 2n }, "values.first.loop", /circular/);
});

Deno.test("findUnencodable: a shared (not circular) object is fine; so are skipped values", () => {
  const shared = { n: 1 };
  const v = { a: shared, b: [shared, shared], f: () => 1, u: undefined, s: Symbol("s") };
  assert.doesNotThrow(() => JSON.stringify(v));
  assert.equal(findUnencodable(v), undefined);
  assert.equal(findUnencodable({ big: "x".repeat(100_000), n: null, d: new Date(0) }), undefined);
});

Deno.test("findUnencodable: toJSON is followed as JSON.stringify does; a throwing toJSON or getter is named", () => {
  assert.equal(findUnencodable({ a: 1n, toJSON: () => ({ fine: true }) }), undefined);
  refused({ a: { toJSON: () => ({ inner: 2n }) } }, "values.a.inner", /^BigInt$/);
  refused(
    {
      a: {
        toJSON() {
          throw new Error("nope");
        },
      },
    },
    "values.a",
    /^its toJSON threw: Error: nope$/,
  );
  refused(
    {
      a: [0, {
        get g() {
          throw new RangeError("getter");
        },
      }],
    },
    "values.a[1].g",
    /^reading it threw: RangeError: getter$/,
  );
});

Deno.test("findUnencodable: nesting too deep for JSON.stringify's stack: no recursion here, the BigInt at the bottom is found", () => {
  let v: Record<string, unknown> = { end: 1n };
  for (let i = 0; i < 200_000; i++) v = { next: v };
  assert.throws(() => JSON.stringify(v));
  const got = findUnencodable(v);
  assert.ok(got);
  assert.equal(got.reason, "BigInt");
  assert.match(
    got.path,
    /^values(\.next){19}…\(199962 keys\)…(\.next){19}\.end$/,
    "a long path is shortened",
  );
});

Deno.test("findUnencodable: a revoked proxy is named", () => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  refused({ p: proxy }, "values.p", /threw: TypeError/);
});

Deno.test("findUnencodable: the root's name can be chosen", () => {
  assert.deepEqual(findUnencodable([1n], "result"), { path: "result[0]", reason: "BigInt" });
});
