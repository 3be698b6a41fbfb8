import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { createTestDatabase, testEnv, testRedisPrefix } from "../../shared/testing/mod.ts";
import { createPeople, testDeps, testRedis } from "./_testing.ts";
import { type MappingInput, saveMapping, validateMapping } from "./mapping.ts";
import { controlKeys } from "./redis.ts";
import { applyNextChanges, fullSync, fullSyncGroup, purgeMapping, type SyncDeps } from "./sync.ts";
import type { Sql } from "../../shared/db.ts";

async function store(sql: Sql, input: MappingInput) {
  const m = await validateMapping(sql, input);
  await sql.begin((tx) => saveMapping(tx, m, false));
  return m;
}

/** The `email` mapping over `people`: key `<prefix><template>` → the email column. */
function emailMapping(sql: Sql, prefix: string, keyTemplate: string) {
  return store(sql, {
    name: "email",
    source: { table: "people", schema: "public" },
    key_template: keyTemplate,
    value: { shape: "string", column: "email" },
    key_prefix: prefix,
  });
}

async function drain(
  deps: SyncDeps,
  mappings: Awaited<ReturnType<typeof store>>[],
  gens: Map<string, number>,
) {
  const { refs, result } = await applyNextChanges(deps, mappings, gens, [], 1_000);
  await deps.sql`delete from control.hydrate_changes where id = any(${refs.map((x) => x.id)}::bigint[])`;
  return result;
}

Deno.test("a full sync writes string, hash and json values under the key template, with a TTL when set", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 3);
  const deps = testDeps(db.sql, redis, p);
  const r = redis.client;

  const s = await emailMapping(db.sql, p, "user:{id}:email");
  const res = await fullSync(deps, s);
  assert.equal(res.rows, 3);
  assert.equal(res.keysWritten, 3);
  assert.equal(await r.get(`${p}user:2:email`), "user2@example.com");
  assert.equal(await r.ttl(`${p}user:2:email`), -1);

  const h = await store(db.sql, {
    name: "profile",
    source: { table: "people", schema: "public" },
    key_template: "user:{username}",
    value: { shape: "hash", columns: ["email", "age"] },
    key_prefix: p,
    ttl_seconds: 300,
  });
  await fullSync(deps, h);
  assert.deepEqual(await r.hgetall(`${p}user:user3`), { email: "user3@example.com", age: "23" });
  const ttl = await r.ttl(`${p}user:user3`);
  assert.ok(ttl > 290 && ttl <= 300, `ttl ${ttl}`);

  const j = await store(db.sql, {
    name: "doc",
    source: { query: "select id, username, born from public.people where id <= 2" },
    key_template: "doc:{id}",
    value: { shape: "json" },
    key_prefix: p,
  });
  const jr = await fullSync(deps, j);
  assert.equal(jr.rows, 2);
  assert.deepEqual(JSON.parse((await r.get(`${p}doc:1`))!), { id: 1, username: "user1", born: "2000-01-02" });
  assert.equal(await r.exists(`${p}doc:3`), 0);

  const all = await store(db.sql, {
    name: "all_columns",
    source: { table: "people", schema: "public" },
    key_template: "row:{id}",
    value: { shape: "hash" },
    key_prefix: p,
  });
  await fullSync(deps, all);
  assert.deepEqual(Object.keys(await r.hgetall(`${p}row:1`)).sort(), [
    "age",
    "born",
    "email",
    "id",
    "password",
    "username",
  ]);
  await r.del(...(await r.keys(`${p}*`)));
});

Deno.test("a second full sync removes the keys of deleted rows, rewrites changed ones and leaves no staged keys", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 50);
  const deps = testDeps(db.sql, redis, p, { batchRows: 7 });
  const r = redis.client;
  const m = await emailMapping(db.sql, p, "e:{id}");
  const first = await fullSync(deps, m);
  assert.equal(first.keysWritten, 50);
  await db.sql`delete from public.people where id in (3, 4)`;
  await db.sql`update public.people set email = null where id = 5`;
  await db.sql`update public.people set email = 'new@example.com' where id = 6`;
  const second = await fullSync(deps, m);
  assert.ok(second.generation > first.generation);
  assert.equal(second.keysWritten, 47);
  assert.equal(second.keysRemoved, 3);
  assert.equal(await r.exists(`${p}e:3`, `${p}e:4`, `${p}e:5`), 0);
  assert.equal(await r.get(`${p}e:6`), "new@example.com");
  assert.equal(await r.get(`${p}e:7`), "user7@example.com");
  const ck = controlKeys(deps.controlPrefix, "email");
  assert.equal(await r.llen(ck.keys(String(second.generation))), 47, "the generation lists its keys");
  assert.equal(await r.exists(ck.keys(String(first.generation))), 0, "the previous list is gone");
  assert.equal((await r.keys(`${p}h:email:stage:*`)).length, 0);
  assert.equal(await r.hget(ck.meta, "generation"), String(second.generation));

  // Chunked flip (mapping larger than the atomic limit) ends in the same exact state.
  await db.sql`delete from public.people where id = 10`;
  const third = await fullSync({ ...deps, atomicFlipKeys: 5 }, m);
  assert.equal(third.atomic, false);
  assert.equal(third.keysRemoved, 1);
  assert.equal((await r.keys(`${p}e:*`)).length, 46);
  assert.equal(await purgeMapping(deps, "email"), 46);
  assert.equal((await r.keys(`${p}*`)).length, 0);
});

