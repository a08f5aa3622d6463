import assert from "node:assert/strict";
import { PausedStore } from "../src/roles/paused_store.ts";
import { makeToken, parseToken } from "../src/wire/protocol.ts";

const flow = (token: string, deadline: number) => ({
  token,
  id: "req~1",
  flow: "F",
  position: 2,
  n: 1,
  values: '{"a":1}',
  pausedAt: 0,
  deadline,
});

Deno.test("a token resumes once; expired flows are taken by expire(), not take()", () => {
  const s = new PausedStore(":memory:");
  const t1 = makeToken("F", "req~1");
  s.save(flow(t1, 2000));
  assert.equal(s.count(), 1);
  assert.deepEqual(s.take(t1, 1000), flow(t1, 2000));
  assert.equal(s.take(t1, 1000), undefined, "second use");
  const t2 = makeToken("F", "req~1");
  s.save(flow(t2, 2000));
  assert.equal(s.take(t2, 2000), undefined, "expired");
  assert.deepEqual(s.expire(2000).map((p) => p.token), [t2]);
  assert.equal(s.count(), 0);
  s.close();
});

Deno.test("state survives reopening the file", async () => {
  const dir = await Deno.makeTempDir();
  const t = makeToken("F", "x");
  const a = new PausedStore(`${dir}/p.sqlite`);
  a.save(flow(t, Date.now() + 60_000));
  a.close();
  const b = new PausedStore(`${dir}/p.sqlite`);
  assert.equal(b.take(t)?.flow, "F");
  b.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokens name their flow and request id, even ids with '~'", () => {
  assert.deepEqual(parseToken(makeToken("Flow.A", "a~b~c")), { flow: "Flow.A", id: "a~b~c" });
  assert.equal(parseToken("garbage"), undefined);
});
