// Handlers for the runtime tests. Each step appends its name to `trace`.
import type { HandlerContext, Values } from "../../../src/handler.ts";

const traced = (name: string) => (v: Values): Values => ({
  ...v,
  trace: [...(Array.isArray(v.trace) ? v.trace : []), name],
});

export const one = traced("one");
export const two = traced("two");
export const three = traced("three");

export function explode(): Values {
  throw new Error("kaboom");
}

export async function sleep(v: Values, ctx: HandlerContext): Promise<Values> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, Number(v.ms ?? 0));
    ctx.signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
  return { ...v, slept: true };
}

export async function whoami(v: Values): Promise<Values> {
  await new Promise((r) => setTimeout(r, Number(v.ms ?? 0)));
  return { ...v, pid: Deno.pid };
}
