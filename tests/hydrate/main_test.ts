import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { Redis } from "ioredis";
import { startRedis } from "../../shared/stack/redis.ts";
import { freePort } from "../../shared/stack/process.ts";
import { captureText, createTestDatabase, testEnv, testId } from "../../shared/testing/mod.ts";
import { eventually } from "../../workers/hydrate/_testing.ts";

const MAIN = fromFileUrl(new URL("../../workers/hydrate/main.ts", import.meta.url));

function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR", "TMPDIR", "LANG"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

Deno.test("the worker started with only pcred hydrates merflow's default mapping from users and follows changes", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  // The default mapping reads app.users when it exists; this test gives it public.users only.
  await sql`drop table if exists app.users cascade`;
  await sql`create table public.users (id bigint generated always as identity primary key,
    email text unique not null, username text unique not null, password text not null)`;
  await sql`insert into public.users (email, username, password) values
    ('ada@example.com', 'ada', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA'),
    ('bob@example.com', 'bob', '$argon2id$bob')`;
  const redis = await startRedis({ dir: join(testEnv.tmp, `redis-${testId()}`), port: freePort() });
  const r = new Redis(redis.url);
  const opsPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    clearEnv: true,
    env: {
      ...baseEnv(),
      // merflow's variable, with TLS to Postgres checked against the test server's CA.
      pcred: `${db.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(testEnv.pgCaFile)}`,
      REDIS_URL: redis.url,
      OPS_PORT: String(opsPort),
      HYDRATE_POLL_MS: "200",
    },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logs = captureText(child.stderr);
  let ok = false;
  try {
    await eventually(
      "both default mappings in Redis",
      async () => (await r.get("bob")) === "$argon2id$bob",
      20_000,
    );
    assert.equal(await r.get("2"), "bob@example.com");
    assert.equal(await r.get("1"), "ada@example.com");
    assert.equal(await r.get("ada"), "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA");

    await sql`insert into public.users (email, username, password) values ('cy@example.com', 'cy', 'h-cy')`;
    await sql`update public.users set email = 'ada@new.example' where username = 'ada'`;
    await sql`delete from public.users where username = 'bob'`;
    await eventually("the changes in Redis", async () => (await r.get("3")) === "cy@example.com");
    await eventually("the update", async () => (await r.get("1")) === "ada@new.example");
    await eventually("the delete", async () => (await r.exists("2", "bob")) === 0);
    assert.equal(await r.get("cy"), "h-cy");

    // The lag gauges follow the stats writes, at most once a second.
    let metrics = "";
    await eventually("the freshness lag on /metrics", async () => {
      metrics = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
      return /wharf_hydrate_freshness_lag_seconds\{mapping="users_password"\} 0\n/.test(metrics);
    });
    assert.match(metrics, /wharf_hydrate_keys_written_total\{mapping="users_email"\} \d+/);
    // Stats rows are flushed at most once a second.
    await eventually("the change counts in the stats rows", async () => {
      const [s] = await sql`select changes_applied from control.hydrate_stats where mapping = 'users_email'`;
      return Number(s?.changes_applied) >= 3;
    });
    const stats = await sql`select * from control.hydrate_stats order by mapping`;
    assert.deepEqual(stats.map((s) => s.mapping), ["users_email", "users_password"]);
    assert.equal(Number(stats[0].last_sync_rows), 2);
    assert.ok(Number(stats[0].changes_applied) >= 3);
    assert.ok(stats[0].last_sync_finished_at instanceof Date);
    const [inst] = await sql`select status from control.worker_instances where worker = 'hydrate'`;
    assert.ok(inst, "the worker reports its instance");
    const tls = await sql`select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid)
                           where a.application_name = 'wharf-hydrate' and a.datname = ${db.name}`;
    assert.ok(tls.length > 0 && tls.every((t) => t.ssl), "the worker talks to Postgres over TLS");
    ok = true;
  } finally {
    if (!ok) console.error(logs.text());
    child.kill("SIGTERM");
    const status = await child.status;
    await logs.done;
    r.disconnect();
    await redis.stop();
    if (status.code !== 0) console.error(logs.text());
    assert.equal(status.code, 0, "a SIGTERM stops the worker cleanly");
  }
  const password = new URL(db.url).password;
  assert.ok(password.length > 8);
  assert.ok(!logs.text().includes(password), "the Postgres password never reaches the logs");
  assert.ok(!logs.text().includes("argon2"), "values never reach the logs");
});

Deno.test("the worker refuses to start without a Postgres URL and names the variables, not values", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    clearEnv: true,
    env: { ...baseEnv(), REDIS_URL: "redis://user:s3cret-value@127.0.0.1:1", OPS_PORT: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2);
  assert.match(text, /pcred, PCRED or DATABASE_URL/);
  assert.ok(!text.includes("s3cret-value"));
});
