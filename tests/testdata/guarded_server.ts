// A bare `serveGuarded` server for tests/gateway_connections_test.ts: listens on a free loopback
// port with the connection cap given as the first argument, answers `/counters` with its connection
// counters (JSON) and every other request "ok", prints "listening PORT" and then each warning the
// server gives (one line each).
import { serveGuarded } from "../../src/gateway/http_server.ts";

const s = serveGuarded({
  hostname: "127.0.0.1",
  port: 0,
  maxConnections: Number(Deno.args[0]),
  maxConnectionsPerAddress: 0,
  headerTimeout: 60_000,
  idleTimeout: 60_000,
  warn: (message) => console.log(`warn ${message}`),
}, (req) => new URL(req.url).pathname === "/counters" ? Response.json(s.counters) : new Response("ok"));
console.log(`listening ${s.addr.port}`);
