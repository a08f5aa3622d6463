import assert from "node:assert/strict";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { checkResult } from "../src/topic/result_check.ts";
import { parseTopic } from "../src/wire/protocol.ts";

const flow = parseFlowFile(
  "[F]\n?F?Push\nS?F?a\nS?F@PUBLISH?ask\nS?F@ASYNC?wait\n??done\n",
  "f.ini",
).flows[0];
const t = (topic: string) => parseTopic(topic);

Deno.test("checkResult: finals of the step's request on the flow's final topics are taken", () => {
  assert.equal(checkResult("done", t("F~~~~done"), { v: 1, id: "r" }, "r", flow), undefined);
  const err = { v: 1, id: "r", error: { code: "handler_error" as const, message: "x" } };
  assert.equal(checkResult("error", t("F~~~~error"), err, "r", flow), undefined);
  assert.equal(
    checkResult("publish", t("F~PUBLISH~S~F~ask"), { v: 1, id: "r", pos: 2 }, "r", flow),
    undefined,
  );
  assert.equal(checkResult("pause", t("F~ASYNC~S~F~wait"), { v: 1, id: "r", pos: 3 }, "r", flow), undefined);
});

Deno.test("checkResult: another request, another flow, a topic the flow cannot publish are refused", () => {
  assert.match(checkResult("done", t("F~~~~done"), { v: 1, id: "other" }, "r", flow)!, /for request "other"/);
  assert.match(checkResult("done", t("G~~~~done"), { v: 1, id: "r" }, "r", flow)!, /names flow "G"/);
  assert.match(checkResult("done", t("F~~S~F~a"), { v: 1, id: "r" }, "r", flow)!, /F~~~~done/);
  assert.match(checkResult("done", t("F~~~~error"), { v: 1, id: "r" }, "r", flow)!, /F~~~~done/);
  assert.match(checkResult("error", t("F~~~~error"), { v: 1, id: "r" }, "r", flow)!, /no error/);
  assert.match(
    checkResult("publish", t("F~PUBLISH~S~F~steal"), { v: 1, id: "r", pos: 2 }, "r", flow)!,
    /not the one of step 2/,
  );
  assert.match(
    checkResult("publish", t("F~PUBLISH~S~F~ask"), { v: 1, id: "r", pos: 1 }, "r", flow)!,
    /@PUBLISH/,
  );
  assert.match(checkResult("publish", t("F~PUBLISH~S~F~ask"), { v: 1, id: "r" }, "r", flow)!, /@PUBLISH/);
  assert.match(checkResult("pause", t("F~ASYNC~S~F~wait"), { v: 1, id: "r", pos: 2 }, "r", flow)!, /@ASYNC/);
  assert.match(checkResult(undefined, t("F~~~~done"), { v: 1, id: "r" }, "r", flow)!, /kind/);
  assert.match(checkResult("done", undefined, { v: 1, id: "r" }, "r", flow)!, /five fields/);
  assert.match(checkResult("done", t("F~~~~done"), "bad_header", "r", flow)!, /header/);
});
