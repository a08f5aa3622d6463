/**
 * A service that handles the `@PUBLISH` step of the example `Order` flow: it subscribes to
 * the step's topic, approves orders under 1000, and pushes the flow's continuation back to
 * the Subject. Run it beside `deno task start`:
 *
 *     deno run -A examples/hello/approver.ts
 *
 * @module
 */

import { Client } from "../../src/client/client.ts";
import { loadConfig } from "../../src/config.ts";

const config = await loadConfig();
const client = await Client.connect({
  subject: config.subject_pull_address,
  publisher: config.integration_manager_pub_address,
});
await client.handle(
  "Subject?Order?Approve",
  (values) => ({ ...values, approved: Number(values.total) < 1000 }),
  {
    flow: "Order",
  },
);
console.error("approver: handling Order~PUBLISH~Subject~Order~Approve; Ctrl-C to stop");
const stop = () => client.drain().then(() => Deno.exit(0));
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
