import assert from "node:assert/strict";
import { connectPostgres } from "../../shared/db.ts";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { describeTable, waitVisible } from "./schema.ts";

Deno.test("waitVisible() waits until a transaction is visible, so that a catalog read after it sees its ALTER", async () => {
  await using db = await createTestDatabase({ migrated: false });
  const other = connectPostgres(db.url, { max: 1 });
  try {
    await db.sql`create table public.t (id int primary key, c int)`;
    const tx = await other.reserve();
    try {
      await tx`begin`;
      await tx`alter table public.t alter column c type numeric`;
      const [{ xid }] = await tx<
        { xid: string }[]
      >`select (pg_current_xact_id()::text::numeric % 4294967296)::text as xid`;
      // In progress: not visible, and the catalog still says int.
      assert.equal(await waitVisible(db.sql, Number(xid), 100), false);
      assert.equal((await describeTable(db.sql, "public", "t")).columns[1].type, "integer");
      const waiting = waitVisible(db.sql, Number(xid), 10_000);
      let settled = false;
      void waiting.then(() => (settled = true));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(settled, false, "visible before its commit");
      await tx`commit`;
      assert.equal(await waiting, true);
      assert.equal((await describeTable(db.sql, "public", "t")).columns[1].type, "numeric");
    } finally {
      tx.release();
    }
    // A transaction committed long ago (below the snapshot's xmin) is visible at once.
    const [{ xid: old }] = await db.sql<{ xid: string }[]>`
      select (xmin::text) as xid from pg_class where relname = 't' and relnamespace = 'public'::regnamespace`;
    assert.equal(await waitVisible(db.sql, Number(old), 100), true);
  } finally {
    await other.end();
  }
});
