// A service that handles one @PUBLISH step of the test flow `Svc` and exits right after:
// drain() waits until the Subject has accepted the continuation, then closes, so the
// continuation survives the exit. Prints "ready" once its subscription is active.
import { Client } from "../../src/client/client.ts";

const [subject, publisher] = Deno.args;
const client = await Client.connect({ subject, publisher });
let handled!: () => void;
const once = new Promise<void>((r) => (handled = r));
await client.handle("T?Svc?approve", (v) => {
  queueMicrotask(handled);
  return { ...v, approvedBy: "one-shot" };
}, { flow: "Svc" });
console.log("ready");
await once;
await client.drain();