Deno.test("recorded changes reach Redis: inserts, updates that move a key, deletes, truncate asks for a full sync", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 3);
  const deps = testDeps(db.sql, redis, p);
  const r = redis.client;
  const byName = await store(db.sql, {
    name: "password",
    source: { table: "people", schema: "public" },
    key_template: "{username}",
    value: { shape: "string", column: "password" },
    key_prefix: p,
    ttl_seconds: 600,
  });
  const hash = await store(db.sql, {
    name: "card",
    source: { table: "people", schema: "public" },
    key_template: "card:{id}",
    value: { shape: "hash", columns: ["username", "email"] },
    key_prefix: p,
  });
  const gens = new Map<string, number>();
  for (const m of [byName, hash]) gens.set(m.name, (await fullSync(deps, m)).generation);
  await db.sql`delete from control.hydrate_changes`;

  await db.sql`insert into public.people (username, email, password) values ('neo', null, 'h-neo')`;
  await db.sql`update public.people set username = 'trinity', password = 'h-t' where username = 'user1'`;
  await db.sql`delete from public.people where username = 'user2'`;
  await db.sql`update public.people set email = 'three@example.com' where id = 3`;
  const res = await drain(deps, [byName, hash], gens);
  assert.equal(res.applied.get("password"), 4);
  assert.equal(await r.get(`${p}neo`), "h-neo");
  assert.ok((await r.ttl(`${p}neo`)) > 590);
  assert.equal(await r.exists(`${p}user1`), 0, "the old key of a moved row is removed");
  assert.equal(await r.get(`${p}trinity`), "h-t");
  assert.equal(await r.exists(`${p}user2`, `${p}card:2`), 0, "deleted rows' keys are removed");
  assert.deepEqual(await r.hgetall(`${p}card:4`), { username: "neo" }, "null fields are left out");
  assert.deepEqual(await r.hgetall(`${p}card:3`), { username: "user3", email: "three@example.com" });
  const changed = controlKeys(deps.controlPrefix, "password").changed(String(gens.get("password")));
  assert.equal(await r.sismember(changed, `${p}user1`), 0, "a moved key is no longer recorded as written");
  assert.equal(await r.sismember(changed, `${p}trinity`), 1, "a written key is recorded for the next flip");

  await db.sql`truncate public.people`;
  const t = await drain(deps, [byName, hash], gens);
  assert.deepEqual([...t.truncated].sort(), ["card", "password"]);
  await fullSync(deps, byName);
  assert.equal(
    (await r.keys(`${p}*`)).filter((k) => !k.startsWith(`${p}h:`) && !k.startsWith(`${p}card`)).length,
    0,
  );
  await r.del(...(await r.keys(`${p}*`)));
});

Deno.test("a reader polling during a full sync never sees a missing key or a mix of two generations", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const reader = new Redis(testEnv.redisUrl);
  const p = testRedisPrefix();
  const N = 3_000;
  await createPeople(db.sql, N);
  const deps = testDeps(db.sql, redis, p, { batchRows: 200 });
  const m = await emailMapping(db.sql, p, "u:{id}");
  const keys = Array.from({ length: N }, (_, i) => `${p}u:${i + 1}`);
  try {
    await fullSync(deps, m);
    await db.sql`update public.people set email = 'v2-' || email`;
    await db.sql`delete from public.people where id = 5`;
    let polling = true;
    const seen = { v1: 0, v2: 0 };
    const poll = (async () => {
      while (polling) {
        const vals = await reader.mget(...keys);
        const v2 = vals[0]!.startsWith("v2-");
        for (let i = 0; i < N; i++) {
          if (i === 4 && v2) {
            assert.equal(vals[i], null, "the deleted row's key goes with the new generation");
            continue;
          }
          assert.ok(vals[i] !== null, `key ${keys[i]} is never missing`);
          assert.equal(vals[i]!.startsWith("v2-"), v2, `key ${keys[i]} belongs to the same generation`);
        }
        seen[v2 ? "v2" : "v1"]++;
      }
    })();
    const res = await fullSync(deps, m);
    polling = false;
    await poll;
    assert.equal(res.atomic, true);
    assert.ok(seen.v1 > 0, "the reader polled while the new generation was loading");
    assert.equal(await reader.get(`${p}u:7`), "v2-user7@example.com");
  } finally {
    await reader.del(...(await reader.keys(`${p}*`)));
    reader.disconnect();
  }
});

