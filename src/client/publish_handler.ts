/**
 * A service's `@PUBLISH` handler (SPEC §4): which publications it takes, and the continuation it
 * sends back to the Subject: the request at the next position, one more step run (the step limit
 * spans the whole flow), with the handler's result as its values, or a `handler_error` carrying
 * the values it was given when it failed or returned what is not an object.
 *
 * @module
 */

import { type ActionKey, keysMatch, PUBLISH } from "../topic/action_key.ts";
import { checkHandlerResult } from "../topic/result_check.ts";
import type { Handler, Values } from "../handler.ts";
import { logger } from "../log.ts";
import type { Header, Publication } from "../wire/protocol.ts";

/** Whether `p` is a publication of a `@PUBLISH` step that the handler of `key` takes. */
export function takesPublication(key: ActionKey, p: Publication): boolean {
  if (p.decorator !== PUBLISH || p.position === undefined) return false;
  return keysMatch(key, { sender: p.sender, context: p.context, decorator: p.decorator, action: p.action });
}

/** Runs `handler` for `p`; returns the continuation's header and values. Never throws. */
export async function runPublishHandler(
  handler: Handler,
  p: Publication,
): Promise<{ header: Header; values: Values }> {
  let out: Values | undefined;
  let failure: string | undefined;
  const key = { sender: p.sender, context: p.context, decorator: p.decorator, action: p.action };
  try {
    const r = await handler(p.values, {
      key,
      flow: p.flow,
      id: p.id,
      position: p.position!,
      logger: logger("handler", p.flow),
      signal: new AbortController().signal,
    });
    failure = checkHandlerResult(r, key);
    if (failure === undefined) out = r;
  } catch (e) {
    failure = e instanceof Error ? e.message : String(e);
  }
  const header: Header = { v: 1, id: p.id, pos: p.position! + 1, n: (p.n ?? 0) + 1 };
  if (failure !== undefined) header.error = { code: "handler_error", message: failure };
  return { header, values: out ?? p.values };
}
