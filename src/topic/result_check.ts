/**
 * What a handler may return (an object, {@linkcode checkHandlerResult}: the worker and the
 * client's `@PUBLISH` handlers check it alike), and what the Subject accepts from a worker as the
 * result of a step it sent it (PROTOCOL.md, _Workers_). A worker is a trust boundary (it may run on another host, or be another
 * implementation): a result must be for the request of the step, and its topic must be one the
 * flow can publish at that point, so a worker cannot publish on arbitrary topics or for other
 * requests. Pure: the Subject wires it to its sockets.
 *
 * @module
 */

import { type ActionKey, ASYNC, formatActionKey, PUBLISH } from "./action_key.ts";
import type { Flow } from "./flow_file.ts";
import type { Header, TopicFields } from "../wire/protocol.ts";

/**
 * Why a handler's return value cannot go on as the request's values (it must be a JSON object,
 * not an array or `null`), or `undefined` when it can. `key` is the step's, for the message.
 *
 * @example
 * ```ts
 * import { parseActionKey } from "./action_key.ts";
 * import { checkHandlerResult } from "./result_check.ts";
 * const key = parseActionKey("S?F?a");
 * checkHandlerResult({ ok: true }, key); // undefined
 * checkHandlerResult([1], key); // "handler for S?F?a returned an array, not an object"
 * ```
 */
export function checkHandlerResult(value: unknown, key: ActionKey): string | undefined {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return undefined;
  const what = Array.isArray(value) ? "an array" : value === null ? "null" : typeof value;
  return `handler for ${formatActionKey(key)} returned ${what}, not an object`;
}

/** A result's kind, as a batch record carries it. */
export type ResultKind = "done" | "publish" | "pause" | "error";

/**
 * Why a worker's result cannot be taken, or `undefined` when it can.
 *
 * @param kind the kind the record claims
 * @param fields the result's topic, parsed (`undefined`: not five fields)
 * @param header the result's header, decoded (a string: why it could not be)
 * @param stepId the request id of the step the result answers
 * @param flow the flow the step belongs to
 *
 * @example
 * ```ts
 * import { parseFlowFile } from "./flow_file.ts";
 * import { checkResult } from "./result_check.ts";
 * const flow = parseFlowFile("[F]\n?F?Push\nS?F?a\n??done\n", "f.ini").flows[0];
 * const done = { flow: "F", decorator: "", sender: "", context: "", action: "done" };
 * checkResult("done", done, { v: 1, id: "r1" }, "r1", flow); // undefined
 * checkResult("done", done, { v: 1, id: "r2" }, "r1", flow); // "the result is for request ..."
 * ```
 */
export function checkResult(
  kind: ResultKind | undefined,
  fields: TopicFields | undefined,
  header: Header | string,
  stepId: string,
  flow: Flow,
): string | undefined {
  if (kind === undefined) return "unknown result kind";
  if (!fields) return "the topic is not five fields joined by ~";
  if (typeof header === "string") return `the header is not valid (${header})`;
  if (header.id !== stepId) {
    return `the result is for request ${JSON.stringify(header.id)}, the step for ${JSON.stringify(stepId)}`;
  }
  if (fields.flow !== flow.name) {
    return `the topic names flow "${fields.flow}", the step is of "${flow.name}"`;
  }
  const final = fields.decorator === "" && fields.sender === "" && fields.context === "";
  if (kind === "done" || kind === "error") {
    if (!final || fields.action !== kind) {
      return `a ${kind} result must be published on ${flow.name}~~~~${kind}`;
    }
    if (kind === "error" && !header.error) return "an error result has no error in its header";
    return undefined;
  }
  // publish and pause: the topic of the flow's @PUBLISH or @ASYNC step at the header's position
  const step = header.pos === undefined ? undefined : flow.steps[header.pos];
  const decorator = kind === "publish" ? PUBLISH : ASYNC;
  if (!step || step.key.decorator !== decorator) {
    return `a ${kind} result must name (pos) a @${decorator} step of ${flow.name}`;
  }
  const k = step.key;
  if (
    fields.decorator !== k.decorator || fields.sender !== k.sender || fields.context !== k.context ||
    fields.action !== k.action
  ) return `the topic is not the one of step ${header.pos} of ${flow.name}`;
  return undefined;
}
