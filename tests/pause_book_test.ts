// The Subject's pause book (src/roles/pause_book.ts): pure decisions over the paused-flow store
// (SQLite in memory here), on an injected clock; no sockets.
import assert from "node:assert/strict";
import { mergedValues, PauseBook, type Resume } from "../src/roles/pause_book.ts";
import { PausedStore } from "../src/roles/paused_store.ts";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { type Header, utf8 } from "../src/wire/protocol.ts";

const flow = parseFlowFile("[F]\n?F?Push\nS?F@ASYNC?wait\nS?F?b\n??done\n", "f.ini").flows[0];
const TIMEOUT = 1000;

function setup() {
  const clock = { now: 1_000_000 };
  const store = new PausedStore(":memory:");
  const flows = new Map([["F", flow]]);
  const book = new PauseBook({ store, flows, timeout: TIMEOUT, now: () => clock.now });
  /** Another book over the same store and clock, as a Subject incarnation `incarnation` would have it. */
  const bookIn = (incarnation: string, rerunEnded = false) =>
    new PauseBook({ store, flows, timeout: TIMEOUT, now: () => clock.now, incarnation, rerunEnded });
  return { clock, store, flows, book, bookIn };
}

/** A resume message's header. */
const resumeHeader = (token: string, id = "resume-1"): Header => ({ v: 1, id, resume: token });

function resumed(r: Resume) {
  assert.equal(r.kind, "resumed", JSON.stringify(r));
  return r as Extract<Resume, { kind: "resumed" }>;
}

Deno.test("pause book: a pause is saved until timeout from now; its resume goes on with the values merged", () => {
  const { clock, store, book } = setup();
  const token = book.pause("F", 1, "r1", 2, '{"a":1,"b":1}');
  assert.match(token, /^F~[0-9a-f]{32}~r1$/);
  assert.equal(book.count, 1);
  assert.deepEqual(store.list(), [{
    token,
    id: "r1",
    flow: "F",
    position: 1,
    n: 2,
    values: '{"a":1,"b":1}',
    pausedAt: clock.now,
    deadline: clock.now + TIMEOUT,
  }]);
  clock.now += TIMEOUT - 1;
  const r = resumed(book.resume("F", resumeHeader(token), utf8('{"b":2,"c":3}')));
  assert.equal(r.flow, flow);
  assert.equal(r.paused.id, "r1");
  assert.equal(mergedValues(r.paused, r.added), '{"a":1,"b":2,"c":3}');
  assert.equal(book.count, 0);
});

Deno.test("pause book: of two resumes racing for one token, exactly one takes it; the other is a bad_resume", () => {
  const { book } = setup();
  const token = book.pause("F", 1, "r1", 0, "{}");
  const outcomes = [
    book.resume("F", resumeHeader(token, "x"), utf8("{}")),
    book.resume("F", resumeHeader(token, "y"), utf8("{}")),
  ];
  assert.deepEqual(outcomes.map((o) => o.kind), ["resumed", "error"]);
  const lost = outcomes[1] as Extract<Resume, { kind: "error" }>;
  assert.equal(lost.paused, undefined, "the loser took no token");
  assert.deepEqual(lost.error, {
    flow: "F",
    header: resumeHeader(token, "y"),
    values: utf8("{}"),
    code: "bad_resume",
    message: "resume token unknown, expired or already used",
  });
});

Deno.test("pause book: resume values that are not a JSON object are a bad_request and leave the token unused", () => {
  const { book } = setup();
  const token = book.pause("F", 1, "r1", 0, "{}");
  const bad = book.resume("Other", resumeHeader(token), utf8("[1]"));
  assert.equal(bad.kind, "error");
  assert.deepEqual((bad as Extract<Resume, { kind: "error" }>).error, {
    flow: "Other",
    header: resumeHeader(token),
    values: undefined,
    code: "bad_request",
    message: "the resume values are not a JSON object",
  });
  resumed(book.resume("F", resumeHeader(token), utf8("{}")));
});

Deno.test("pause book: a malformed token and an unknown one are told apart", () => {
  const { book } = setup();
  const malformed = book.resume("F", resumeHeader("nope"), utf8("{}"));
  const unknown = book.resume("F", resumeHeader(`F~${"0".repeat(32)}~r9`), utf8("{}"));
  assert.equal(
    malformed.kind === "error" && malformed.error.message,
    "malformed resume token (expected Flow~<32 hex>~<request id>)",
  );
  assert.equal(
    unknown.kind === "error" && unknown.error.message,
    "resume token unknown, expired or already used",
  );
  assert.equal(
    book.resume("F", { v: 1, id: "n", resume: 42 as unknown as string }, utf8("{}")).kind,
    "error",
    "a token that is not a string",
  );
});

Deno.test("pause book: at its deadline a paused flow expires with a timeout error; its token no longer resumes it", () => {
  const { clock, book } = setup();
  const token = book.pause("F", 1, "r1", 3, '{"k":1}');
  book.pause("F", 1, "r2", 0, "{}");
  clock.now += TIMEOUT - 1;
  assert.deepEqual(book.expire(), []);
  clock.now += 1;
  // At the deadline the token is refused even before the expiry sweep runs.
  const late = book.resume("F", resumeHeader(token), utf8("{}"));
  assert.equal(late.kind === "error" && late.error.code, "bad_resume");
  assert.deepEqual(book.expire(), [
    {
      flow: "F",
      header: { id: "r1", pos: 1 },
      values: utf8('{"k":1}'),
      code: "timeout",
      message: `paused flow was not resumed within ${TIMEOUT} ms`,
    },
    {
      flow: "F",
      header: { id: "r2", pos: 1 },
      values: utf8("{}"),
      code: "timeout",
      message: `paused flow was not resumed within ${TIMEOUT} ms`,
    },
  ]);
  assert.equal(book.count, 0);
  assert.deepEqual(book.expire(), [], "each expires once");
});

