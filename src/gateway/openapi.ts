/**
 * The gateway's OpenAPI 3.1 document: one `POST /v1/flows/{flow}` operation per loaded flow,
 * with the status table of {@linkcode ERROR_STATUS}. Pure.
 *
 * @module
 */

import type { Flow } from "../topic/flow_file.ts";
import { formatActionKey } from "../topic/action_key.ts";
import { ERROR_STATUS } from "./status.ts";

const PUBLICATION = {
  type: "object",
  required: ["topic", "flow", "action", "id", "values"],
  properties: {
    topic: { type: "string" },
    flow: { type: "string" },
    sender: { type: "string" },
    context: { type: "string" },
    decorator: { type: "string" },
    action: { type: "string" },
    id: { type: "string" },
    values: { type: "object" },
    error: {
      type: "object",
      properties: { code: { type: "string", enum: Object.keys(ERROR_STATUS) }, message: { type: "string" } },
    },
    resume: { type: "string", description: "the token that resumes a paused flow" },
  },
};

/** Statuses every run operation may answer with, beyond 200 and 202. */
function errorResponses(): Record<string, unknown> {
  const byStatus = new Map<number, string[]>();
  for (const [code, status] of Object.entries(ERROR_STATUS)) {
    byStatus.set(status, [...byStatus.get(status) ?? [], code]);
  }
  byStatus.set(400, [...byStatus.get(400) ?? [], "body not a JSON object"]);
  const out: Record<string, unknown> = {};
  for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    out[String(status)] = {
      description: `error publication: ${codes.join(", ")}`,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Publication" } } },
    };
  }
  out["401"] = { description: "no or unknown bearer token (when http_tokens is set)" };
  out["403"] = { description: "the token may not use this flow" };
  out["413"] = { description: "body over http_body_limit or max_message_size" };
  out["429"] = { description: "over the token's rate; see Retry-After" };
  return out;
}

/**
 * The OpenAPI 3.1 document of a gateway serving `flows`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openApiDocument } from "./openapi.ts";
 * const doc = openApiDocument([{ name: "Hello", file: "f.ini", line: 1, steps: [] }]);
 * assert.equal(doc.openapi, "3.1.0");
 * assert.ok("/v1/flows/Hello" in doc.paths);
 * ```
 */
export function openApiDocument(
  flows: Iterable<Flow>,
): { openapi: string; paths: Record<string, unknown>; [k: string]: unknown } {
  const paths: Record<string, unknown> = {};
  for (const f of flows) {
    paths[`/v1/flows/${encodeURIComponent(f.name)}`] = {
      post: {
        operationId: `run_${f.name.replace(/[^A-Za-z0-9_]/g, "_")}`,
        summary: `Run flow ${f.name}`,
        description: `Steps: ${f.steps.map((s) => formatActionKey(s.key)).join(" → ") || "(none)"}. ` +
          `Answers with the final publication (as \`cli.ts send --wait\` prints it).`,
        parameters: [
          {
            name: "Idempotency-Key",
            in: "header",
            required: false,
            description:
              "names the request (its id: the key, `~`, 32 hex digits scoping it to the token and flow): a retried POST runs once",
            schema: { type: "string", maxLength: 200 },
          },
          {
            name: "wait",
            in: "query",
            required: false,
            description: "0: answer 202 with the request id once the Subject accepted it",
            schema: { type: "string", enum: ["0", "1"] },
          },
          {
            name: "key",
            in: "query",
            required: false,
            description: "the action key the request names (default: the flow's entry)",
            schema: { type: "string" },
          },
        ],
        requestBody: {
          required: false,
          content: { "application/json": { schema: { type: "object" } } },
        },
        responses: {
          "200": {
            description: "the `done` publication",
            content: { "application/json": { schema: { $ref: "#/components/schemas/Publication" } } },
          },
          "202": {
            description:
              "accepted (`?wait=0`: `{id}`), or paused at an @ASYNC step (the pause publication; " +
              "`Location` is its resume URL)",
          },
          ...errorResponses(),
        },
      },
    };
  }
  paths["/v1/resume/{token}"] = {
    post: {
      operationId: "resume",
      summary: "Resume a flow paused at an @ASYNC step, with the body's values merged",
      parameters: [{ name: "token", in: "path", required: true, schema: { type: "string" } }],
      requestBody: { required: false, content: { "application/json": { schema: { type: "object" } } } },
      responses: { "200": { description: "the final publication" }, ...errorResponses() },
    },
  };
  return {
    openapi: "3.1.0",
    info: { title: "ZManager gateway", version: "1" },
    paths,
    components: { schemas: { Publication: PUBLICATION } },
  };
}
