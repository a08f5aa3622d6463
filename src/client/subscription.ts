/**
 * What the client does with the publications it receives: each subscription has a topic prefix
 * and a `push`; {@linkcode PublicationStream} is the one `Client.subscribe` hands out,
 * an async iterable of what was pushed to it.
 *
 * @module
 */

import type { Publication } from "../wire/protocol.ts";

/** A subscription of the client: publications whose topic starts with `prefix` go to `push`. */
export interface Subscription {
  /** The topic prefix. */
  readonly prefix: string;
  /** Takes one publication. */
  readonly push: (p: Publication) => void;
  /** Ends the subscription (the client is closing). */
  readonly end?: () => void;
}

/** A subscription read as an async iterable; iteration ends after {@linkcode PublicationStream.end}. */
export class PublicationStream implements Subscription, AsyncIterableIterator<Publication> {
  readonly #queue: Publication[] = [];
  #wake?: () => void;
  #done = false;
  readonly #onEnd: () => void;

  /** Publications on `prefix`; `onEnd` runs when the stream ends (by `end`, `return` or an abort). */
  constructor(readonly prefix: string, onEnd: () => void) {
    this.#onEnd = onEnd;
  }

  /** Queues a publication for the reader. */
  readonly push = (p: Publication): void => {
    this.#queue.push(p);
    this.#wake?.();
  };

  /** Ends the stream: the reader gets what is queued, then the end. */
  readonly end = (): void => {
    this.#done = true;
    this.#onEnd();
    this.#wake?.();
  };

  /** The next publication, once one is pushed. */
  async next(): Promise<IteratorResult<Publication>> {
    while (!this.#queue.length && !this.#done) await new Promise<void>((r) => (this.#wake = r));
    if (this.#queue.length) return { value: this.#queue.shift()!, done: false };
    return { value: undefined, done: true };
  }

  /** Ends the stream (a `break` out of `for await`). */
  return(): Promise<IteratorResult<Publication>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** The stream itself. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Publication> {
    return this;
  }
}
