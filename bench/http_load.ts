/**
 * The HTTP load generator of the gateway row: `connections` raw keep-alive TCP connections
 * (`Deno.connect`), each writing one pre-encoded HTTP/1.1 request, reading its response (only
 * the status line and `Content-Length` are parsed), and writing the next: a closed loop, one
 * request in flight per connection, as a browser or `fetch` keeps HTTP/1.1 connections (no
 * pipelining).
 *
 * Why not `fetch` or autocannon: `fetch` (Deno's hyper client: a `Request`, a `Response`, header
 * maps and a body stream per request) cost the bench's process about as much CPU per request as
 * the gateway itself, on the same 2 cores; autocannon (npm) runs only under Node and would add a
 * Node process to the bench. Writing bytes and reading bytes is what any load generator does at
 * its core, and this one's cost per request is measured beside the figures (`generatorCores`).
 *
 * @module
 */

/** What {@linkcode httpClosedLoop} measured. */
export interface HttpLoadRun {
  /** Milliseconds per request, ascending. */
  readonly times: Float64Array;
  /** Requests answered with another status than 200, or lost with their connection. */
  readonly failed: number;
  /** Seconds measured. */
  readonly seconds: number;
}

/** What to send, where, how hard. */
export interface HttpLoadOptions {
  readonly hostname: string;
  readonly port: number;
  /** The request path, e.g. `/v1/flows/Bench3`. */
  readonly path: string;
  /** The POST body. */
  readonly body: string;
  /** Concurrent keep-alive connections. */
  readonly connections: number;
  /** Seconds the loop runs. */
  readonly seconds: number;
}

const CR = 0x0d, LF = 0x0a;
const latin1 = new TextDecoder("latin1");

/** The end of the header block (index after `\r\n\r\n`) in `b[0..n)`, or -1. */
function headerEnd(b: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (b[i] === LF && b[i - 1] === CR && b[i - 2] === LF && b[i - 3] === CR) return i + 1;
  }
  return -1;
}

/**
 * The status and body length of a response head (`HTTP/1.1 200 OK\r\n...`); throws on a head
 * without `Content-Length` (a chunked body: the gateway's answers all have a length).
 */
export function parseHead(head: string): { status: number; length: number } {
  const status = Number(head.slice(9, 12));
  const m = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
  if (!m) throw new Error(`a response without Content-Length: ${JSON.stringify(head.slice(0, 200))}`);
  return { status, length: Number(m[1]) };
}

/**
 * Runs the closed loop for `seconds`; returns each request's time (from writing it to having
 * read its whole response) and the failures.
 */
export async function httpClosedLoop(o: HttpLoadOptions): Promise<HttpLoadRun> {
  const request = new TextEncoder().encode(
    `POST ${o.path} HTTP/1.1\r\nHost: ${o.hostname}:${o.port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${new TextEncoder().encode(o.body).length}\r\n\r\n${o.body}`,
  );
  const times: number[] = [];
  let failed = 0;
  const t0 = performance.now();
  const until = t0 + o.seconds * 1000;
  const connections = await Promise.all(
    Array.from({ length: o.connections }, () => Deno.connect({ hostname: o.hostname, port: o.port })),
  );
  await Promise.all(connections.map(async (conn) => {
    conn.setNoDelay(true);
    let buf = new Uint8Array(16 * 1024);
    try {
      while (performance.now() < until) {
        const t = performance.now();
        for (let w = 0; w < request.length;) w += await conn.write(request.subarray(w));
        let n = 0;
        let end = -1;
        let need = Infinity;
        let status = 0;
        while (n < need) {
          if (n === buf.length) {
            const bigger = new Uint8Array(buf.length * 2);
            bigger.set(buf);
            buf = bigger;
          }
          const r = await conn.read(buf.subarray(n));
          if (r === null) throw new Error("the server closed the connection");
          n += r;
          if (end < 0) {
            end = headerEnd(buf, n);
            if (end >= 0) {
              const h = parseHead(latin1.decode(buf.subarray(0, end)));
              status = h.status;
              need = end + h.length;
            }
          }
        }
        if (n > need) throw new Error("more bytes than one response (the server does not pipeline)");
        if (status !== 200) failed++;
        times.push(performance.now() - t);
      }
    } catch (e) {
      failed++;
      if (performance.now() < until) console.error(`http load: ${(e as Error).message}`);
    } finally {
      conn.close();
    }
  }));
  return {
    times: new Float64Array(times).sort(),
    failed,
    seconds: (performance.now() - t0) / 1000,
  };
}
