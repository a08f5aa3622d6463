// Handlers that stamp their code's version (the reload tests rewrite STAMP between reloads).
export const STAMP = "v1";

type Values = Record<string, unknown>;

export function one(values: Values): Values {
  return { ...values, one: STAMP };
}

export function two(values: Values): Values {
  return { ...values, two: STAMP };
}

export function three(values: Values): Values {
  return { ...values, three: STAMP };
}

export async function sleep(values: Values): Promise<Values> {
  await new Promise((r) => setTimeout(r, Number(values.ms ?? 0)));
  return values;
}
