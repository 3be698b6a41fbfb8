import assert from "node:assert/strict";
import { createApp } from "../../../app.tsx";
import { createLogger } from "../../../../shared/log.ts";
import { createTestDatabase } from "../../../../shared/testing/mod.ts";

Deno.test("the replication admin API lists pipelines, shows one with tables and lag, and pauses and resumes", async () => {
  await using db = await createTestDatabase();
  const app = createApp({ sql: db.sql, adminToken: "tok", log: createLogger("web", { level: "error" }) });
  const call = async (method: string, path: string) => {
    const res = await app.request(`/api/admin/replication${path}`, {
      method,
      headers: { authorization: "Bearer tok" },
    });
    return { status: res.status, body: await res.json() };
  };
  assert.equal((await app.request("/api/admin/replication/pipelines")).status, 401);
  await db.sql`insert into control.replicate_pipelines (name, slot_name, publication, target_kind, bucket,
                  retained_wal_bytes, wal_warn_bytes, lag_bytes)
                values ('main', 'wharf_main', 'wharf_main', 'postgres', 'b', 2048, 1024, 10)`;
  await db
    .sql`insert into control.replicate_tables (pipeline, table_name, rows_applied) values ('main', 'public.a', 5)`;
  await db.sql`insert into control.replicate_lag_history (pipeline, at, lag_bytes, lag_seconds)
               values ('main', now() - interval '2 minutes', 100, 1.5), ('main', now() - interval '1 minute', 50, 0.5),
                      ('main', now() - interval '3 hours', 999, 9)`;

  const list = await call("GET", "/pipelines");
  assert.equal(list.status, 200);
  assert.equal(list.body.length, 1);
  assert.equal(list.body[0].wal_warning, true);

  const one = await call("GET", "/pipelines/main");
  assert.equal(one.body.tables[0].table_name, "public.a");
  assert.equal(Number(one.body.tables[0].rows_applied), 5);

  const lag = await call("GET", "/pipelines/main/lag?minutes=60");
  assert.deepEqual(lag.body.map((r: { lag_bytes: string }) => Number(r.lag_bytes)), [100, 50]);
  assert.equal((await call("GET", "/pipelines/main/lag?minutes=0")).status, 400);

  assert.equal((await call("POST", "/pipelines/main/pause")).body.paused, true);
  const [p] = await db.sql`select paused from control.replicate_pipelines where name = 'main'`;
  assert.equal(p.paused, true);
  assert.equal((await call("POST", "/pipelines/main/resume")).body.paused, false);
  assert.equal((await call("POST", "/pipelines/nope/pause")).status, 404);
  assert.equal((await call("GET", "/pipelines/Bad-Name")).status, 400);
  assert.equal((await call("GET", "/pipelines/nope")).status, 404);
});
