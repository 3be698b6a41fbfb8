/**
 * Test helpers of hydrate: a Redis connection with a per-test key prefix, sync deps, and a people table.
 */
import type { Sql } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { waitFor } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { connectRedis, type HydrateRedis } from "./redis.ts";
import type { SyncDeps } from "./sync.ts";

/** A quiet logger for tests. */
export const quietLog = createLogger("hydrate-test", { level: "error" });

/** Connects to `url` and waits until the connection is ready. */
export async function testRedis(url: string): Promise<HydrateRedis & AsyncDisposable> {
  const r = connectRedis(url, {}, quietLog);
  const end = performance.now() + 10_000;
  while (r.client.status !== "ready") {
    if (performance.now() > end) throw new Error("Timed out waiting for Redis to be ready");
    await abortableSleep(20);
  }
  return Object.assign(r, { [Symbol.asyncDispose]: () => r.close() });
}

/** Sync deps with hydrate's own keys under `prefix`. */
export function testDeps(
  sql: Sql,
  redis: HydrateRedis,
  prefix: string,
  extra: Partial<SyncDeps> = {},
): SyncDeps {
  return { sql, redis, controlPrefix: prefix + "h:", batchRows: 100, atomicFlipKeys: 100_000, ...extra };
}

/** Creates `public.people (id, username, email, password, age, born)` with `n` rows. */
export async function createPeople(sql: Sql, n: number): Promise<void> {
  await sql`create table public.people (
    id bigint generated always as identity primary key, username text unique not null, email text,
    password text not null, age int, born date)`;
  if (n) {
    await sql`insert into public.people (username, email, password, age, born)
      select 'user' || g, 'user' || g || '@example.com', 'hash' || g, 20 + g % 50, date '2000-01-01' + g
        from generate_series(1, ${n}) g`;
  }
}

/** Polls `check` until it is true (10 s at most). */
export async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  await waitFor(what, check, ms, 25);
}
