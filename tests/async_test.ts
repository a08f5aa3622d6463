// @ASYNC flows: pause, durable state, resume (SPEC §4), over real processes.
import assert from "node:assert/strict";
import type { Values } from "../src/handler.ts";
import type { Publication } from "../src/wire/protocol.ts";
import { rolePids } from "../testing/deployment.ts";
import { Reactor } from "../src/zmq/reactor.ts";
import { runCli, RUNTIME_FIXTURE, startDeployment } from "./helpers.ts";

const CORE_FLOWS =
  new URL("../../shared/corpus/digitalpy/digitalpy/core/core_flows.ini", import.meta.url).pathname;
const haveCorpus = await Deno.stat(CORE_FLOWS).then(() => true, () => false);

Deno.test({
  name: "DigitalPy's ServiceManagement_GetServiceTopics, as written in core_flows.ini, runs end to end",
  ignore: !haveCorpus,
  async fn() {
    await using d = await startDeployment({ workers: 2, files: [...RUNTIME_FIXTURE, CORE_FLOWS] });
    await using service = await d.connect();
    await using requester = await d.connect();
    const flow = "ServiceManagement_GetServiceTopics";
    // The service handles the @PUBLISH step by making a sub-request, and resumes the paused
    // flow with the sub-request's reply. Pause and reply may arrive in either order.
    const tokens = new Map<string, string>();
    const replies = new Map<string, Values>();
    const tryResume = (id: string) => {
      if (tokens.has(id) && replies.has(id)) void service.sendResume(tokens.get(id)!, replies.get(id)!);
    };
    await service.handle("Subject?ServiceManagement__GetServiceTopics?get_service_topics", (v, ctx) => {
      void service.request("Three", { for: ctx.id }).then((p) => {
        replies.set(ctx.id, { topics: p.values.trace });
        tryResume(ctx.id);
      });
      return { ...v, asked: true };
    }, { flow });
    const pauses = await service.subscribe(`${flow}~ASYNC~`);
    void (async () => {
      for await (const p of pauses) {
        tokens.set(p.id, p.resume!);
        tryResume(p.id);
      }
    })();
    const finals: Publication[] = [];
    const stream = await requester.subscribe(`${flow}~~~~`);
    const counting = (async () => {
      for await (const p of stream) finals.push(p);
    })();

    const done = await requester.request(flow, { service: "tak" });
    assert.equal(done.topic, `${flow}~~~~done`);
    assert.deepEqual(done.values, { service: "tak", asked: true, topics: ["one", "two", "three"] });
    assert.ok(tokens.has(done.id), "the pause publication carried the original request id and a token");
    await new Promise((r) => setTimeout(r, 200));
    await stream.return!();
    await pauses.return!();
    await counting;
    assert.deepEqual(
      finals.map((p) => [p.action, p.id]),
      [["done", done.id]],
      "exactly one final for the request",
    );
  },
});

Deno.test("100 paused flows survive a SIGKILL of the Subject and all finish after it restarts", async () => {
  await using d = await startDeployment({ workers: 2 });
  await using client = await d.connect();
  const pauses = await client.subscribe("Pause~ASYNC~");
  const requests = Array.from({ length: 100 }, (_, i) => client.request("Pause", { i }, { id: `p-${i}` }));
  const tokens = new Map<string, string>();
  while (tokens.size < 100) {
    const p = (await pauses.next()).value as Publication;
    assert.equal(p.topic, "Pause~ASYNC~T~Pause~wait");
    assert.deepEqual(
      p.values,
      { i: Number(p.id.slice(2)), trace: ["one"] },
      "the result so far is published",
    );
    tokens.set(p.id, p.resume!);
  }
  await pauses.return!();
  const listed = await runCli(["paused", "--json", ...d.flags]);
  assert.equal(JSON.parse(listed.stdout).length, 100);

  const oldPid = await subjectPid(d.dir);
  Deno.kill(oldPid, "SIGKILL");
  let newPid = oldPid;
  while (newPid === oldPid) {
    await new Promise((r) => setTimeout(r, 100));
    newPid = await subjectPid(d.dir).catch(() => oldPid);
  }
  for (const [id, token] of tokens) await client.sendResume(token, { reply: id });
  const results = await Promise.all(requests);
  results.forEach((p, i) => {
    assert.equal(p.action, "done", JSON.stringify(p.error));
    assert.deepEqual(p.values, { i, trace: ["one", "two"], reply: `p-${i}` });
  });
});

Deno.test("a token resumes once; unknown and expired tokens get bad_resume; an expired pause times out", async () => {
  await using d = await startDeployment({ workers: 1, args: ["--async-timeout", "600"] });
  await using client = await d.connect();
  const pauses = await client.subscribe("Pause~ASYNC~");

  const first = client.request("Pause", { n: 1 });
  const token = ((await pauses.next()).value as Publication).resume!;
  const done = await client.resume(token, { more: true });
  assert.equal(done.action, "done");
  assert.deepEqual(done.values, { n: 1, trace: ["one", "two"], more: true });
  assert.equal((await first).id, done.id, "the original request() resolves with the same final");

  const again = await client.resume(token, {});
  assert.equal(again.error?.code, "bad_resume");
  const unknown = await client.resume("Pause~00000000000000000000000000000000~nobody", {});
  assert.equal(unknown.error?.code, "bad_resume");

  const expired = await client.request("Pause", { n: 2 }, { timeout: 10_000 });
  assert.equal(expired.error?.code, "timeout");
  assert.match(expired.error!.message, /not resumed within 600 ms/);
  const late = ((await pauses.next()).value as Publication).resume!;
  assert.equal((await client.resume(late, {})).error?.code, "bad_resume");
  await pauses.return!();

  const cli = await runCli(["send", "Pause", "--resume", late, "--wait", ...d.flags]);
  assert.equal(cli.code, 1);
  assert.equal(JSON.parse(cli.stdout).error.code, "bad_resume");
});

