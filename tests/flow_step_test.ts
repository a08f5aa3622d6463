import assert from "node:assert/strict";
import { parseActionKey } from "../src/topic/action_key.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { nextStep, placeRequest, stepKind } from "../src/topic/flow_step.ts";

const flow = (text: string) => parseFlowFile(text, "f.ini").flows[0];
const F = flow("[F]\n?F?Push\nS?F?a\nS?F@PUBLISH?b\nS?F@ASYNC?c\nS?F@CUSTOM?d\n??done\nS?F?never\n");

Deno.test("step kinds: run, publish, pause, done; other decorators run", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 99].map((p) => stepKind(F, p)), [
    "run",
    "publish",
    "pause",
    "run",
    "done",
    "run",
    "done",
  ]);
});

Deno.test("placement: no position and an empty key start after the entry step", () => {
  assert.deepEqual(placeRequest(F, parseActionKey("??")), { position: 1 });
  assert.deepEqual(placeRequest(F, parseActionKey("?F?Push")), { position: 1 });
});

Deno.test("placement: first matching step wins; a repeated key still starts at its first", () => {
  assert.deepEqual(placeRequest(F, parseActionKey("??b")), { position: 2 });
  const rep = flow("[R]\n?R?Push\nS?R?x\nS?R?x\n??done\n");
  assert.deepEqual(placeRequest(rep, parseActionKey("S?R?x")), { position: 1 });
});

Deno.test("placement: a given position is used as is, within the flow", () => {
  const rep = flow("[R]\n?R?Push\nS?R?x\nS?R?x\n??done\n");
  assert.deepEqual(placeRequest(rep, parseActionKey("S?R?x"), 2), { position: 2 });
  assert.ok("error" in placeRequest(rep, parseActionKey("??"), 9));
});

Deno.test("placement: a key matching no step is an error; an empty flow ends at once", () => {
  const r = placeRequest(F, parseActionKey("X?Other?z"));
  assert.ok("error" in r && /no step of flow "F"/.test(r.error));
  const empty = flow("[E]\n");
  assert.deepEqual(placeRequest(empty, parseActionKey("??")), { position: 0 });
  assert.equal(stepKind(empty, 0), "done");
});

Deno.test("nextStep: the flow's end first, then the step limit, then what the step is", () => {
  const flow = parseFlowFile(
    "[F]\n?F?Push\nS?F?a\nS?F@PUBLISH?p\nS?F@ASYNC?w\n??done\n",
    "f.ini",
  ).flows[0];
  assert.equal(nextStep(flow, 1, 0, 100), "run");
  assert.equal(nextStep(flow, 2, 1, 100), "publish");
  assert.equal(nextStep(flow, 3, 2, 100), "pause");
  assert.equal(nextStep(flow, 4, 3, 100), "done");
  assert.equal(nextStep(flow, 9, 3, 100), "done", "past the last step");
  assert.equal(nextStep(flow, 1, 4, 4), "step_limit");
  assert.equal(nextStep(flow, 2, 4, 4), "step_limit", "a @PUBLISH step counts too");
  assert.equal(nextStep(flow, 4, 4, 4), "done", "the end is never cut off");
});
