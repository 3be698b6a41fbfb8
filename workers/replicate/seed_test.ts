import assert from "node:assert/strict";
import { connectPostgres } from "../../shared/db.ts";
import { createTestDatabase, testEnv } from "../../shared/testing/mod.ts";
import { seedReplicateDemo, warehouseUrl } from "./seed.ts";

Deno.test("the replicate seed makes a demo table, a publication and a warehouse database, twice safely", async () => {
  await using db = await createTestDatabase();
  await seedReplicateDemo(db.sql);
  await seedReplicateDemo(db.sql);
  const [n] = await db.sql`select count(*)::int as n from public.replicate_demo`;
  assert.equal(n.n, 20);
  const pubs = await db.sql`select tablename from pg_publication_tables where pubname = 'wharf_demo'`;
  assert.deepEqual(pubs.map((r) => r.tablename), ["replicate_demo"]);
  const wh = connectPostgres(warehouseUrl(db.url), { max: 1 });
  try {
    const [r] = await wh`select current_database() as d`;
    assert.equal(r.d, `${db.name}_warehouse`);
  } finally {
    await wh.end();
    const admin = connectPostgres(testEnv.pgUrl, { max: 1 });
    await admin.unsafe(`drop database if exists ${db.name}_warehouse`);
    await admin.end();
  }
});
