/**
 * Real restarts in the middle of a full sync: the test starts its own Redis or Postgres (never the
 * shared test services), stops it by pid while the worker process is streaming rows, changes data while
 * it is down, starts it again on the same port, and checks that Redis ends exactly like the table.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { Redis } from "ioredis";
import { connectPostgres, type Sql } from "../../shared/db.ts";
import { migrate } from "../../shared/migrate.ts";
import { startPostgres } from "../../shared/stack/postgres.ts";
import { startRedis } from "../../shared/stack/redis.ts";
import { freePort } from "../../shared/stack/process.ts";
import {
  captureText,
  createTestDatabase,
  testEnv,
  testId,
  testRedisPrefix,
} from "../../shared/testing/mod.ts";
import { eventually } from "../../workers/hydrate/_testing.ts";
import { saveMapping, validateMapping } from "../../workers/hydrate/mapping.ts";
import { controlKeys } from "../../workers/hydrate/redis.ts";

const MAIN = fromFileUrl(new URL("../../workers/hydrate/main.ts", import.meta.url));
const ROWS = 120_000;

function spawnWorker(env: Record<string, string>) {
  const keep: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR", "TMPDIR", "LANG"]) {
    const v = Deno.env.get(k);
    if (v) keep[k] = v;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    clearEnv: true,
    env: {
      ...keep,
      OPS_PORT: "0",
      HYDRATE_DEFAULT_MAPPINGS: "false",
      HYDRATE_BATCH_ROWS: "100",
      HYDRATE_POLL_MS: "200",
      ...env,
    },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logs = captureText(child.stderr);
  return {
    logs,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* it exited already: its code tells */ }
      const s = await child.status;
      await logs.done;
      if (s.code !== 0) console.error(logs.text().split("\n").slice(-15).join("\n"));
      return s.code;
    },
  };
}

async function setUp(sql: Sql, prefix: string) {
  await sql`create table public.people (id bigint primary key, email text)`;
  await sql`insert into public.people select g, 'p' || g || '@example.com' from generate_series(1, ${ROWS}) g`;
  const m = await validateMapping(sql, {
    name: "email",
    source: { schema: "public", table: "people" },
    key_template: "e:{id}",
    value: { shape: "string", column: "email" },
    key_prefix: prefix,
  });
  await sql.begin((tx) => saveMapping(tx, m, false));
}

async function changeWhileDown(sql: Sql) {
  await sql`update public.people set email = 'changed-' || id where id % 1000 = 7`;
  await sql`delete from public.people where id % 1000 = 9`;
  await sql`insert into public.people values (${ROWS + 1}, 'late@example.com')`;
}

/** True when the mapping's keys in Redis are exactly the table's rows. */
async function exact(r: Redis, sql: Sql, prefix: string, controlPrefix: string): Promise<boolean> {
  if (!(await r.hget(controlKeys(controlPrefix, "email").meta, "generation"))) return false;
  const rows = await sql<
    { id: string; email: string }[]
  >`select id::text, email from public.people order by id`;
  for (let i = 0; i < rows.length; i += 5_000) {
    const chunk = rows.slice(i, i + 5_000);
    const vals = await r.mget(...chunk.map((x) => `${prefix}e:${x.id}`));
    if (vals.some((v, j) => v !== chunk[j].email)) return false;
  }
  let n = 0;
  let cursor = "0";
  do {
    const [next, keys] = await r.scan(cursor, "MATCH", `${prefix}e:*`, "COUNT", 10_000);
    n += keys.length;
    cursor = next;
  } while (cursor !== "0");
  const staged = await r.keys(`${controlPrefix}email:stage:*`);
  return n === rows.length && staged.length === 0;
}

/** Keys the running full sync of the `email` mapping has written so far. */
async function listed(r: Redis, controlPrefix: string): Promise<number> {
  const ck = controlKeys(controlPrefix, "email");
  const gen = (await r.hget(ck.meta, "loading")) ?? (await r.hget(ck.meta, "staging"));
  return gen ? await r.llen(ck.keys(gen)) : 0;
}