Deno.test("mappings of one table load in one scan, each with its own generation and key list", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 30);
  const deps = testDeps(db.sql, redis, p, { batchRows: 8 });
  const r = redis.client;
  const a = await store(db.sql, {
    name: "a",
    source: { table: "people", schema: "public" },
    key_template: "a:{id}",
    value: { shape: "string", column: "email" },
    key_prefix: p,
  });
  const b = await store(db.sql, {
    name: "b",
    source: { table: "people", schema: "public" },
    key_template: "b:{username}",
    value: { shape: "hash", columns: ["age", "email"] },
    key_prefix: p,
    ttl_seconds: 100,
  });
  await db.sql`update public.people set age = null, email = null where id = 3`;
  const [ra, rb] = await fullSyncGroup(deps, [a, b]);
  assert.deepEqual([ra.rows, ra.keysWritten, rb.rows, rb.keysWritten], [30, 29, 30, 29]);
  assert.equal(await r.get(`${p}a:4`), "user4@example.com");
  assert.deepEqual(await r.hgetall(`${p}b:user4`), { age: "24", email: "user4@example.com" });
  assert.equal(await r.exists(`${p}a:3`, `${p}b:user3`), 0, "a row whose values are all null has no key");
  assert.equal(await r.llen(controlKeys(deps.controlPrefix, "a").keys(String(ra.generation))), 29);
  await db.sql`delete from public.people where id = 4`;
  const [ra2, rb2] = await fullSyncGroup(deps, [a, b]);
  assert.deepEqual([ra2.keysRemoved, rb2.keysRemoved], [1, 1]);
  assert.ok((await r.ttl(`${p}b:user5`)) > 90, "a staged hash keeps its TTL through the flip");
  await r.del(...(await r.keys(`${p}*`)));
});

/** A signal that reports aborted from its `after`-th read on: a sync stopped half-way, as by a crash. */
function abortsAfter(after: number): AbortSignal {
  let reads = 0;
  return {
    get aborted() {
      return ++reads > after;
    },
  } as AbortSignal;
}

Deno.test("keys of loads that never finished stay owned: the next sync removes those whose rows are gone", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 20);
  const deps = testDeps(db.sql, redis, p, { batchRows: 5 });
  const r = redis.client;
  const m = await emailMapping(db.sql, p, "e:{id}");
  const ck = controlKeys(deps.controlPrefix, "email");
  // A first load (written in place) stopped after two batches: ten live keys, nothing published.
  await assert.rejects(fullSync({ ...deps, signal: abortsAfter(2) }, m), /stopping/);
  assert.equal((await r.keys(`${p}e:*`)).length, 10);
  assert.equal(await r.hget(ck.meta, "generation"), null);
  await db.sql`delete from public.people where id in (1, 2, 3)`;
  const second = await fullSync(deps, m);
  assert.equal(second.keysRemoved, 3, "the unfinished load's keys of deleted rows are removed");
  assert.equal((await r.keys(`${p}e:*`)).length, 17);

  // Attempts stopped before their first batch wrote nothing and are not remembered.
  for (let i = 0; i < 3; i++) {
    await assert.rejects(fullSync({ ...deps, signal: abortsAfter(0) }, m), /stopping/);
  }
  assert.equal(await r.hget(ck.meta, "pending"), null);

  // A staged sync stopped half-way, then a row deleted: the next one removes its key.
  await assert.rejects(fullSync({ ...deps, signal: abortsAfter(1) }, m), /stopping/);
  await db.sql`delete from public.people where id = 4`;
  // A key recorded by an older version of hydrate (one hash field per key) whose row is gone.
  await r.set(`${p}e:999`, "old");
  await r.hset(ck.legacyRegistry, `${p}e:999`, "1");
  const third = await fullSync(deps, m);
  assert.equal(third.keysRemoved, 2);
  assert.deepEqual(
    (await r.keys(`${p}e:*`)).sort(),
    Array.from({ length: 16 }, (_, i) => `${p}e:${i + 5}`).sort(),
  );
  assert.deepEqual(
    (await r.keys(`${deps.controlPrefix}*`)).sort(),
    [ck.keys(String(third.generation)), ck.meta].sort(),
    "only the published generation's list and the meta remain",
  );
  assert.deepEqual(await r.hgetall(ck.meta), { generation: String(third.generation) });
  assert.equal(await purgeMapping(deps, "email"), 16);
  assert.equal((await r.keys(`${p}*`)).length, 0);
});

Deno.test("rows that share a key flip without error: the key holds one of their values", async () => {
  await using db = await createTestDatabase();
  await using redis = await testRedis(testEnv.redisUrl);
  const p = testRedisPrefix();
  await createPeople(db.sql, 6);
  await db.sql`update public.people set age = 40`;
  const deps = testDeps(db.sql, redis, p);
  const r = redis.client;
  const m = await store(db.sql, {
    name: "byage",
    source: { table: "people", schema: "public" },
    key_template: "age:{age}",
    value: { shape: "string", column: "email" },
    key_prefix: p,
  });
  await fullSync(deps, m);
  const second = await fullSync(deps, m);
  assert.equal(second.keysRemoved, 0);
  assert.match((await r.get(`${p}age:40`))!, /^user\d@example\.com$/);
  assert.deepEqual(await r.keys(`${p}age:*`), [`${p}age:40`]);
  assert.equal((await r.keys(`${deps.controlPrefix}byage:stage:*`)).length, 0);
  await purgeMapping(deps, "byage");
});
