import assert from "node:assert/strict";
import { join } from "node:path";
import { connectPostgres } from "./db.ts";
import { migrate, readMigrations } from "./migrate.ts";
import { createTestDatabase, testEnv } from "./testing/mod.ts";

async function migrationsDir(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "mig-" });
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(dir, name), text);
  return dir;
}

Deno.test("migrate() run by two runners at once applies each migration exactly once", async () => {
  await using db = await createTestDatabase({ migrated: false });
  // The second file is slow and not idempotent: a double apply would fail or double the rows.
  const dir = await migrationsDir({
    "0001_a.sql": "create table applied (n int); insert into applied values (1);",
    "0002_b.sql":
      "select pg_sleep(0.3); create table b (id int primary key); insert into applied values (2);",
    "0003_c.sql": "insert into applied values (3);",
  });
  const a = connectPostgres(db.url, { max: 1 });
  const b = connectPostgres(db.url, { max: 1 });
  try {
    const [ra, rb] = await Promise.all([migrate(a, { dir }), migrate(b, { dir })]);
    assert.deepEqual([...ra.applied, ...rb.applied].sort(), [1, 2, 3]);
    assert.deepEqual([...ra.skipped, ...rb.skipped].sort(), [1, 2, 3]);
    const rows = await db.sql<{ n: number }[]>`select n from applied order by n`;
    assert.deepEqual(rows.map((r) => r.n), [1, 2, 3]);
    const log = await db.sql`select version from public.wharf_migrations order by version`;
    assert.deepEqual(log.map((r) => r.version), [1, 2, 3]);
  } finally {
    await a.end();
    await b.end();
  }
});

Deno.test("migrate() refuses a migration edited after it was applied", async () => {
  await using db = await createTestDatabase({ migrated: false });
  const dir = await migrationsDir({ "0001_a.sql": "create table a (n int);" });
  await migrate(db.sql, { dir });
  await Deno.writeTextFile(join(dir, "0001_a.sql"), "create table a (n bigint);");
  await assert.rejects(() => migrate(db.sql, { dir }), /changed after it was applied/);
});

Deno.test("migrate() rolls back a failing migration whole and applies nothing after it", async () => {
  await using db = await createTestDatabase({ migrated: false });
  const dir = await migrationsDir({
    "0001_ok.sql": "create table ok (n int);",
    "0002_bad.sql": "create table half (n int); select * from missing_table;",
    "0003_after.sql": "create table after (n int);",
  });
  await assert.rejects(() => migrate(db.sql, { dir }), /missing_table/);
  const tables = await db.sql`select table_name from information_schema.tables
                              where table_schema = 'public' order by 1`;
  assert.deepEqual(tables.map((t) => t.table_name), ["ok", "wharf_migrations"]);
});

Deno.test("readMigrations() refuses misnamed files and duplicate numbers", async () => {
  await assert.rejects(async () => readMigrations(await migrationsDir({ "1_a.sql": "" })), /0001_name\.sql/);
  await assert.rejects(
    async () => readMigrations(await migrationsDir({ "0001_a.sql": "", "0001_b.sql": "" })),
    /two files have number 1/,
  );
});

Deno.test("the project's own migrations create the app and control schemas", async () => {
  await using db = await createTestDatabase();
  const schemas = await db
    .sql`select nspname from pg_namespace where nspname in ('app', 'control') order by 1`;
  assert.deepEqual(schemas.map((s) => s.nspname), ["app", "control"]);
  const all = await readMigrations();
  const applied = await db.sql`select version from public.wharf_migrations order by version`;
  assert.deepEqual(applied.map((r) => r.version), all.map((m) => m.version));
});
