// Handlers used by the loader tests: a plain function, a class member that needs `this`,
// and an export that is not a function.
export function echo(values: Record<string, unknown>): Record<string, unknown> {
  return values;
}

export class Greeter {
  static greeting = "hello";
  static greet(values: Record<string, unknown>): Record<string, unknown> {
    return { ...values, greeting: this.greeting };
  }
}

export const notAFunction = 42;
