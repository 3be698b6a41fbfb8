import assert from "node:assert/strict";
import type { Sql } from "../../shared/db.ts";
import { outcomeArgs } from "./outcomes.ts";

Deno.test("done outcomes become array literals; an unknown or malformed tuple id is NULL; the rest go as JSON", () => {
  const sql = { json: (x: unknown) => ({ json: x }) } as unknown as Sql;
  const a = outcomeArgs(sql, [
    { id: "1", at: "(0,5)", state: "done", startMs: 2.5 },
    { id: "2", state: "done" },
    { id: "3", state: "dead", error: "boom", stack: "s", startMs: 1 },
    { id: "4", at: '(0,1)","x', state: "done", startMs: NaN },
    { id: "5", state: "pending", delayMs: 100 },
  ]);
  assert.equal(a.done, "{1,2,4}");
  assert.equal(a.doneAt, '{"(0,5)",NULL,NULL}');
  assert.equal(a.doneStartMs, "{2.5,NULL,NULL}");
  assert.deepEqual(a.others, {
    json: [
      { id: "3", state: "dead", delay_ms: 0, error: "boom", stack: "s", start_ms: 1 },
      { id: "5", state: "pending", delay_ms: 100, error: null, stack: null, start_ms: null },
    ],
  });
  const none = outcomeArgs(sql, []);
  assert.deepEqual([none.done, none.doneAt, none.doneStartMs, none.others], ["{}", "{}", "{}", null]);
});
