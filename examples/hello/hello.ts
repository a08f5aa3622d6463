/**
 * Handlers of the bundled example component. A handler takes the request's values and
 * returns the values of the next step.
 *
 * @module
 */

import type { HandlerContext, Values } from "../../src/handler.ts";

/** Handlers reached as members of a class are called with the class as `this`. */
export class Hello {
  /** The greeting used by {@linkcode Hello.greet}. */
  static salutation = "Hello";

  /** Step 1 of `Hello`: greet `name`. */
  static greet(values: Values): Values {
    const name = typeof values.name === "string" && values.name ? values.name : "world";
    return { ...values, greeting: `${this.salutation}, ${name}!` };
  }

  /** Step 2 of `Hello`: count the greeting's letters. */
  static measure(values: Values): Values {
    return { ...values, letters: String(values.greeting ?? "").replace(/[^\p{L}]/gu, "").length };
  }

  /** Step 3 of `Hello`: say who answered. */
  static signOff(values: Values, context: HandlerContext): Values {
    return { ...values, answeredBy: `worker ${Deno.pid}`, flow: context.flow };
  }
}

/** Step 1 of `Order`: price the items (`[{ sku, qty, price }]`). */
export function price(values: Values): Values {
  const items = Array.isArray(values.items) ? values.items as { qty?: number; price?: number }[] : [];
  const total = items.reduce((sum, i) => sum + Number(i.qty ?? 1) * Number(i.price ?? 0), 0);
  if (!Number.isFinite(total)) throw new RangeError("item prices must be numbers");
  return { ...values, total };
}

/** Step 3 of `Order`: confirm an approved order. */
export function confirm(values: Values): Values {
  return { ...values, status: values.approved ? "confirmed" : "rejected" };
}