async function subjectPid(dir: string): Promise<number> {
  const [pid] = await rolePids(dir, "subject");
  if (pid === undefined) throw new Error("no live Subject");
  return pid;
}

Deno.test("CLI: send --wait on a flow that pauses prints the pause with its token (exit 4); send --resume TOKEN needs no FLOW and takes --id", async () => {
  await using d = await startDeployment({ workers: 1 });
  const paused = await runCli(["send", "Pause", "--data", '{"q": 1}', "--id", "cli-1", "--wait", ...d.flags]);
  assert.equal(paused.code, 4, paused.stderr);
  const pause = JSON.parse(paused.stdout);
  assert.equal(pause.id, "cli-1");
  assert.equal(pause.topic, "Pause~ASYNC~T~Pause~wait");
  assert.match(pause.resume, /^Pause~[0-9a-f]{32}~cli-1$/);

  // Without --wait: accepted under the given id, printed.
  const sent = await runCli([
    "send",
    "--resume",
    pause.resume,
    "--data",
    '{"r": 2}',
    "--id",
    "res-1",
    ...d.flags,
  ]);
  assert.equal(sent.code, 0, sent.stderr);
  assert.deepEqual(JSON.parse(sent.stdout), { id: "res-1" });

  // With --wait through a resume: the final of the original request.
  const again = await runCli(["send", "Pause", "--id", "cli-2", "--wait", ...d.flags]);
  assert.equal(again.code, 4);
  const token = JSON.parse(again.stdout).resume;
  const done = await runCli(["send", "--resume", token, "--data", '{"r": 3}', "--wait", ...d.flags]);
  assert.equal(done.code, 0, done.stderr);
  assert.deepEqual(JSON.parse(done.stdout).values, { r: 3, trace: ["one", "two"] });
  assert.equal(JSON.parse(done.stdout).id, "cli-2");

  // --through-pauses waits for the final (here the pause times out first: exit 3).
  const through = await runCli([
    "send",
    "Pause",
    "--wait",
    "--through-pauses",
    "--timeout",
    "1500",
    ...d.flags,
  ]);
  assert.equal(through.code, 3);

  const usage = await runCli(["send", ...d.flags]);
  assert.equal(usage.code, 64);
  assert.match(usage.stderr, /missing argument FLOW \(or --resume TOKEN\)/);
});

Deno.test("a request whose values are not a JSON object, at an @ASYNC step, ends with bad_request: it never pauses, so no resume can throw", async () => {
  const dir = await Deno.makeTempDir();
  const flows = `${dir}/first.ini`;
  await Deno.writeTextFile(flows, "[PauseFirst]\n?PauseFirst?Push\nT?PauseFirst@ASYNC?wait\n??done\n");
  await using d = await startDeployment({ workers: 1, files: [...RUNTIME_FIXTURE, flows] });
  await using client = await d.connect();
  const seen = await client.subscribe("PauseFirst~");
  const reactor = new Reactor();
  try {
    const raw = reactor.socket("DEALER");
    await raw.connect(d.subject);
    const enc = new TextEncoder();
    await raw.send([
      enc.encode("PauseFirst~~~~"),
      enc.encode('{"v":1,"id":"not-json-1"}'),
      enc.encode("not json"),
    ]);
    // Then a well-formed request: the Subject still pauses it as before.
    await raw.send([
      enc.encode("PauseFirst~~~~"),
      enc.encode('{"v":1,"id":"json-1"}'),
      enc.encode('{"ok":1}'),
    ]);
    let error: Publication["error"];
    let pausedToken: string | undefined;
    const deadline = setTimeout(() => void seen.return?.(), 15_000); // bounded: ends the loop below
    for await (const p of seen) {
      if (p.id === "not-json-1") {
        assert.equal(p.resume, undefined, "values that are not a JSON object never pause");
        if (p.error) error = p.error;
      }
      if (p.id === "json-1" && p.resume !== undefined) pausedToken = p.resume;
      if (error && pausedToken) break;
    }
    clearTimeout(deadline);
    assert.equal(error?.code, "bad_request");
    assert.match(error!.message, /not a JSON object/);
    assert.ok(pausedToken, "the well-formed request paused");
  } finally {
    await reactor.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("two resume() calls at once with one resume id are copies of one resume: both get the flow's final (the second's wait replaced the first's, which waited out its timeout)", async () => {
  await using d = await startDeployment({ workers: 1 });
  await using client = await d.connect();
  const pauses = await client.subscribe("Pause~ASYNC~");
  const first = client.request("Pause", { n: 2 });
  const token = ((await pauses.next()).value as Publication).resume!;
  const [a, b] = await Promise.all([
    client.resume(token, { more: 1 }, { id: "one-resume", timeout: 10_000 }),
    client.resume(token, { more: 1 }, { id: "one-resume", timeout: 10_000 }),
  ]);
  assert.deepEqual([a.action, b.action], ["done", "done"]);
  assert.equal(a.id, (await first).id);
  assert.deepEqual(b.values, a.values);
});
