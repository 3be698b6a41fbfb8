import assert from "node:assert/strict";
import { converged, eventually, fixture } from "./_helpers.ts";

// CSV files with a memory budget smaller than the transaction (its files go to disk); binary ones with the
// default budget (they stay in memory).
for (const format of ["csv", "binary"] as const) {
  Deno.test(
    `a transaction far larger than a batch is spooled and loaded whole, in one merge (${format} files, ${
      format === "csv" ? "on disk" : "in memory"
    })`,
    () => largeTransaction(format),
  );
}

async function largeTransaction(format: "csv" | "binary"): Promise<void> {
  await using f = await fixture(async (sql) => {
    await sql`create table public.big_tx (id int primary key, v text)`;
  }, ["public.big_tx"]);
  const onDisk = format === "csv";
  const p = f.start({ batchRows: 100, format, ...(onDisk ? { spoolMemoryBytes: 1 << 20 } : {}) });
  await eventually("the stream to start", () => Promise.resolve(p.status.state === "streaming"));
  await f.source.sql.begin(async (tx) => {
    await tx`insert into public.big_tx select g, repeat(md5(g::text), 4) from generate_series(1, 40000) g`;
    await tx`update public.big_tx set v = 'changed' where id % 10 = 0`;
    await tx`delete from public.big_tx where id % 10 = 1`;
  });
  await converged(f.source.sql, f.target.sql, ["public.big_tx"]);
  const batches = () =>
    f.source.sql`select rows::int as rows, bytes::int as bytes from control.replicate_batches
                  where pipeline = ${f.pipeline} and table_name = 'public.big_tx'`;
  await eventually("the batch row", async () => (await batches()).length > 0);
  const rows = await batches();
  // Batches are cut at commits only: the whole transaction is one batch (its 48,000 change rows in a file of
  // several megabytes), applied in one target transaction.
  assert.deepEqual(rows.map((r) => r.rows), [48_000]);
  assert.ok(rows[0].bytes > 5_000_000);
  // Past 1 MiB the file went to disk, with its plain twin until the update dropped it; under the default
  // budget it stayed in memory.
  await eventually("the spool's figures", () => Promise.resolve(p.status.spilledFiles !== undefined));
  if (onDisk) assert.ok(p.status.spilledFiles! >= 1, "the batch's file went to disk");
  else assert.equal(p.status.spilledFiles, 0);
  await p.stop();
}
