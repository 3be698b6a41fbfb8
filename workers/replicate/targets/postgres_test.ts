import assert from "node:assert/strict";
import { CreateBucketCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { LOCAL_S3_CREDENTIALS } from "../../../shared/stack/s3.ts";
import { createTestDatabase, testBucketName, testEnv } from "../../../shared/testing/mod.ts";
import { s3Client } from "../s3.ts";
import {
  conformanceChanges,
  type ConformanceSubject,
  conformanceTable,
  targetConformance,
} from "./conformance.ts";
import { qualified } from "./merge_sql.ts";
import { PostgresTarget } from "./postgres.ts";
import { BINARY_HEADER } from "../spool.ts";
import { csvLine } from "../csv.ts";

async function subject(
  o: ConstructorParameters<typeof PostgresTarget>[2] = {},
): Promise<ConformanceSubject & { target: PostgresTarget }> {
  const db = await createTestDatabase();
  const s3 = s3Client({
    endpoint: testEnv.s3Endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...LOCAL_S3_CREDENTIALS,
  });
  const bucket = testBucketName("conf");
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const target = new PostgresTarget(db.url, s3, o);
  return {
    target,
    s3,
    bucket,
    rows: async (t) =>
      (await target.sql.unsafe(`select id::text, v, big from ${qualified(t.schema, t.name)} order by id`))
        .map((r) => [r.id, r.v, r.big]),
    dispose: async () => {
      await target.close();
      await db.drop();
      s3.destroy();
    },
  };
}

targetConformance("postgres", subject);

Deno.test("postgres target: a batch refused at its COPY or in its merge changes nothing, and the next one applies", async () => {
  const s = await subject();
  try {
    await s.target.prepare();
    const t = conformanceTable(`conf_${crypto.randomUUID().slice(0, 8)}`);
    await s.target.ensureTable(t);
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "one", null], [2, "U", "two", null]]));
    const before = await s.rows(t);
    // Refused by the COPY: a key that is not an integer.
    await assert.rejects(
      s.target.load(await conformanceChanges(s, t, 20n, [[1, "D", null, null], ["x", "U", "bad", null]])),
      /invalid input syntax for type integer/,
    );
    // Refused in the merge, after its delete ran: a batch wrongly flagged as one row per key inserts a
    // key twice. Everything behind the refused statement in the pipeline (the new LSN, COMMIT) must be
    // rolled back with it.
    const twice = await conformanceChanges(s, t, 20n, [[1, "D", null, null], [3, "U", "a", null], [
      3,
      "U",
      "b",
      null,
    ]]);
    await assert.rejects(s.target.load({ ...twice, distinctKeys: true }), /duplicate key/);
    assert.deepEqual(await s.rows(t), before);
    assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 10n);
    // No connection was left inside a transaction, and the next batch applies.
    for (let i = 0; i < 4; i++) {
      const [{ n }] = await s.target.sql`
        select count(*)::int as n from pg_stat_activity
         where datname = current_database() and state like 'idle in transaction%'`;
      assert.equal(n, 0);
    }
    assert.equal(await s.target.load(twice), true);
    assert.deepEqual(await s.rows(t), [["2", "two", null], ["3", "b", null]]);
    assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 20n);
  } finally {
    await s.dispose();
  }
});

/** The kept staging tables (not their `_fin` companions) in every session, by session. */
async function keptStaging(s: { target: PostgresTarget }): Promise<Map<number, string[]>> {
  const rows = await s.target.sql<{ ns: number; oid: number; name: string }[]>`
    select relnamespace::int as ns, oid::int as oid, relname as name from pg_class
     where relpersistence = 't' and relkind = 'r' and relname like 'wharf\_stage\_%'
       and relname not like '%\_fin' order by oid`;
  const out = new Map<number, string[]>();
  for (const r of rows) out.set(r.ns, [...out.get(r.ns) ?? [], `${r.name}:${r.oid}`]);
  return out;
}

Deno.test("postgres target: a load commits durably where the target's synchronous_commit is off", async () => {
  const s = await subject();
  try {
    const [{ db }] = await s.target.sql`select current_database() as db`;
    // The loaders' sessions (opened by the first load) start with the database's setting.
    await s.target.sql.unsafe(`alter database ${db} set synchronous_commit = off`);
    await s.target.prepare();
    const t = conformanceTable(`sync_${crypto.randomUUID().slice(0, 8)}`);
    await s.target.ensureTable(t);
    // What the load's statements run with, seen from inside its transaction.
    await s.target.sql.unsafe(`
      create table public.${t.name}_seen (setting text);
      create function public.${t.name}_seen() returns trigger language plpgsql as $$
        begin insert into public.${t.name}_seen values (current_setting('synchronous_commit')); return null; end $$;
      create trigger seen after insert on ${qualified(t.schema, t.name)}
        for each statement execute function public.${t.name}_seen()`);
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "one", null]]));
    await s.target.load({
      ...(await conformanceChanges(s, t, 20n, [[2, "U", "two", null]])),
      insertsOnly: true,
    });
    const seen = await s.target.sql.unsafe(`select setting from public.${t.name}_seen`);
    assert.deepEqual(seen.map((r) => r.setting), ["local", "local"]);
    // The loaders' sessions did start with it off.
    const [{ n }] = await s.target.sql`
      select count(*)::int as n from pg_stat_activity
       where datname = current_database() and application_name = 'wharf-replicate-target'`;
    assert.ok(n >= 2);
    const [{ setting }] = await s.target.sql.unsafe(
      `select setconfig::text as setting from pg_db_role_setting
        where setdatabase = (select oid from pg_database where datname = current_database())`,
    );
    assert.equal(setting, "{synchronous_commit=off}");
  } finally {
    await s.dispose();
  }
});

