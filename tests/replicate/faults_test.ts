import assert from "node:assert/strict";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
} from "@aws-sdk/client-s3";
import { join } from "node:path";
import { connectPostgres, dropReplicationSlot } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { startPostgres } from "../../shared/stack/postgres.ts";
import { freePort } from "../../shared/stack/process.ts";
import { createTestDatabase, testEnv, testId } from "../../shared/testing/mod.ts";
import { type PipelineStatus, runPipeline } from "../../workers/replicate/pipeline.ts";
import { PostgresTarget } from "../../workers/replicate/targets/postgres.ts";
import { converged, eventually, fixture, recordedKeys, testBucket, testS3 } from "./_helpers.ts";

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

Deno.test("with the bucket gone for a while nothing is applied or acknowledged, and every batch is on S3 once it is back", async () => {
  await using f = await fixture(async (sql) => {
    await sql`create table public.t (id int primary key, v text)`;
    await sql`insert into public.t select g, 'a' from generate_series(1, 50) g`;
  }, ["public.t"]);
  const { status } = f.start({ log: createLogger("replicate-test", { level: "error" }), batchMs: 50 });
  await converged(f.source.sql, f.target.sql, ["public.t"]);
  // One batch of changes past the snapshot, so that the batches recorded so far can be counted.
  await f.source.sql`insert into public.t values (1000, 'a')`;
  await converged(f.source.sql, f.target.sql, ["public.t"]);
  const before = (await recordedKeys(f, "public.t")).length;
  // Emptied and removed while the source is idle, so that no upload lands in between.
  const listed = await f.s3.send(new ListObjectsV2Command({ Bucket: f.bucket }));
  const keys = (listed.Contents ?? []).map((o) => ({ Key: o.Key! }));
  if (keys.length) await f.s3.send(new DeleteObjectsCommand({ Bucket: f.bucket, Delete: { Objects: keys } }));
  await f.s3.send(new DeleteBucketCommand({ Bucket: f.bucket }));

  await f.source.sql`insert into public.t select g, 'b' from generate_series(51, 400) g`;
  await f.source.sql`update public.t set v = 'c' where id <= 10`;
  await f.source.sql`delete from public.t where id between 20 and 25`;
  await eventually("the pipeline to report retrying", () => Promise.resolve(status.state === "retrying"));
  assert.match(status.lastError ?? "", /NoSuchBucket/);
  // A load commits only once its files are on S3: the target has none of the new changes, and the slot
  // still holds them.
  const [t] = await f.target.sql`select count(*)::int as n, count(*) filter (where v <> 'a')::int as changed
                                   from public.t`;
  assert.deepEqual(t, { n: 51, changed: 0 });
  const [held] = await f.source.sql`select (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::int as lag
                                      from pg_replication_slots where slot_name = ${f.slot}`;
  assert.ok(held.lag > 0, "the slot is not acknowledged past unloaded changes");

  await f.s3.send(new CreateBucketCommand({ Bucket: f.bucket }));
  await converged(f.source.sql, f.target.sql, ["public.t"], 45_000);
  await eventually("the pipeline to stream again", () => Promise.resolve(status.state === "streaming"));
  const after = (await recordedKeys(f, "public.t")).slice(before);
  assert.ok(after.length > 0, "batches were loaded after the bucket came back");
  for (const key of after) await f.s3.send(new HeadObjectCommand({ Bucket: f.bucket, Key: key }));
});
