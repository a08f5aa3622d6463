/**
 * The floor of the gateway row: a bare `Deno.serve` that reads each POST's body and answers a
 * fixed JSON body as long as the gateway's answer to a bench flow, nothing else (no ZManager).
 * Run as its own process (`deno run -A bench/http_floor.ts PORT`); prints `listening` once it
 * serves. What HTTP/1.1 itself costs on this machine, with the same load generator.
 *
 * @module
 */

/** The gateway's answer to a 3-step bench flow, in shape and size. */
export const FLOOR_BODY = JSON.stringify({
  topic: "Bench3~~~~done",
  flow: "Bench3",
  action: "done",
  id: "0b6f3d2e-5a41-4c39-9f0e-7d2c1a8b4e55",
  values: { n: 1 },
});

if (import.meta.main) {
  const port = Number(Deno.args[0] ?? 8090);
  Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log("listening") }, async (req) => {
    await req.text();
    return new Response(FLOOR_BODY, { headers: { "content-type": "application/json" } });
  });
}
