import assert from "node:assert/strict";
import { createLogger } from "../../shared/log.ts";
import { Registry } from "../../shared/metrics.ts";
import { createApp } from "../../web/app.tsx";
import { checksum, converged, eventually, fixture } from "./_helpers.ts";

Deno.test("pause stops loading while lag grows, resume catches up, and lag is in control tables and metrics", async () => {
  await using f = await fixture(async (sql) => {
    await sql`create table public.p (id int primary key, v text)`;
  }, ["public.p"]);
  const metrics = new Registry();
  const run = f.start({ metrics });
  const app = createApp({
    sql: f.source.sql,
    adminToken: "tok",
    log: createLogger("web", { level: "error" }),
  });
  const post = (path: string) =>
    app.request(`/api/admin/replication/pipelines/${f.pipeline}/${path}`, {
      method: "POST",
      headers: { authorization: "Bearer tok" },
    });
  await f.source.sql`insert into public.p select g, 'a' from generate_series(1, 10) g`;
  await converged(f.source.sql, f.target.sql, ["public.p"]);

  assert.equal((await post("pause")).status, 200);
  await eventually("the pipeline to pause", () => Promise.resolve(run.status.state === "paused"));
  await f.source.sql`insert into public.p select g, 'b' from generate_series(11, 100) g`;
  const [slot] = await f.source.sql`select (pg_current_wal_lsn() - confirmed_flush_lsn)::int as lag
                                     from pg_replication_slots where slot_name = ${f.slot}`;
  assert.ok(slot.lag > 0);
  assert.notEqual(await checksum(f.target.sql, "public.p"), await checksum(f.source.sql, "public.p"));

  assert.equal((await post("resume")).status, 200);
  await converged(f.source.sql, f.target.sql, ["public.p"]);
  await eventually("lag history points", async () => {
    const [h] = await f.source.sql`select count(*)::int as n from control.replicate_lag_history
                                    where pipeline = ${f.pipeline}`;
    return h.n >= 2;
  });
  const text = metrics.render();
  assert.match(text, /wharf_replicate_lag_bytes\{pipeline="p[0-9a-f]+"\} \d+/);
  assert.match(text, /wharf_replicate_rows_total\{pipeline="p[0-9a-f]+",table="public.p"\} (90|100)/);
  assert.match(text, /wharf_replicate_retained_wal_bytes/);
  await run.stop();
});
