// The client's bookkeeping for Subject restarts (src/client/kept_requests.ts): which requests are sent
// again, and when.
import assert from "node:assert/strict";
import { KeptRequests } from "../src/client/kept_requests.ts";

const frames = (id: string) => [new TextEncoder().encode(id)];
const ids = (r: [string, unknown][] | undefined) => r?.map(([id]) => id).sort();

Deno.test("the first incarnation seen and repeated announcements send nothing again", () => {
  const k = new KeptRequests();
  k.keep("a", frames("a"));
  assert.equal(k.hello("s1"), undefined);
  assert.equal(k.incarnation, "s1");
  assert.equal(k.hello("s1"), undefined);
  assert.equal(k.size, 1);
});

Deno.test("a new incarnation sends again every kept request not finished and not paused, as sent", () => {
  const k = new KeptRequests();
  k.hello("s1");
  for (const id of ["a", "b", "c", "d"]) k.keep(id, frames(id));
  k.forget("b"); // its final arrived
  k.paused("c"); // paused at an @ASYNC step: resumed by someone else, never restarted
  const again = k.hello("s2");
  assert.deepEqual(ids(again), ["a", "d"]);
  assert.deepEqual(again!.find(([id]) => id === "a")![1], frames("a"));
  assert.equal(k.incarnation, "s2");
  // Still kept until their finals: a second restart sends them again.
  assert.deepEqual(ids(k.hello("s3")), ["a", "d"]);
});

Deno.test("an incarnation seen before sends nothing again (two Subjects announcing in turn)", () => {
  const k = new KeptRequests();
  k.hello("s1");
  k.keep("a", frames("a"));
  assert.deepEqual(ids(k.hello("s2")), ["a"]);
  assert.equal(k.hello("s1"), undefined);
  assert.equal(k.hello("s2"), undefined);
});

Deno.test("memory: nothing is kept once every wait has ended", () => {
  const k = new KeptRequests();
  for (let i = 0; i < 1000; i++) k.keep(`r${i}`, frames(`r${i}`));
  for (let i = 0; i < 1000; i++) k.forget(`r${i}`);
  k.paused("gone"); // a pause publication for a request no longer waited for
  assert.equal(k.size, 0);
  k.hello("s1");
  assert.deepEqual(k.hello("s2"), []);
});
