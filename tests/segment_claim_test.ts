// What a handler sandbox may answer for a step (src/roles/segment_claim.ts): pure.
import assert from "node:assert/strict";
import { parseFlowFile } from "../src/topic/flow_file.ts";
import { claimProblem, segmentEnd } from "../src/roles/segment_claim.ts";

const flow = (text: string) => parseFlowFile(text, "f.ini").flows[0];

Deno.test("segmentEnd: a segment runs its own sandbox's steps and ends at done, @PUBLISH, @ASYNC, another sandbox's step or an unmapped one", () => {
  // Steps: 0 entry, 1 A, 2 A, 3 B, 4 A@PUBLISH, 5 A, 6 unmapped, 7 A@ASYNC, 8 done.
  const f = flow(
    "[F]\n?F?Push\nX?F?a1\nX?F?a2\nX?F?b\nX?F@PUBLISH?a3\nX?F?a4\nX?F?none\nX?F@ASYNC?a5\n??done\n",
  );
  const owners = [null, 0, 0, 1, 0, 0, null, 0, null];
  assert.deepEqual(segmentEnd(f, owners, 1, 0), { kind: "handoff", pos: 3, to: 1 });
  assert.deepEqual(segmentEnd(f, owners, 3, 1), { kind: "publish", pos: 4 });
  assert.deepEqual(segmentEnd(f, owners, 4, 0), { kind: "error", pos: 6 }, "no handler for step 6");
  assert.deepEqual(segmentEnd(f, owners, 6, 0), { kind: "pause", pos: 7 });
  assert.deepEqual(segmentEnd(f, owners, 7, 0), { kind: "done", pos: 8 });
  // A step past the flow's end is its end.
  assert.deepEqual(segmentEnd(flow("[G]\n?G?Push\nX?G?a\n"), [null, 0], 1, 0), { kind: "done", pos: 2 });
});

Deno.test("claimProblem: a result must end where the segment ends; an error may come anywhere", () => {
  const handoff = { kind: "handoff", pos: 3, to: 1 } as const;
  const done = { kind: "done", pos: 8 } as const;
  assert.equal(claimProblem(handoff, "handoff", 3, 1), undefined);
  assert.equal(claimProblem(handoff, "error", undefined), undefined);
  assert.equal(claimProblem(done, "done", undefined), undefined);
  assert.equal(claimProblem(done, "error", 2), undefined);
  assert.equal(
    claimProblem(handoff, "done", undefined),
    "it answered done where its segment ends at step 3, another sandbox's",
  );
  assert.equal(
    claimProblem(done, "handoff", 5, 1),
    "it answered handoff where its segment ends done at step 8",
  );
  assert.equal(
    claimProblem(handoff, "handoff", 4, 1),
    "it answered handoff at step 4 where its segment ends at step 3",
  );
  assert.equal(
    claimProblem(handoff, "handoff", 3, 2),
    "it handed step 3 to sandbox 2, not to sandbox 1, which maps it",
  );
  assert.equal(
    claimProblem({ kind: "publish", pos: 4 }, "publish", 5),
    "it answered publish at step 5 where its segment ends at step 4",
  );
  assert.equal(
    claimProblem({ kind: "error", pos: 6 }, "done", undefined),
    "it answered done where its segment ends at step 6, which no handler maps",
  );
});
