// A service's @PUBLISH handler (src/client/publish_handler.ts) without a socket: which publications
// it takes, and the continuation it sends back.
import assert from "node:assert/strict";
import { parseActionKey } from "../src/topic/action_key.ts";
import { runPublishHandler, takesPublication } from "../src/client/publish_handler.ts";
import type { Publication } from "../src/wire/protocol.ts";

const p: Publication = {
  topic: "Order~PUBLISH~Subject~Order~Approve",
  flow: "Order",
  decorator: "PUBLISH",
  sender: "Subject",
  context: "Order",
  action: "Approve",
  id: "r1",
  position: 2,
  n: 3,
  values: { total: 20 },
};

Deno.test("takesPublication: a @PUBLISH step whose key matches the handler's, with a position", () => {
  assert.equal(takesPublication(parseActionKey("Subject?Order@PUBLISH?Approve"), p), true);
  assert.equal(takesPublication(parseActionKey("?Order@PUBLISH?"), p), true);
  assert.equal(takesPublication(parseActionKey("Subject?Order@PUBLISH?Reject"), p), false);
  assert.equal(takesPublication(parseActionKey("?Order@PUBLISH?"), { ...p, position: undefined }), false);
  assert.equal(takesPublication(parseActionKey("?Order@PUBLISH?"), { ...p, decorator: "" }), false);
});

Deno.test("runPublishHandler: the continuation is at the next position, one more step run, with the result", async () => {
  const c = await runPublishHandler((v) => ({ ...v, approved: true }), p);
  assert.deepEqual(c, { header: { v: 1, id: "r1", pos: 3, n: 4 }, values: { total: 20, approved: true } });
});

Deno.test("runPublishHandler: a throw or a result that is not an object is a handler_error with the values given", async () => {
  const thrown = await runPublishHandler(() => {
    throw new Error("no stock");
  }, p);
  assert.deepEqual(thrown.header.error, { code: "handler_error", message: "no stock" });
  assert.deepEqual(thrown.values, { total: 20 });
  const array = await runPublishHandler(() => [1] as unknown as Record<string, unknown>, p);
  assert.deepEqual(array.header.error, {
    code: "handler_error",
    message: "handler for Subject?Order@PUBLISH?Approve returned an array, not an object",
  });
  assert.deepEqual(array.values, { total: 20 });
});
