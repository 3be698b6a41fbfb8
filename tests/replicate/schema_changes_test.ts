import assert from "node:assert/strict";
import type { Sql } from "../../shared/db.ts";
import { abortableSleep } from "../../shared/worker.ts";
import type { TableInfo } from "../../workers/replicate/schema.ts";
import { PostgresTarget } from "../../workers/replicate/targets/postgres.ts";
import { bigText, eventually, fixture, testS3 } from "./_helpers.ts";

/** Count and md5 of the rows, reading only the columns the source table has now (by name, in its order). */
async function sourceShaped(source: Sql, sql: Sql, table: string): Promise<string> {
  const cols = await source<{ name: string }[]>`
    select attname as name from pg_attribute
     where attrelid = ${table}::regclass and attnum > 0 and not attisdropped order by attnum`;
  const list = cols.map((c) => `"${c.name}"`).join(", ");
  const [r] = await sql.unsafe(
    `select count(*)::text || ':' || coalesce(md5(string_agg(x::text, E'\\n' order by x::text)), '') as c
       from (select ${list} from ${table}) x`,
  );
  return r.c as string;
}

async function sameAsSource(source: Sql, target: Sql, table: string): Promise<void> {
  await eventually(
    `${table} on the target to equal the source`,
    async () => (await sourceShaped(source, source, table)) === (await sourceShaped(source, target, table)),
  );
}

for (const format of ["csv", "binary"] as const) {
  Deno.test(`columns added, renamed, retyped and dropped on the source while running keep the target right (${format} files)`, () =>
    columnChanges(format));
}

Deno.test("a column change the stream reads while the target takes the previous one is applied at the next load", async () => {
  const table = "public.race";
  await using f = await fixture(async (sql) => {
    await sql`create table public.race (id int primary key, a text)`;
    await sql`insert into public.race values (1, 'x')`;
  }, [table]);
  const s = f.source.sql;
  const s3 = testS3();
  const inner = new PostgresTarget(f.target.url, s3);
  // The target, with its next column change held until the test lets it go.
  let gate: { entered: PromiseWithResolvers<void>; release: PromiseWithResolvers<void> } | undefined;
  const target = new Proxy(inner, {
    get(o, k) {
      if (k === "ensureTable") {
        return async (info: TableInfo) => {
          const g = gate;
          gate = undefined;
          if (g) {
            g.entered.resolve();
            await g.release.promise;
          }
          return await o.ensureTable(info);
        };
      }
      const v = Reflect.get(o, k);
      return typeof v === "function" ? v.bind(o) : v;
    },
  });
  const p = f.start({ target });
  try {
    await sameAsSource(s, f.target.sql, table);
    // Past the session's start, which brings the target in line with every table first.
    await eventually("the pipeline to stream", () => Promise.resolve(p.status.state === "streaming"));
    const g = { entered: Promise.withResolvers<void>(), release: Promise.withResolvers<void>() };
    gate = g;
    await s`alter table public.race rename column a to b`;
    await s`insert into public.race values (2, 'y')`;
    await g.entered.promise; // the load of that batch is renaming the target's column
    await s`alter table public.race rename column b to c`;
    await s`insert into public.race values (3, 'z')`;
    await abortableSleep(1_000); // the stream reads the second rename meanwhile
    g.release.resolve();
    await sameAsSource(s, f.target.sql, table);
    const cols = await f.target.sql`select column_name as n from information_schema.columns
                                     where table_schema = 'public' and table_name = 'race' order by ordinal_position`;
    assert.deepEqual(cols.map((r) => r.n), ["id", "c"]);
  } finally {
    await p.stop();
    await inner.close();
    s3.destroy();
  }
});

