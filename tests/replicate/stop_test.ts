import assert from "node:assert/strict";
import { abortableSleep } from "../../shared/worker.ts";
import { converged, eventually, fixture } from "./_helpers.ts";

Deno.test("a stop during the snapshot ends the pipeline at once, and the next start snapshots in full", async () => {
  const f = await fixture(async (sql) => {
    await sql`create table public.s (id int primary key, v text)`;
    await sql`insert into public.s select g, 'a' from generate_series(1, 100) g`;
  }, ["public.s"]);
  // An open transaction that has written holds up the slot's creation until it ends.
  const blocker = await f.source.sql.reserve();
  await blocker`begin`;
  await blocker`insert into public.s values (1000, 'open')`;
  try {
    const first = f.start();
    await eventually("the slot's creation to wait on the open transaction", async () => {
      const [w] = await f.source.sql`select count(*)::int as n from pg_stat_activity
                                      where query like ${"CREATE_REPLICATION_SLOT%" + f.slot + "%"}`;
      return w.n > 0;
    });
    assert.equal(first.status.state, "snapshot");
    const started = performance.now();
    const stopped = await Promise.race([
      first.stop().then(() => true),
      abortableSleep(5_000).then(() => false),
    ]);
    assert.ok(stopped, "the pipeline did not stop within 5 s of being asked");
    assert.ok(
      performance.now() - started < 3_000,
      `stopping took ${Math.round(performance.now() - started)} ms`,
    );
    assert.equal(first.status.state, "stopped");
    const [p] = await f.source.sql`select state from control.replicate_pipelines where name = ${f.pipeline}`;
    assert.equal(p.state, "stopped");
    await blocker`commit`;

    const second = f.start();
    await f.source.sql`update public.s set v = 'b' where id <= 10`;
    await converged(f.source.sql, f.target.sql, ["public.s"]);
    await second.stop();
  } finally {
    await blocker`rollback`.catch(() => {});
    blocker.release();
    // A pipeline that never stops must fail this test, not hang it.
    await Promise.race([f[Symbol.asyncDispose](), abortableSleep(15_000)]);
  }
});
