import assert from "node:assert/strict";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { binaryTypeOids } from "../../workers/replicate/schema.ts";
import { converged, eventually, fixture, recordedKeys } from "./_helpers.ts";

Deno.test("binary files: a column of a user-defined type turns the session to CSV, without losing a change", async () => {
  const tables = ["public.plain"];
  await using f = await fixture(async (sql) => {
    await sql`create type public.mood as enum ('calm', 'glad')`;
    await sql`create table public.plain (id int primary key, v text, at timestamptz, n numeric, a int[])`;
    await sql`insert into public.plain values (1, 'snap', now(), 1.5, '{1,2}')`;
  }, tables);
  const s = f.source.sql;
  const p = f.start({ format: "binary" });
  await converged(s, f.target.sql, tables);
  await s`insert into public.plain select g, 'v' || g, now(), g / 3.0, array[g, null] from generate_series(2, 500) g`;
  await s`update public.plain set v = null, n = 'NaN' where id < 10`;
  await converged(s, f.target.sql, tables);
  const keys = () => recordedKeys(f, "public.plain");
  const before = await keys();
  assert.ok(before.length > 0 && before.every((k) => k.endsWith(".pgcopy")), before.join(", "));

  // The enum's values cannot go into binary files: the session ends, the next one replays in text.
  await s.begin(async (tx) => {
    await tx`insert into public.plain (id, v) values (1000, 'before the column')`;
    await tx`alter table public.plain add column m public.mood`;
    await tx`insert into public.plain (id, v, m) values (1001, 'with it', 'glad')`;
  });
  await s`update public.plain set m = 'calm' where id = 2`;
  await converged(s, f.target.sql, tables);
  const after = (await keys()).slice(before.length);
  assert.ok(after.length > 0 && after.every((k) => k.endsWith(".csv")), after.join(", "));
  await eventually("the pipeline to stream", () => Promise.resolve(p.status.state === "streaming"));
  const [m] = await f.target.sql`select m::text as m from public.plain where id = 1001`;
  assert.equal(m.m, "glad");
  await p.stop();

  // A restart reads the catalog: the enum column is there, so the session is text from its start.
  const again = f.start({ format: "binary" });
  await s`insert into public.plain (id, v, m) values (1002, 'after a restart', 'calm')`;
  await converged(s, f.target.sql, tables);
  const last = (await keys()).at(-1)!;
  assert.ok(last.endsWith(".csv"), last);
  await again.stop();
});

Deno.test("binary files: the types carried in binary are built-in ones whose binary form means the same on the target", async () => {
  const db = await createTestDatabase();
  try {
    const oids = await binaryTypeOids(db.sql);
    // int4, int8, text, numeric, timestamptz, jsonb, bytea, uuid, int4[], text[]
    for (const oid of [23, 20, 25, 1700, 1184, 3802, 17, 2950, 1007, 1009]) {
      assert.ok(oids.has(oid), String(oid));
    }
    // regclass and its array (an oid of the source's catalog), aclitem (no binary form), pg_node_tree
    for (const oid of [2205, 2210, 1033, 194]) assert.ok(!oids.has(oid), String(oid));
  } finally {
    await db.drop();
  }
});