Deno.test("a Redis restart in the middle of a full sync ends with Redis exactly like the table", async () => {
  await using db = await createTestDatabase();
  const prefix = "t:";
  const controlPrefix = "wharf:hydrate:";
  await setUp(db.sql, prefix);
  const dir = join(testEnv.tmp, `redis-${testId()}`);
  const port = freePort();
  let redis = await startRedis({ dir, port });
  let r = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const worker = spawnWorker({ DATABASE_URL: db.url, REDIS_URL: redis.url });
  try {
    await eventually(
      "the full sync to be under way",
      async () => (await listed(r, controlPrefix)) >= 5_000,
      30_000,
    );
    assert.equal(await r.hget(controlKeys(controlPrefix, "email").meta, "generation"), null, "mid-sync");
    assert.ok((await listed(r, controlPrefix)) < ROWS, "mid-sync");
    r.disconnect();
    await redis.stop();
    await changeWhileDown(db.sql);
    redis = await startRedis({ dir, port });
    r = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await eventually(
      "Redis to match the table exactly",
      () => exact(r, db.sql, prefix, controlPrefix),
      60_000,
    );
    // And it keeps following changes afterwards.
    await db.sql`delete from public.people where id = 1`;
    await eventually("a later delete", async () => (await r.exists(`${prefix}e:1`)) === 0);
  } finally {
    const code = await worker.stop();
    r.disconnect();
    await redis.stop();
    assert.equal(code, 0);
  }
  assert.match(worker.logs.text(), /redis connection renewed/);
});

Deno.test("a Postgres restart in the middle of a full sync ends with Redis exactly like the table", async () => {
  const dir = join(testEnv.tmp, `pg-${testId()}`);
  const port = freePort();
  const password = crypto.randomUUID();
  let pg = await startPostgres({ dir, port, user: "wharf", password, ephemeral: true });
  const admin = connectPostgres(pg.url, { max: 1 });
  await admin.unsafe("create database hydrate_fault");
  await admin.end();
  const url = pg.urlFor("hydrate_fault");
  const sql = connectPostgres(url, { max: 2 });
  const prefix = testRedisPrefix();
  const controlPrefix = prefix + "h:";
  const r = new Redis(testEnv.redisUrl);
  let worker: ReturnType<typeof spawnWorker> | undefined;
  try {
    await migrate(sql, { log: (await import("../../workers/hydrate/_testing.ts")).quietLog });
    await setUp(sql, prefix);
    worker = spawnWorker({ pcred: url, REDIS_URL: testEnv.redisUrl, HYDRATE_REDIS_PREFIX: controlPrefix });
    await eventually(
      "the full sync to be under way",
      async () => (await listed(r, controlPrefix)) >= 5_000,
      30_000,
    );
    assert.equal(await r.hget(controlKeys(controlPrefix, "email").meta, "generation"), null, "mid-sync");
    await pg.stop();
    await new Promise((res) => setTimeout(res, 500));
    pg = await startPostgres({ dir, port, user: "wharf", password, ephemeral: true });
    await changeWhileDownRetrying(sql);
    await eventually("Redis to match the table exactly", () => exact(r, sql, prefix, controlPrefix), 60_000);
    await sql`update public.people set email = 'after@example.com' where id = 2`;
    await eventually("a later update", async () => (await r.get(`${prefix}e:2`)) === "after@example.com");
  } finally {
    const code: number | undefined = await worker?.stop();
    await sql.end({ timeout: 1 });
    await pg.stop();
    const keys = await r.keys(`${prefix}*`);
    for (let i = 0; i < keys.length; i += 10_000) await r.unlink(...keys.slice(i, i + 10_000));
    r.disconnect();
    assert.equal(code, 0);
  }
  assert.ok(!worker!.logs.text().includes(password), "the Postgres password never reaches the logs");
});

/** The test's own pool may still hold a connection from before the restart: retry once it reconnects. */
async function changeWhileDownRetrying(sql: Sql) {
  for (let i = 0;; i++) {
    try {
      await changeWhileDown(sql);
      return;
    } catch (e) {
      if (i > 20) throw e;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}