Deno.test("postgres target: loads keep their staging tables in the session (emptied at commit), a few per session", async () => {
  const s = await subject({ keptStaging: 2, stagingIdleMs: 60_000 });
  try {
    await s.target.prepare();
    const tables = [0, 1, 2].map((i) => conformanceTable(`keep${i}_${crypto.randomUUID().slice(0, 8)}`));
    for (const t of tables) await s.target.ensureTable(t);
    const [a, b, c] = tables;
    // Repeated keys: the merge's table of last rows per key is kept too.
    await s.target.load(await conformanceChanges(s, a, 10n, [[1, "U", "one", null], [1, "U", "uno", null]]));
    const first = await keptStaging(s);
    assert.equal(first.size, 1);
    const [kept] = [...first.values()];
    assert.equal(kept.length, 1);
    // The next batches of the table stage in the same table (same oid), which the commit left empty.
    await s.target.load(await conformanceChanges(s, a, 20n, [[2, "U", "two", null], [1, "D", null, null]]));
    await s.target.load(
      await conformanceChanges(s, a, 30n, [[3, "U", "three", null], [3, "U", "tres", null]]),
    );
    assert.deepEqual(await keptStaging(s), first);
    assert.deepEqual(await s.rows(a), [["2", "two", null], ["3", "tres", null]]);
    // Two more tables on the one idle session: the second fits, the third is staged for its batch only.
    await s.target.load(await conformanceChanges(s, b, 10n, [[1, "U", "b", null]]));
    await s.target.load(await conformanceChanges(s, c, 10n, [[1, "U", "c", null]]));
    await s.target.load(await conformanceChanges(s, c, 20n, [[2, "U", "c2", null]]));
    const after = [...(await keptStaging(s)).values()];
    assert.equal(after.length, 1);
    assert.equal(after[0].length, 2);
    assert.equal(after[0][0], kept[0]);
    assert.deepEqual(await s.rows(c), [["1", "c", null], ["2", "c2", null]]);
  } finally {
    await s.dispose();
  }
});

Deno.test("postgres target: a kept staging table unused for a while makes room for another table's", async () => {
  const s = await subject({ keptStaging: 1, stagingIdleMs: 0 });
  try {
    await s.target.prepare();
    const [a, b] = [0, 1].map((i) => conformanceTable(`room${i}_${crypto.randomUUID().slice(0, 8)}`));
    await s.target.ensureTable(a);
    await s.target.ensureTable(b);
    await s.target.load(await conformanceChanges(s, a, 10n, [[1, "U", "a", null], [1, "U", "a1", null]]));
    const [before] = [...(await keptStaging(s)).values()];
    await s.target.load(await conformanceChanges(s, b, 10n, [[1, "U", "b", null], [1, "U", "b1", null]]));
    const [after] = [...(await keptStaging(s)).values()];
    assert.equal(after.length, 1);
    assert.notEqual(after[0], before[0]);
    // Its companion went with it: only b's is left.
    const [{ n }] = await s.target.sql`
      select count(*)::int as n from pg_class where relpersistence = 't' and relname like '%\_fin'`;
    assert.equal(n, 1);
    await s.target.load(await conformanceChanges(s, a, 20n, [[2, "U", "a2", null]]));
    assert.deepEqual(await s.rows(a), [["1", "a1", null], ["2", "a2", null]]);
    assert.deepEqual(await s.rows(b), [["1", "b1", null]]);
  } finally {
    await s.dispose();
  }
});

/** A binary COPY file of change rows `[seq, op, unchanged, ...values]` (values: bytes or null). */
function binaryFile(rows: (Uint8Array | null)[][]): Uint8Array {
  const parts: number[] = [...BINARY_HEADER];
  for (const r of rows) {
    parts.push(r.length >> 8, r.length & 255);
    for (const v of r) {
      if (v === null) parts.push(255, 255, 255, 255);
      else {parts.push(
          (v.length >>> 24) & 255,
          (v.length >>> 16) & 255,
          (v.length >>> 8) & 255,
          v.length & 255,
          ...v,
        );}
    }
  }
  parts.push(255, 255);
  return new Uint8Array(parts);
}

