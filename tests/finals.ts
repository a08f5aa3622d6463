// Counting final publications on a subscription of its own, for the tests that kill the Subject:
// how many each request got, and a sentinel request that proves no late duplicate is still coming.
import assert from "node:assert/strict";
import { roleStats } from "../testing/deployment.ts";
import type { Client } from "../src/client/client.ts";
import type { Deployment } from "./helpers.ts";

/** Final publications counted per request id (see {@linkcode countFinals}). */
export interface FinalsWatch {
  /** Finals seen, by request id. */
  readonly finals: Map<string, number>;
  /** Resolves once the watcher has seen a final for `id`. */
  seen(id: string): Promise<void>;
  /** Resolves once the watcher has seen finals for `n` requests. */
  count(n: number): Promise<void>;
  /** Stops watching. */
  close(): Promise<void>;
}

/** Counts final publications per request id on a subscription of its own (its own client). */
export async function countFinals(d: Deployment, flow: string): Promise<FinalsWatch> {
  const watcher = await d.connect();
  const finals = new Map<string, number>();
  const waiting = new Map<string, () => void>();
  const counts: { n: number; reached: () => void }[] = [];
  const stream = await watcher.subscribe(`${flow}~~~~`);
  const counting = (async () => {
    for await (const p of stream) {
      // A final published again for a copy of its request (`keep`) is not a second run.
      if ((p.action !== "done" && p.action !== "error") || p.replay) continue;
      finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
      waiting.get(p.id)?.();
      for (const c of counts) if (finals.size >= c.n) c.reached();
    }
  })();
  return {
    finals,
    seen: (id: string) => new Promise<void>((r) => finals.has(id) ? r() : waiting.set(id, r)),
    count: (n: number) => new Promise<void>((r) => finals.size >= n ? r() : counts.push({ n, reached: r })),
    close: async () => {
      await stream.return!();
      await counting;
      await watcher.close();
    },
  };
}

/**
 * Waits until the (new) Subject holds nothing (its counters are written every second), then sends
 * one more request and waits for the watcher to see its final: the IM publishes in order what the
 * Subject sends it, so a duplicate final of an earlier request would have been seen by then.
 */
export async function settle(
  d: Deployment,
  client: Client,
  seen: (id: string) => Promise<void>,
  flow: string,
): Promise<string> {
  for (let i = 0; i < 120; i++) {
    const s = await roleStats(d.dir, "subject").catch(() => undefined);
    if (s && s.inFlight === 0 && s.pending === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const id = `sentinel-${crypto.randomUUID()}`;
  const watched = seen(id);
  assert.equal((await client.request(flow, { ms: 0 }, { id })).action, "done");
  await watched;
  return id;
}
