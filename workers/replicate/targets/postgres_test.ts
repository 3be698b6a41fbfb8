import assert from "node:assert/strict";
import { CreateBucketCommand } from "@aws-sdk/client-s3";
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

async function subject(): Promise<ConformanceSubject & { target: PostgresTarget }> {
  const db = await createTestDatabase();
  const s3 = s3Client({
    endpoint: testEnv.s3Endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...LOCAL_S3_CREDENTIALS,
  });
  const bucket = testBucketName("conf");
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const target = new PostgresTarget(db.url, s3);
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
