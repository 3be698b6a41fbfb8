import assert from "node:assert/strict";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { runInSandbox } from "./sandbox.ts";
import { DEMO_CODE, dispatchSeed } from "./seed.ts";

Deno.test("the dispatch demo seed is idempotent and its table changes enqueue the demo function", async () => {
  await using db = await createTestDatabase();
  const ctx = { sql: db.sql, env: {}, say: () => {} };
  await dispatchSeed.run(ctx);
  await dispatchSeed.run(ctx);
  assert.equal((await db.sql`select count(*)::int as n from control.dispatch_schedules`)[0].n, 1);
  assert.equal((await db.sql`select count(*)::int as n from control.dispatch_triggers`)[0].n, 1);
  await db.sql`insert into public.dispatch_demo (message) values ('hi')`;
  const [ev] = await db.sql`select id::text, op, row_id, new_row from control.dispatch_events`;
  assert.equal(ev.op, "insert");
  const r = await runInSandbox({
    code: DEMO_CODE,
    timeoutMs: 30_000,
    sql: db.sql,
    event: {
      id: ev.id,
      function: "demo_log",
      source: "trigger",
      table: "public.dispatch_demo",
      op: "insert",
      row_id: ev.row_id,
      new: ev.new_row,
      old: null,
      attempt: 1,
    },
  });
  assert.equal(r.ok, true);
  const [log] = await db.sql`select op, message from public.dispatch_demo_log`;
  assert.deepEqual({ ...log }, { op: "insert", message: "hi" });
});
