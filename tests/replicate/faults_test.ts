import assert from "node:assert/strict";
import { join } from "node:path";
import { connectPostgres, dropReplicationSlot } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { startPostgres } from "../../shared/stack/postgres.ts";
import { freePort } from "../../shared/stack/process.ts";
import { createTestDatabase, testEnv, testId } from "../../shared/testing/mod.ts";
import { type PipelineStatus, runPipeline } from "../../workers/replicate/pipeline.ts";
import { PostgresTarget } from "../../workers/replicate/targets/postgres.ts";
import { converged, eventually, testBucket, testS3 } from "./_helpers.ts";

/** An extra Postgres of this test's own, so the shared test services are never restarted. */
async function ownPostgres() {
  const dir = join(testEnv.tmp, `own-pg-${testId()}`);
  const port = freePort();
  const password = testId();
  const start = () => startPostgres({ dir, port, user: "wharf", password, ephemeral: true });
  return { first: await start(), start };
}

Deno.test("with the target down for a while the slot holds the changes and the pipeline catches up", async () => {
  const own = await ownPostgres();
  let pg = own.first;
  const source = await createTestDatabase();
  const s3 = testS3();
  const bucket = await testBucket(s3);
  const id = testId();
  const slot = `rep_slot_${id}`;
  const controller = new AbortController();
  let run: Promise<void> | undefined;
  const target = new PostgresTarget(pg.urlFor("postgres"), s3);
  const tsql = connectPostgres(pg.urlFor("postgres"), { max: 1 });
  try {
    await source.sql`create table public.t (id int primary key, v text)`;
    await source.sql`insert into public.t select g, 'a' from generate_series(1, 50) g`;
    await source.sql.unsafe(`create publication rep_pub_${id} for table public.t`);
    const status: PipelineStatus = { state: "starting", batches: 0, rowsApplied: 0 };
    run = runPipeline(
      {
        name: "p" + id,
        sourceUrl: source.url,
        slot,
        publication: `rep_pub_${id}`,
        target,
        s3,
        bucket,
        spoolDir: join(testEnv.tmp, `spool-${id}`),
        batchRows: 100,
        batchMs: 50,
        walWarnBytes: 1,
        control: source.sql,
        log: createLogger("replicate-test", { level: "error" }),
        statusIntervalMs: 200,
      },
      controller.signal,
      status,
    );
    await converged(source.sql, tsql, ["public.t"]);
    await pg.stop();
    await source.sql`insert into public.t select g, 'b' from generate_series(51, 500) g`;
    await source.sql`update public.t set v = 'c' where id <= 10`;
    await eventually("the pipeline to report retrying", () => Promise.resolve(status.state === "retrying"));
    const [held] = await source.sql`select (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::int as lag
                                      from pg_replication_slots where slot_name = ${slot}`;
    assert.ok(held.lag > 0, "the slot is not acknowledged past unloaded changes");
    // The control row follows the in-memory state at the next status write (every 200 ms here).
    const row = async () => {
      const [r] = await source.sql`select state, last_error from control.replicate_pipelines where name = ${
        "p" + id
      }`;
      return r;
    };
    await eventually("the control row to report retrying", async () => (await row())?.state === "retrying");
    assert.ok((await row()).last_error);
    pg = await own.start();
    await converged(source.sql, tsql, ["public.t"], 45_000);
    await eventually("lag to drop", () => Promise.resolve(status.state === "streaming"));
  } finally {
    controller.abort();
    await run;
    await Promise.allSettled([target.close(), tsql.end({ timeout: 1 })]);
    await dropReplicationSlot(source.sql, slot).catch(() => {});
    await source.drop();
    await pg.stop();
    s3.destroy();
  }
});

Deno.test("a source restart breaks the stream and the pipeline reconnects and resumes", async () => {
  const own = await ownPostgres();
  let pg = own.first;
  const target = await createTestDatabase();
  const control = await createTestDatabase();
  const s3 = testS3();
  const bucket = await testBucket(s3);
  const id = testId();
  const slot = `rep_slot_${id}`;
  const controller = new AbortController();
  let run: Promise<void> | undefined;
  const srcUrl = pg.urlFor("postgres");
  let src = connectPostgres(srcUrl, { max: 1 });
  const pgTarget = new PostgresTarget(target.url, s3);
  try {
    await src`create table public.r (id int primary key, v text)`;
    await src`insert into public.r select g, 'a' from generate_series(1, 50) g`;
    await src.unsafe(`create publication rep_pub_${id} for table public.r`);
    const status: PipelineStatus = { state: "starting", batches: 0, rowsApplied: 0 };
    run = runPipeline(
      {
        name: "p" + id,
        sourceUrl: srcUrl,
        slot,
        publication: `rep_pub_${id}`,
        target: pgTarget,
        s3,
        bucket,
        spoolDir: join(testEnv.tmp, `spool-${id}`),
        batchRows: 100,
        batchMs: 50,
        walWarnBytes: 1024 ** 3,
        control: control.sql,
        log: createLogger("replicate-test", { level: "error" }),
        statusIntervalMs: 200,
      },
      controller.signal,
      status,
    );
    await converged(src, target.sql, ["public.r"]);
    await src.end();
    await pg.stop();
    pg = await own.start();
    src = connectPostgres(srcUrl, { max: 1 });
    await src`insert into public.r select g, 'b' from generate_series(51, 300) g`;
    await src`delete from public.r where id <= 5`;
    await converged(src, target.sql, ["public.r"], 45_000);
  } finally {
    controller.abort();
    await run;
    await pgTarget.close();
    await dropReplicationSlot(src, slot).catch(() => {});
    await src.end({ timeout: 1 });
    await Promise.allSettled([target.drop(), control.drop()]);
    await pg.stop();
    s3.destroy();
  }
});
