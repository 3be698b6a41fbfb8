import assert from "node:assert/strict";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { bigText, checksum, converged, fixture } from "./_helpers.ts";

const TRICKY = [
  "",
  "a,b",
  'say "hi"',
  "line\nbreak\r\n",
  "back\\slash \\N",
  "ünï 😀 中文",
  " ",
  "NULL",
  "\\x00",
];

for (const format of ["csv", "binary"] as const) {
  Deno.test(`the snapshot and every change kind reach the target exactly, tricky values included (${format} files)`, () =>
    changeKinds(format));
}

async function changeKinds(format: "csv" | "binary"): Promise<void> {
  const tables = ["public.items", "public.full_items", "public.trunc"];
  await using f = await fixture(async (sql) => {
    await sql`create table public.items (id int primary key, name text, note text, data bytea, big text,
                                          at timestamptz, amount numeric, tags text[], doc jsonb)`;
    await sql`create table public.full_items (id int primary key, v text)`;
    await sql`alter table public.full_items replica identity full`;
    await sql`create table public.trunc (id int primary key, v text)`;
    // Rows present before the slot exists: they arrive through the snapshot.
    for (const [i, v] of TRICKY.entries()) {
      await sql`insert into public.items (id, name, note, data, at, amount, tags, doc)
                values (${i + 1}, ${v}, ${null}, ${new Uint8Array([0, 1, 0, 255, i])},
                        '2024-02-29 12:34:56.123456+00', 1.10, ${[v, "x"]}, ${sql.json({ v })})`;
    }
    await sql`insert into public.full_items select g, 'v' || g from generate_series(1, 20) g`;
    await sql`insert into public.trunc select g, 'old' || g from generate_series(1, 5) g`;
  }, tables);
  const p = f.start({ format });
  await converged(f.source.sql, f.target.sql, tables);
  const [snap] = await f.source.sql`select snapshot_state, snapshot_rows from control.replicate_tables
                                     where table_name = 'public.items'`;
  assert.equal(snap.snapshot_state, "done");
  assert.equal(Number(snap.snapshot_rows), TRICKY.length);

  const s = f.source.sql;
  // Inserts with tricky values, NULL vs empty string, bytea holding NUL bytes.
  for (const [i, v] of TRICKY.entries()) {
    await s`insert into public.items (id, name, note, data) values (${100 + i}, ${v}, ${i % 2 ? null : ""},
                                                                  ${new Uint8Array([0, 0, i])})`;
  }
  // Updates, a primary key change, deletes, in one transaction and in several.
  await s.begin(async (tx) => {
    await tx`update public.items set name = 'renamed' where id = 100`;
    await tx`update public.items set id = 1000 where id = 101`;
    await tx`delete from public.items where id = 102`;
    await tx`insert into public.items (id, name) values (102, 'reborn')`;
  });
  await s`update public.items set id = id + 5000 where id in (1, 2)`;
  // REPLICA IDENTITY FULL: updates and deletes carry the whole old row.
  await s`update public.full_items set v = v || '!' where id <= 10`;
  await s`delete from public.full_items where id > 15`;
  await s`update public.full_items set id = 100 where id = 1`;
  // Unchanged TOAST: a big value, then updates of another column (the WAL carries no big value).
  await s`update public.items set big = ${bigText(1)} where id = 103`;
  await converged(f.source.sql, f.target.sql, tables);
  await s`update public.items set name = 'toast kept' where id = 103`;
  await s.begin(async (tx) => {
    await tx`insert into public.items (id, big) values (2000, ${bigText(2)})`;
    await tx`update public.items set name = 'same batch' where id = 2000`;
  });
  // Truncate, then new rows, in one transaction.
  await s.begin(async (tx) => {
    await tx`insert into public.trunc values (99, 'gone')`;
    await tx`truncate public.trunc`;
    await tx`insert into public.trunc values (1, 'new')`;
  });
  await converged(f.source.sql, f.target.sql, tables);

  // A column added while running: the target gets it; the pipeline does not stop.
  await s`alter table public.items add column extra text`;
  await s`insert into public.items (id, name, extra) values (3000, 'with extra', 'x,"y"')`;
  await s`update public.items set extra = '' where id = 100`;
  await converged(f.source.sql, f.target.sql, tables);
  assert.equal(p.status.state, "streaming");
  const [toast] = await f.target.sql`select name, big = ${
    bigText(1)
  } as same from public.items where id = 103`;
  assert.deepEqual({ ...toast }, { name: "toast kept", same: true });
  const [nul] = await f.target.sql`select encode(data, 'hex') as h from public.items where id = 5001`;
  assert.equal(nul.h, "000100ff00");
  const [empty] = await f.target.sql`select note = '' as empty from public.items where id = 100`;
  assert.equal(empty.empty, true);
  // Control rows for the console.
  const [pl] = await s`select state, lag_bytes from control.replicate_pipelines where name = ${f.pipeline}`;
  assert.equal(pl.state, "streaming");
  const keys = await s`select s3_key from control.replicate_batches where pipeline = ${f.pipeline}`;
  assert.ok(keys.length > 0);
  // The files are in the format asked for.
  const ext = format === "binary" ? ".pgcopy" : ".csv";
  assert.deepEqual(keys.filter((k) => !k.s3_key.endsWith(ext)), []);
  // Every applied batch is on S3 (the load commits only after its upload).
  for (const k of keys) await f.s3.send(new HeadObjectCommand({ Bucket: f.bucket, Key: k.s3_key }));
  assert.equal(await checksum(f.target.sql, "public.trunc"), await checksum(s, "public.trunc"));
  await p.stop();
}