const int = (v: number, size: 4 | 8) => {
  const b = new Uint8Array(size);
  const view = new DataView(b.buffer);
  if (size === 4) view.setInt32(0, v);
  else view.setBigInt64(0, BigInt(v));
  return b;
};
const txt = (s: string) => new TextEncoder().encode(s);
const change = (
  seq: number,
  op: string,
  id: Uint8Array,
  v: string | null,
) => [int(seq, 8), txt(op), txt("-"), id, v === null ? null : txt(v), null];

Deno.test("postgres target: binary batch files load from S3, straight when the types match, else through a cast", async () => {
  const s = await subject();
  try {
    await s.target.prepare();
    const t = conformanceTable(`conf_${crypto.randomUUID().slice(0, 8)}`);
    await s.target.ensureTable(t);
    const batch = async (
      lsn: bigint,
      wire: number[],
      rows: (Uint8Array | null)[][],
      insertsOnly: boolean,
    ) => {
      const body = binaryFile(rows);
      const key = `conf/${t.name}/${lsn}.pgcopy`;
      await s.s3.send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: body }));
      return {
        pipeline: "conformance",
        bucket: s.bucket,
        table: t,
        kind: "changes" as const,
        truncate: false,
        insertsOnly,
        segments: [{
          key,
          columns: t.columns,
          rows: rows.length,
          bytes: body.length,
          format: "binary" as const,
          wire,
        }],
        lsn,
      };
    };
    // Inserts whose key came as an int8 (the table's is an integer): no plain twin, a cast.
    assert.equal(
      await s.target.load(
        await batch(
          10n,
          [20, 25, 25],
          [change(1, "I", int(1, 8), 'a,"b"\n'), change(2, "I", int(2, 8), "")],
          true,
        ),
      ),
      true,
    );
    assert.deepEqual(await s.rows(t), [["1", 'a,"b"\n', null], ["2", "", null]]);
    // Updates and a delete with the table's own types: straight into staging, then the merge.
    await s.target.load(
      await batch(20n, [23, 25, 25], [
        change(1, "U", int(1, 4), null),
        change(2, "D", int(2, 4), null),
        change(3, "U", int(3, 4), "x"),
      ], false),
    );
    assert.deepEqual(await s.rows(t), [["1", null, null], ["3", "x", null]]);
    // A value the table's type cannot hold is refused, and changes nothing.
    await assert.rejects(
      s.target.load(await batch(30n, [20, 25, 25], [change(1, "U", int(2 ** 40, 8), "big")], false)),
      /out of range for type integer/,
    );
    assert.deepEqual(await s.rows(t), [["1", null, null], ["3", "x", null]]);
    assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 20n);
  } finally {
    await s.dispose();
  }
});

Deno.test("postgres target: batch files the worker holds load without S3, from memory or a file: the plain twin, stripped change columns, a merge", async () => {
  const s = await subject();
  const dir = await Deno.makeTempDir();
  try {
    await s.target.prepare();
    const enc = new TextEncoder();
    let n = 0;
    for (const where of ["memory", "file"] as const) {
      const t = conformanceTable(`local_${where}_${crypto.randomUUID().slice(0, 8)}`);
      await s.target.ensureTable(t);
      const local = async (text: string) => {
        const data = enc.encode(text);
        if (where === "memory") return { data };
        const path = `${dir}/${++n}.csv`;
        await Deno.writeFile(path, data);
        return { path };
      };
      const changes = (rows: [number, string, string | null][]) =>
        rows.map(([id, op, v], i) => csvLine([String(i + 1), op, "-", String(id), v, null])).join("");
      const plain = (rows: [number, string, string | null][]) =>
        rows.map(([id, , v]) => csvLine([String(id), v, null])).join("");
      // Never uploaded: a read from S3 would fail the load.
      const segment = async (text: string, twin?: string) => ({
        key: `not/on/s3/${++n}.csv`,
        columns: t.columns,
        rows: text.split("\n").length - 1,
        bytes: enc.encode(text).length,
        ...(await local(text)),
        ...(twin === undefined ? {} : { plain: { ...(await local(twin)), bytes: enc.encode(twin).length } }),
      });
      // A batch as the suite makes them, its file replaced by the local one.
      const load = async (lsn: bigint, insertsOnly: boolean, text: string, twin?: string) =>
        await s.target.load({
          ...(await conformanceChanges(s, t, lsn, [])),
          insertsOnly,
          segments: [await segment(text, twin)],
        });
      const first: [number, string, string | null][] = [[1, "I", 'a,"b"\n'], [2, "I", ""], [3, "I", null]];
      // Inserts with their plain twin: copied straight into the table.
      assert.equal(await load(10n, true, changes(first), plain(first)), true);
      // Inserts without a twin: the change columns taken off on the way.
      assert.equal(await load(20n, true, changes([[4, "I", "x,\\N"], [5, "I", "z"]])), true);
      // Changes: staged, then merged.
      assert.equal(await load(30n, false, changes([[1, "D", null], [2, "U", "two"], [6, "U", "six"]])), true);
      assert.deepEqual(await s.rows(t), [
        ["2", "two", null],
        ["3", null, null],
        ["4", "x,\\N", null],
        ["5", "z", null],
        ["6", "six", null],
      ], where);
      assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 30n);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await s.dispose();
  }
});
