/**
 * What the replicate tests share: a source and a target database, a bucket, a uniquely named slot and
 * publication (dropped at the end: a leftover slot would hold WAL for every other test), an in-process
 * pipeline, and a per-table checksum to compare source and target.
 */
import { CreateBucketCommand, type S3Client } from "@aws-sdk/client-s3";
import { dropReplicationSlot, type Sql } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import {
  createTestDatabase,
  testBucketName,
  type TestDatabase,
  testEnv,
  testId,
} from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { type PipelineOptions, type PipelineStatus, runPipeline } from "../../workers/replicate/pipeline.ts";
import { s3Client } from "../../workers/replicate/s3.ts";
import { PostgresTarget } from "../../workers/replicate/targets/postgres.ts";

/** An S3 client for the test S3 server. */
export function testS3(): S3Client {
  return s3Client({
    endpoint: testEnv.s3Endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...LOCAL_S3_CREDENTIALS,
  });
}

/** Creates a bucket for one test. */
export async function testBucket(s3: S3Client): Promise<string> {
  const bucket = testBucketName("rep");
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

/** Incompressible text longer than the TOAST threshold, so that it is stored out of line. */
export function bigText(seed: number): string {
  let s = "";
  let x = seed;
  for (let i = 0; i < 6000; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    s += String.fromCharCode(33 + (x % 90));
  }
  return s;
}

/** Count and md5 of a table's rows as text, in a stable order. */
export async function checksum(sql: Sql, table: string): Promise<string> {
  const [schema, name] = table.split(".");
  const [r] = await sql.unsafe(
    `select count(*)::text || ':' || coalesce(md5(string_agg(x::text, E'\\n' order by x::text)), '') as c
       from "${schema}"."${name}" x`,
  );
  return r.c as string;
}

/** Waits until `f` is true (polling), failing after `ms`. */
export async function eventually(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = performance.now() + ms;
  let last: unknown;
  while (performance.now() < end) {
    try {
      if (await f()) return;
      last = undefined; // an error seen earlier is no longer why it waits
    } catch (e) {
      last = e;
    }
    await abortableSleep(100);
  }
  throw new Error(`Timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/** Waits until every table has the same checksum on both sides. */
export async function converged(source: Sql, target: Sql, tables: string[], ms = 30_000): Promise<void> {
  await eventually(`target to equal source (${tables.join(", ")})`, async () => {
    for (const t of tables) if ((await checksum(source, t)) !== (await checksum(target, t))) return false;
    return true;
  }, ms);
}

/**
 * The S3 keys of a table's recorded batches, in the order they were loaded, once the batch of the target's
 * last load is among them: a batch is recorded in `control.replicate_batches` just after its load commits,
 * so right after the target converged the last one may not be there yet.
 */
export async function recordedKeys(f: Fixture, table: string): Promise<string[]> {
  const [applied] = await f.target.sql<{ lsn: string }[]>`
    select lsn::text as lsn from wharf_replicate.applied where pipeline = ${f.pipeline} and table_name = ${table}`;
  if (!applied) throw new Error(`no load of ${table} was applied`);
  let rows: { k: string; at_last: boolean }[] = [];
  await eventually(`the batch of ${table} at ${applied.lsn} to be recorded`, async () => {
    rows = await f.source.sql<{ k: string; at_last: boolean }[]>`
      select s3_key as k, lsn::pg_lsn >= ${applied.lsn}::pg_lsn as at_last from control.replicate_batches
       where pipeline = ${f.pipeline} and table_name = ${table} order by id`;
    return rows.some((r) => r.at_last);
  });
  return rows.map((r) => r.k);
}

/** A source, a target, a bucket, a slot and a publication; dispose drops them all. */
export interface Fixture extends AsyncDisposable {
  source: TestDatabase;
  target: TestDatabase;
  s3: S3Client;
  bucket: string;
  slot: string;
  publication: string;
  pipeline: string;
  spoolDir: string;
  /** Starts the pipeline in this process; returns its stop function and status. */
  start(extra?: Partial<PipelineOptions>): { stop(): Promise<void>; status: PipelineStatus };
}

/** Builds a fixture; `setup` runs on the source before the publication is created. */
export async function fixture(setup: (sql: Sql) => Promise<void>, tables: string[]): Promise<Fixture> {
  const source = await createTestDatabase();
  const target = await createTestDatabase();
  const s3 = testS3();
  const bucket = await testBucket(s3);
  const id = testId();
  const slot = `rep_slot_${id}`;
  const publication = `rep_pub_${id}`;
  await setup(source.sql);
  await source.sql.unsafe(
    `create publication ${publication} for table ${
      tables.map((t) => t.split(".").map((p) => `"${p}"`).join("."))
        .join(", ")
    }`,
  );
  const spoolDir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "spool-" });
  const running: (() => Promise<void>)[] = [];
  return {
    source,
    target,
    s3,
    bucket,
    slot,
    publication,
    pipeline: "p" + id,
    spoolDir,
    start(extra = {}) {
      const controller = new AbortController();
      const status: PipelineStatus = { state: "starting", batches: 0, rowsApplied: 0 };
      const pgTarget = new PostgresTarget(target.url, s3);
      const done = runPipeline(
        {
          name: "p" + id,
          sourceUrl: source.url,
          slot,
          publication,
          target: pgTarget,
          s3,
          bucket,
          spoolDir,
          batchRows: 1000,
          batchMs: 100,
          walWarnBytes: 1024 ** 3,
          control: source.sql,
          log: createLogger("replicate-test"),
          statusIntervalMs: 300,
          ...extra,
        },
        controller.signal,
        status,
      );
      const stop = async () => {
        controller.abort();
        await done;
        await pgTarget.close();
      };
      running.push(stop);
      return { stop, status };
    },
    async [Symbol.asyncDispose]() {
      await Promise.allSettled(running.map((s) => s()));
      await dropReplicationSlot(source.sql, slot).catch(() => {});
      await source.drop();
      await target.drop();
      s3.destroy();
    },
  };
}
