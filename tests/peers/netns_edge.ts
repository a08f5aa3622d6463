// The edge host of the network-namespace test (tests/netns_test.ts): a service that sends COUNT
// requests over CURVE, at most WINDOW in flight, and a separate subscriber that counts every final
// publication per request id. Prints `sent N` as it goes, then one JSON line:
// {"sent", "accepted", "finals": {"<id>": n}, "errors"} after a quiet period that would show
// any duplicate.
//
//   deno run -A tests/peers/netns_edge.ts CONFIG_FILE COUNT
import { Client } from "../../src/client/client.ts";
import { loadConfig } from "../../src/config.ts";
import { loadSecurity } from "../../src/roles/security.ts";

const [file, countText] = Deno.args;
const count = Number(countText);
const WINDOW = 100;
const config = await loadConfig({ file });
const security = await loadSecurity(config);
const endpoints = { subject: config.subject_pull_address, publisher: config.integration_manager_pub_address };

// The subscriber: its own connection, its own key (the edge key here), every final publication.
const subscriber = await Client.connect({ ...endpoints, curve: security?.keys });
const finals = new Map<string, number>();
const errors: string[] = [];
const feed = await subscriber.subscribe("Hello~");
void (async () => {
  for await (const p of feed) {
    if (p.action !== "done" && p.action !== "error") continue;
    finals.set(p.id, (finals.get(p.id) ?? 0) + 1);
    if (p.action === "error") errors.push(`${p.id}: ${JSON.stringify(p.error)}`);
  }
})();

const service = await Client.connect({ ...endpoints, curve: security?.keys, requestTimeout: 180_000 });
let sent = 0;
let accepted = 0;
const ids: string[] = [];
async function lane(): Promise<void> {
  while (sent < count) {
    const i = sent++;
    const id = `r${i}`;
    ids.push(id);
    if (sent % 100 === 0) console.log(`sent ${sent}`);
    const p = await service.request("Hello", { name: `n${i}` }, { id });
    if (p.id === id) accepted++;
  }
}
await Promise.all(Array.from({ length: WINDOW }, lane));
// Every request has its final publication at the service: wait until the subscriber saw each too,
// then a quiet period in which a duplicate would show.
const end = performance.now() + 30_000;
while (ids.some((id) => !finals.has(id)) && performance.now() < end) {
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 3000));
console.log(JSON.stringify({ sent, accepted, finals: Object.fromEntries(finals), errors }));
await service.close();
await subscriber.close();
Deno.exit(0);
