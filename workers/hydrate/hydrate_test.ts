import assert from "node:assert/strict";
import { Registry } from "../../shared/metrics.ts";
import { createTestDatabase, testEnv, testRedisPrefix } from "../../shared/testing/mod.ts";
import { createPeople, eventually, quietLog, testRedis } from "./_testing.ts";
import { type HydrateStatus, runHydrate } from "./hydrate.ts";
import { deleteMapping, saveMapping, validateMapping } from "./mapping.ts";
import type { HydrateRedis } from "./redis.ts";
import type { Sql } from "../../shared/db.ts";

function start(sql: Sql, redis: HydrateRedis, prefix: string, instanceId: string) {
  const controller = new AbortController();
  const status: HydrateStatus = { leader: false, mappings: 0, full_syncs: 0, changes_applied: 0 };
  const done = runHydrate(
    {
      sql,
      redis,
      log: quietLog,
      metrics: new Registry(),
      controlPrefix: prefix + "h:",
      batchRows: 100,
      atomicFlipKeys: 1_000,
      periodSeconds: 3_600,
      pollMs: 100,
      changeBatch: 500,
      syncConcurrency: 2,
      defaultMappings: false,
      instanceId,
      leaseMs: 1_000,
    },
    controller.signal,
    status,
  );
  return { status, stop: async () => (controller.abort(), await done) };
}

Deno.test("the loop runs one leader at a time, resyncs on request, purges a deleted mapping and hands over when the leader stops", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  const r = redis.client;
  await createPeople(db.sql, 20);
  const m = await validateMapping(db.sql, {
    name: "email",
    source: { schema: "public", table: "people" },
    key_template: "e:{id}",
    value: { shape: "string", column: "email" },
    key_prefix: p,
  });
  await db.sql.begin((tx) => saveMapping(tx, m, false));
  const a = start(db.sql, redis, p, "a");
  const b = start(db.sql, redis, p, "b");
  try {
    await eventually("the first load", async () => (await r.get(`${p}e:20`)) === "user20@example.com");
    await eventually("a leader", () => Promise.resolve(a.status.leader || b.status.leader));
    assert.ok(a.status.leader !== b.status.leader, "exactly one copy leads");
    const leader = a.status.leader ? a : b;
    const follower = a.status.leader ? b : a;
    assert.equal(follower.status.full_syncs, 0);

    // "Resync now" heals a change made with the capture trigger bypassed.
    await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update public.people set email = 'quiet@example.com' where id = 1`;
    });
    const syncs = leader.status.full_syncs;
    await db.sql`update control.hydrate_mappings set resync_requested_at = now()`;
    await db.sql`select pg_notify('wharf_hydrate', 'resync')`;
    await eventually("the requested full sync", async () => (await r.get(`${p}e:1`)) === "quiet@example.com");
    assert.ok(leader.status.full_syncs > syncs);
    const [stats] = await db.sql`select * from control.hydrate_stats where mapping = 'email'`;
    assert.equal(Number(stats.last_sync_rows), 20);

    // The leader stops; the other copy takes the lease and follows changes.
    await leader.stop();
    await db
      .sql`insert into public.people (username, email, password) values ('new', 'new@example.com', 'x')`;
    await eventually(
      "the other copy to lead and apply the change",
      async () => (await r.get(`${p}e:21`)) === "new@example.com",
    );
    assert.ok(follower.status.leader);

    // Deleting the mapping removes its keys and hydrate's own keys.
    await db.sql.begin((tx) => deleteMapping(tx, "email"));
    await eventually("the purge", async () => (await r.keys(`${p}*`)).length === 0);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    const keys = await r.keys(`${p}*`);
    if (keys.length) await r.del(...keys);
  }
});