async function columnChanges(format: "csv" | "binary"): Promise<void> {
  const table = "public.evolve";
  await using f = await fixture(async (sql) => {
    await sql`create table public.evolve (id int primary key, a text, b text, c int, big text)`;
    await sql`insert into public.evolve select g, 'a' || g, 'b' || g, g, null from generate_series(1, 20) g`;
  }, [table]);
  const s = f.source.sql;
  const t = f.target.sql;
  let p = f.start({ format });
  await sameAsSource(s, t, table);

  // A rename: the values stay in one column, under the new name.
  await s`alter table public.evolve rename column a to a2`;
  await s`insert into public.evolve (id, a2, b, c) values (21, 'new', 'b21', 21)`;
  await s`update public.evolve set b = 'changed' where id = 1`;
  await sameAsSource(s, t, table);
  const cols = async () =>
    (await t`select column_name as n from information_schema.columns
              where table_schema = 'public' and table_name = 'evolve' order by ordinal_position`).map((r) =>
      r.n
    );
  assert.deepEqual(await cols(), ["id", "a2", "b", "c", "big"]);

  // int → bigint (the classic migration), then a value only bigint holds, and a varchar given a limit.
  await s`alter table public.evolve alter column c type bigint`;
  await s`insert into public.evolve (id, a2, b, c) values (22, 'x', 'y', 9999999999)`;
  await sameAsSource(s, t, table);
  const [type] = await t`select data_type from information_schema.columns
                          where table_name = 'evolve' and column_name = 'c'`;
  assert.equal(type.data_type, "bigint");
  assert.equal(p.status.state, "streaming");
  // A retype between two rows of one batch: the first row's file holds a bigint, the table a numeric by the
  // time it loads (a binary file then goes through a cast from its text form).
  await s.begin(async (tx) => {
    await tx`insert into public.evolve (id, a2, b, c) values (27, 'x', 'y', 27)`;
    await tx`alter table public.evolve alter column c type numeric`;
    await tx`insert into public.evolve (id, a2, b, c) values (28, 'x', 'y', 2.5)`;
  });
  await sameAsSource(s, t, table);

  // Columns added with a constant default: rows older than them read the default on the source, which keeps
  // it in the catalog and not in the rows (so the stream never carries it), also the row inserted just
  // before, in the same transaction, whose file loads after the column was added.
  await s.begin(async (tx) => {
    await tx`insert into public.evolve (id, a2, b, c) values (30, 'in flight', 'b', 30)`;
    await tx`alter table public.evolve add column flag boolean not null default true,
                                       add column note text default 'it''s, "n"',
                                       add column at date default '2024-02-29'`;
    await tx`insert into public.evolve (id, a2, b, c, flag, note) values (31, 'after', 'b', 31, false, null)`;
  });
  await sameAsSource(s, t, table);
  const flags =
    await t`select id, flag, note, at::text from public.evolve where id in (1, 30, 31) order by id`;
  assert.deepEqual(flags.map((r) => [r.id, r.flag, r.note, r.at]), [
    [1, true, `it's, "n"`, "2024-02-29"],
    [30, true, `it's, "n"`, "2024-02-29"],
    [31, false, null, "2024-02-29"],
  ]);
  // Renamed later, such a column is not new again: its NULLs are values, not rows older than it.
  await s`alter table public.evolve rename column note to note2`;
  await s`update public.evolve set c = c + 0 where id = 30`; // row 31 (note NULL) is not written again
  await sameAsSource(s, t, table);
  const [n31] = await t`select note2 from public.evolve where id = 31`;
  assert.equal(n31.note2, null);

  // A drop: the warehouse keeps the column and its values; later rows hold NULL there.
  await s`alter table public.evolve drop column b`;
  await s`insert into public.evolve (id, a2, c) values (23, 'after drop', 23)`;
  await sameAsSource(s, t, table);
  const [kept] = await t`select b from public.evolve where id = 2`;
  assert.equal(kept.b, "b2");
  const [fresh] = await t`select b from public.evolve where id = 23`;
  assert.equal(fresh.b, null);

  // A column added to the warehouse table by hand is left alone, whatever the source does.
  await t`alter table public.evolve add column loaded_at timestamptz default now()`;

  // Column changes inside the transactions of one batch, with an unchanged TOAST value after the drop
  // moved the columns' places: the batch's files are loaded by column number.
  await s`update public.evolve set big = ${bigText(7)} where id = 5`;
  await sameAsSource(s, t, table);
  await s.begin(async (tx) => {
    await tx`update public.evolve set a2 = 'before' where id = 5`;
    await tx`alter table public.evolve drop column a2`;
    await tx`update public.evolve set c = 55 where id = 5`; // big unchanged: not in the WAL
    await tx`alter table public.evolve rename column c to c2`;
    await tx`insert into public.evolve (id, c2, big) values (24, 24, 'small')`;
  });
  await sameAsSource(s, t, table);
  // Row 5 was written again after a2 was dropped: like every row written since, it holds NULL there (also
  // when it is updated in place, because of its unchanged TOAST value, in a batch of its own).
  const [toast] = await t`select big = ${bigText(7)} as same, c2, a2 from public.evolve where id = 5`;
  assert.deepEqual({ ...toast }, { same: true, c2: "55", a2: null });
  const [untouched] = await t`select a2 from public.evolve where id = 6`;
  assert.equal(untouched.a2, "a6");
  const [own] = await t`select count(*)::int as n from public.evolve where loaded_at is null`;
  assert.equal(own.n, 0, "the hand-added column keeps its values");

  // A restart across a rename of the key: the stream replays changes made under the old name, after the
  // worker read the catalog with the new one.
  await p.stop();
  await s`insert into public.evolve (id, c2) values (25, 25)`;
  await s`alter table public.evolve rename column id to ident`;
  await s`insert into public.evolve (ident, c2) values (26, 26)`;
  await s`update public.evolve set c2 = 0 where ident = 25`;
  await s`delete from public.evolve where ident = 3`;
  p = f.start({ format });
  await sameAsSource(s, t, table);
  const after = await cols();
  assert.equal(after[0], "ident");
  assert.ok(!after.includes("id"), `no stray column: ${after.join(", ")}`);
  assert.equal(p.status.state, "streaming");

  // A new primary key on the source: rows that share the old key but not the new one stay apart.
  await s`alter table public.evolve drop constraint evolve_pkey`;
  await s`alter table public.evolve add primary key (ident, c2)`;
  await s`insert into public.evolve (ident, c2) values (26, 2600)`;
  await s`update public.evolve set big = 'k' where ident = 26 and c2 = 2600`;
  await sameAsSource(s, t, table);
  const pkCols = await t`select a.attname as n from pg_index i join pg_attribute a on a.attrelid = i.indrelid
                          and a.attnum = any(i.indkey) where i.indrelid = 'public.evolve'::regclass and i.indisprimary
                         order by a.attnum`;
  assert.deepEqual(pkCols.map((r) => r.n), ["ident", "c2"]);

  // A table added to the publication while running is copied alone and then followed; the other tables
  // are not copied again (a row put into the target's copy by hand stays), and nothing is lost.
  await t`insert into public.evolve (ident, c2) values (999, 999)`;
  await s`create table public.joined (id int primary key, v text)`;
  await s`insert into public.joined values (1, 'before it joined')`;
  await s`insert into public.joined select g, 'bulk' from generate_series(1000, 60000) g`;
  await s.unsafe(`alter publication ${f.publication} add table public.joined`);
  // Changes that arrive while the copy runs wait for it in the table's lane; the other tables go on.
  await s`insert into public.joined values (2, 'after')`;
  await s`update public.joined set v = 'changed during the copy' where id between 1000 and 1100`;
  await s`delete from public.joined where id = 1200`;
  await s`insert into public.evolve (ident, c2) values (40, 40)`;
  await sameAsSource(s, t, "public.joined");
  await s`update public.joined set v = 'streamed' where id = 1`;
  await sameAsSource(s, t, "public.joined");
  const marker = async () => (await t`select count(*)::int as n from public.evolve where ident = 999`)[0].n;
  assert.equal(await marker(), 1, "evolve was not copied again");
  // The same while the worker is stopped: the table is copied when it starts.
  await p.stop();
  await s`create table public.joined2 (id int primary key, v text)`;
  await s`insert into public.joined2 values (1, 'x')`;
  await s.unsafe(`alter publication ${f.publication} add table public.joined2`);
  await s`insert into public.joined2 values (2, 'y')`;
  await s`insert into public.evolve (ident, c2) values (41, 41)`;
  p = f.start({ format });
  await sameAsSource(s, t, "public.joined2");
  await s`delete from public.joined2 where id = 1`;
  await sameAsSource(s, t, "public.joined2");
  assert.equal(await marker(), 1, "evolve was not copied again");
  await t`delete from public.evolve where ident = 999`;
  await sameAsSource(s, t, table);
  await sameAsSource(s, t, "public.joined");
  const [{ n: slots }] =
    await s`select count(*)::int as n from pg_replication_slots where slot_name like 'wharf_sync_%' and database = current_database()`;
  assert.equal(slots, 0, "the temporary slots are gone");
  await p.stop();
}

Deno.test("a table renamed on the source is copied under its new name, the old one left as it was", async () => {
  await using f = await fixture(async (sql) => {
    await sql`create table public.rn (id int primary key, v text)`;
    await sql`insert into public.rn select g, 'v' || g from generate_series(1, 100) g`;
  }, ["public.rn"]);
  const p = f.start();
  await sameAsSource(f.source.sql, f.target.sql, "public.rn");
  await f.source.sql`alter table public.rn rename to rn2`;
  await f.source.sql`insert into public.rn2 values (101, 'after')`;
  await f.source.sql`update public.rn2 set v = 'u' where id = 1`;
  await sameAsSource(f.source.sql, f.target.sql, "public.rn2");
  const [old] = await f.target
    .sql`select count(*)::int as n, max(v) filter (where id = 1) as v from public.rn`;
  assert.deepEqual({ ...old }, { n: 100, v: "v1" });
  assert.equal(p.status.state, "streaming");
  await p.stop();
});