Deno.test("pause book: a resume of a flow no longer loaded uses its token and ends it with unknown_flow", () => {
  const { store, book } = setup();
  const token = book.pause("Gone", 1, "r1", 0, '{"a":1}');
  const r = book.resume("F", resumeHeader(token), utf8("{}"));
  assert.equal(r.kind, "error");
  const e = r as Extract<Resume, { kind: "error" }>;
  assert.equal(e.paused?.id, "r1", "the token was taken: its sender is told so");
  assert.deepEqual(e.error, {
    flow: "Gone",
    header: { id: "r1" },
    values: utf8('{"a":1}'),
    code: "unknown_flow",
    message: 'flow "Gone" is no longer loaded',
  });
  assert.equal(store.count(), 0);
});

Deno.test("pause book: paused values that are not a JSON object end the flow with bad_resume, never a throw", () => {
  const { clock, store, book } = setup();
  // What the Subject never pauses with (it refuses such values with bad_request), but a store
  // written by something else may hold.
  const token = book.pause("F", 1, "r9", 1, "not json");
  const taken = store.take(token, { resume: "x", incarnation: "i", keepUntil: clock.now + 1 }, clock.now);
  assert.equal(taken.kind === "taken" && mergedValues(taken.paused, { a: 1 }), undefined);
  const again = book.pause("F", 1, "r9", 1, "[1,2]");
  const r = book.resume("F", resumeHeader(again), utf8('{"a":1}'));
  assert.equal(r.kind, "error");
  const e = (r as Extract<Resume, { kind: "error" }>).error;
  assert.equal(e.code, "bad_resume");
  assert.deepEqual(e.header, { id: "r9" });
  assert.match(e.message, /paused with are not a JSON object/);
});

Deno.test("pause book: the resume that took a token takes it again in a later Subject incarnation; others never; a flow paused again finishes it", () => {
  const { clock, store, bookIn: book } = setup();
  const first = book("i1");
  const token = first.pause("F", 1, "r1", 1, '{"a":1}');
  assert.equal(resumed(first.resume("F", resumeHeader(token, "res-a"), utf8('{"b":2}'))).paused.id, "r1");
  assert.deepEqual(first.resume("F", resumeHeader(token, "res-a"), utf8("{}")), { kind: "repeat", id: "r1" });
  // The Subject "i1" died while the flow ran; its successor:
  const second = book("i2");
  const other = second.resume("F", resumeHeader(token, "res-b"), utf8("{}"));
  assert.equal(other.kind === "error" && other.error.code, "bad_resume", "another resume is refused");
  const again = resumed(second.resume("F", resumeHeader(token, "res-a"), utf8('{"b":2}')));
  assert.equal(again.values, '{"a":1,"b":2}', "the flow goes on from its @ASYNC step, as the first time");
  // Past the pause's first deadline the running flow's token is not expired by the incarnation running it…
  clock.now += TIMEOUT;
  assert.deepEqual(second.expire(), []);
  // …and once its flow ended, the same resume is a repeat there.
  second.finish(token);
  assert.deepEqual(second.resume("F", resumeHeader(token, "res-a"), utf8("{}")), {
    kind: "repeat",
    id: "r1",
  });
  // A flow that pauses again finishes the token that ran it to that pause, for every incarnation.
  const next = second.pause("F", 1, "r2", 1, "{}");
  resumed(second.resume("F", resumeHeader(next, "res-c"), utf8("{}")));
  second.pause("F", 1, "r2", 3, "{}", undefined, next);
  assert.deepEqual(book("i3").resume("F", resumeHeader(next, "res-c"), utf8("{}")), {
    kind: "repeat",
    id: "r2",
  });
  store.close();
});

Deno.test("pause book: a resumed flow whose Subject died, its resume not sent again, times out naming that resume", () => {
  const { clock, store, bookIn } = setup();
  const first = bookIn("i1");
  const token = first.pause("F", 1, "r1", 1, '{"a":1}');
  clock.now += TIMEOUT / 2;
  resumed(first.resume("F", resumeHeader(token, "res-a"), utf8("{}")));
  const second = bookIn("i2");
  clock.now += TIMEOUT - 1;
  assert.deepEqual(second.expire(), [], "kept for timeout ms from the take");
  clock.now += 1;
  assert.deepEqual(second.expire(), [{
    flow: "F",
    header: { id: "r1", pos: 1 },
    values: utf8('{"a":1}'),
    code: "timeout",
    message:
      `resumed flow was lost with the Subject that ran it, and its resume ("res-a") was not sent again within ${TIMEOUT} ms`,
  }]);
  store.close();
});

Deno.test("pause book: a resume sent again after its flow ended is a repeat, unless rerunEnded (the IM in the Subject's process)", () => {
  const { store, bookIn: book } = setup();
  for (const rerunEnded of [false, true]) {
    const first = book(`i1-${rerunEnded}`, rerunEnded);
    const token = first.pause("F", 1, `r-${rerunEnded}`, 1, "{}");
    resumed(first.resume("F", resumeHeader(token, "res"), utf8("{}")));
    first.finish(token);
    const again = book(`i2-${rerunEnded}`, rerunEnded).resume("F", resumeHeader(token, "res"), utf8("{}"));
    assert.equal(again.kind, rerunEnded ? "resumed" : "repeat");
  }
  store.close();
});
