import assert from "node:assert/strict";
import { createTestDatabase, type TestDatabase } from "../../../shared/testing/mod.ts";
import { writeSnapshot } from "../../../workers/discovery/status.ts";
import { createApp } from "../../app.tsx";
import { upsertAdmin } from "../../console/auth.ts";

const PASSWORD = "correct horse battery";

/** An app with one admin, logged in: the session cookie and its CSRF token. */
async function session(db: TestDatabase) {
  await upsertAdmin(db.sql, "ops", PASSWORD);
  const app = createApp({ sql: db.sql, islandsVersion: "t" });
  const form = await app.request("/console/login");
  const token = /name="_csrf" value="([^"]+)"/.exec(await form.text())![1];
  const loginCookie = form.headers.getSetCookie().find((c) => c.startsWith("wharf_login="))!.split(";")[0];
  const res = await app.request("/console/login", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", cookie: loginCookie },
    body: new URLSearchParams({ name: "ops", password: PASSWORD, next: "/console", _csrf: token }),
  });
  await res.body?.cancel();
  const cookie = res.headers.getSetCookie().find((c) => c.startsWith("wharf_session="))!.split(";")[0];
  const html = await (await app.request("/console/audit", { headers: { cookie, accept: "text/html" } }))
    .text();
  const csrf = /<meta name="csrf-token" content="([^"]+)"/.exec(html)![1];
  const page = async (path: string) => {
    const r = await app.request(path, { headers: { cookie, accept: "text/html" } });
    return { status: r.status, html: await r.text() };
  };
  const call = async (method: string, path: string, body?: unknown, withCsrf = true) => {
    const r = await app.request(path, {
      method,
      headers: {
        cookie,
        accept: "application/json",
        ...(withCsrf ? { "x-csrf-token": csrf } : {}),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };
  return { app, page, call };
}

Deno.test("the hydration page lists mappings with their last sync, validates inline and edits through the admin API", async () => {
  await using db = await createTestDatabase();
  const s = await session(db);
  const empty = await s.page("/console/hydration");
  assert.equal(empty.status, 200);
  assert.match(empty.html, /No mapping\./);
  assert.match(empty.html, /data-island="MappingForm"/);

  await db.sql`create table public.people (id int primary key, email text, name text)`;
  const bad = {
    name: "emails",
    source: { table: "people" },
    key_template: "p:{id}",
    value: { shape: "string", column: "mail" },
  };
  const refused = await s.call("POST", "/console/hydration/validate", bad);
  assert.equal(refused.status, 400);
  assert.match(refused.body.error.message, /has no column mail/);
  const noCsrf = await s.call("POST", "/console/hydration/validate", bad, false);
  assert.equal(noCsrf.status, 403);
  const good = { ...bad, value: { shape: "string", column: "email" } };
  const valid = await s.call("POST", "/console/hydration/validate", good);
  assert.equal(valid.status, 200);
  assert.deepEqual(valid.body.columns, ["id", "email", "name"]);
  assert.equal(
    (await db.sql`select count(*)::int as n from control.hydrate_mappings`)[0].n,
    0,
    "validate stores nothing",
  );

  assert.equal((await s.call("POST", "/api/admin/hydration/mappings", good)).status, 201);
  await db.sql`insert into control.hydrate_stats (mapping, last_sync_started_at, last_sync_finished_at,
                 last_sync_duration_ms, last_sync_rows, last_sync_rows_per_s, last_sync_keys_written,
                 last_sync_keys_removed, changes_applied)
               values ('emails', now() - interval '2 s', now() - interval '1 s', 1000, 4242, 4242, 4242, 3, 17)`;
  const list = await s.page("/console/hydration");
  assert.match(list.html, /data-mapping="emails"/);
  assert.match(list.html, /public\.people/);
  assert.match(list.html, /4,242/);
  assert.match(list.html, /badge ok">synced/);
  const detail = await s.page("/console/hydration/emails");
  assert.equal(detail.status, 200);
  assert.match(detail.html, /data-testid="stats-emails"/);
  assert.match(detail.html, /4,242<!-- -->? rows|4,242 rows/);
  assert.match(detail.html, /&quot;column&quot;:&quot;email&quot;|"column":"email"/);

  assert.equal((await s.call("POST", "/api/admin/hydration/mappings/emails/resync")).status, 202);
  assert.match((await s.page("/console/hydration")).html, /resync asked/);
  const audit = await db
    .sql`select action, status from control.console_audit where via = 'session' order by id`;
  assert.ok(
    audit.some((a) => /hydration\/mappings\/:name\/resync/.test(a.action) || /resync/.test(a.action)),
  );
  assert.equal((await s.page("/console/hydration/nope")).status, 404);
});

Deno.test("the replication page shows slot state, rows per table, the retained WAL warning, lag points and pause", async () => {
  await using db = await createTestDatabase();
  const s = await session(db);
  const empty = await s.page("/console/replication");
  assert.equal(empty.status, 200);
  assert.match(empty.html, /No pipeline has reported/);

  await db.sql`insert into control.replicate_pipelines
                 (name, slot_name, publication, target_kind, bucket, state, lag_bytes, lag_seconds,
                  retained_wal_bytes, wal_warn_bytes, confirmed_lsn)
               values ('orders', 'orders_slot', 'orders_pub', 'postgres', 'rep', 'streaming', 2048, 1.5,
                       5000, 4096, '0/16B3748')`;
  await db
    .sql`insert into control.replicate_tables (pipeline, table_name, rows_applied, batches, snapshot_state)
               values ('orders', 'public.orders', 1234567, 12, 'done')`;
  await db.sql`insert into control.replicate_lag_history (pipeline, at, lag_bytes, lag_seconds)
               select 'orders', now() - make_interval(secs => g), g * 100, g / 10.0 from generate_series(1, 5) g`;
  const page = await s.page("/console/replication");
  assert.match(page.html, /data-pipeline="orders" data-state="streaming"/);
  assert.match(page.html, /data-testid="wal-warning"/);
  assert.match(page.html, /0\/16B3748/);
  assert.match(page.html, /1,234,567/);
  assert.match(page.html, /data-points="5"/);
  const live = await s.call("GET", "/console/live/replication/orders/lag");
  assert.equal(live.body.t.length, 5);
  assert.deepEqual(live.body.values[0], [500, 400, 300, 200, 100]);

  assert.equal(
    (await s.call("POST", "/api/admin/replication/pipelines/orders/pause", undefined, false)).status,
    403,
  );
  assert.equal((await s.call("POST", "/api/admin/replication/pipelines/orders/pause")).status, 200);
  assert.match((await s.page("/console/replication")).html, /data-testid="resume-orders"|resume-orders/);
  assert.equal((await s.call("POST", "/api/admin/replication/pipelines/orders/resume")).status, 200);
  assert.equal((await db.sql`select paused from control.replicate_pipelines`)[0].paused, false);
});

Deno.test("the cluster page shows members written by the discovery status code, their history, and a switchover confirmation", async () => {
  await using db = await createTestDatabase();
  const s = await session(db);
  assert.match((await s.page("/console/cluster")).html, /No cluster has reported/);

  const t0 = Date.now() - 10_000;
  await writeSnapshot(db.sql, "main", [
    { name: "pg1", role: "leader", state: "running", host: "10.0.0.1", port: 5432, timeline: 1 },
    { name: "pg2", role: "replica", state: "streaming", host: "10.0.0.2", port: 5432, timeline: 1, lag: 0 },
  ], new Date(t0));
  await writeSnapshot(db.sql, "main", [
    {
      name: "pg1",
      role: "replica",
      state: "streaming",
      host: "10.0.0.1",
      port: 5432,
      timeline: 2,
      lag: 1024,
    },
    { name: "pg2", role: "leader", state: "running", host: "10.0.0.2", port: 5432, timeline: 2 },
    { name: "pg3", role: "replica", state: "streaming", host: "10.0.0.3", port: 5432, timeline: 2, lag: 0 },
  ], new Date(t0 + 5_000));
  const page = await s.page("/console/cluster");
  assert.match(page.html, /data-member="pg2" data-role="leader"/);
  assert.match(page.html, /data-member="pg1" data-role="replica"/);
  assert.match(page.html, /1\.0 KiB/);
  assert.match(page.html, /data-kind="failover"/);
  assert.match(page.html, /leader pg1 → pg2, timeline 2/);
  assert.match(page.html, /data-kind="join"/);
  assert.match(page.html, /href="\/console\/cluster\/switchover\?scope=main&amp;candidate=pg3"/);

  const confirm = await s.page("/console/cluster/switchover?scope=main&candidate=pg3");
  assert.equal(confirm.status, 200);
  assert.match(confirm.html, /The leader <strong>pg2<\/strong> hands over to/);
  assert.match(confirm.html, /data-island="ApiAction"/);
  assert.match(confirm.html, /Confirm switchover/);
  const toLeader = await s.page("/console/cluster/switchover?scope=main&candidate=pg2");
  assert.equal(toLeader.status, 409);
  assert.match(toLeader.html, /pg2 already leads/);
  assert.equal((await s.page("/console/cluster/switchover?scope=main&candidate=pg9")).status, 409);
  assert.equal((await s.page("/console/cluster/switchover")).status, 400);
  // Without Patroni credentials the API refuses, and says why.
  const refused = await s.call("POST", "/api/admin/cluster/switchover", { scope: "main", candidate: "pg3" });
  assert.equal(refused.status, 503);
  assert.match(refused.body.error.message, /no Patroni REST API credentials/);
});

Deno.test("the feed page lists users and feeds; deleting a feed and disabling a user go through the audited admin API", async () => {
  await using db = await createTestDatabase();
  const s = await session(db);
  const empty = await s.page("/console/feed");
  assert.match(empty.html, /No user has signed up yet/);
  assert.match(empty.html, /Nobody has posted a feed yet/);

  const [alice] = await db.sql`insert into app.users (email, username, password)
                                values ('alice@example.com', 'alice', 'x') returning id::text`;
  await db.sql`insert into app.users (email, username, password) values ('bob@example.com', 'bob', 'x')`;
  const [feed] = await db.sql`insert into app.feeds (user_id, caption, media_key, content_type, size_bytes)
                               values (${alice.id}, 'sunset', 'm/1', 'image/jpeg', 2048) returning id::text`;
  await db.sql`insert into app.refresh_tokens (token_hash, user_id, family, expires_at)
               values ('\\x01', ${alice.id}, gen_random_uuid(), now() + interval '1 day')`;
  const page = await s.page("/console/feed");
  assert.match(page.html, /data-user="alice" data-disabled="false"/);
  assert.match(page.html, new RegExp(`data-feed="${feed.id}"`));
  assert.match(page.html, /sunset/);
  const search = await s.page("/console/feed?q=bob");
  assert.match(search.html, /data-user="bob"/);
  assert.doesNotMatch(search.html, /data-user="alice"/);
  const ofBob = await s.page(`/console/feed?user=${Number(alice.id) + 1}`);
  assert.match(ofBob.html, /bob has posted nothing/);
  assert.equal((await s.page("/console/feed?user=abc")).status, 200, "a bad filter is ignored, not a 500");

  assert.equal((await s.call("DELETE", `/api/admin/feed/feeds/${feed.id}`, undefined, false)).status, 403);
  assert.equal((await s.call("DELETE", `/api/admin/feed/feeds/${feed.id}`)).status, 204);
  assert.equal((await s.call("DELETE", `/api/admin/feed/feeds/${feed.id}`)).status, 404);
  assert.equal((await db.sql`select count(*)::int as n from app.feeds`)[0].n, 0);

  const disabled = await s.call("POST", `/api/admin/feed/users/${alice.id}/disable`);
  assert.equal(disabled.status, 200);
  assert.ok(disabled.body.disabled_at);
  const [tok] = await db.sql`select revoked_at from app.refresh_tokens`;
  assert.ok(tok.revoked_at, "a disabled user's refresh tokens are revoked");
  assert.match((await s.page("/console/feed")).html, /data-user="alice" data-disabled="true"/);
  assert.equal((await s.call("POST", `/api/admin/feed/users/${alice.id}/enable`)).status, 200);
  assert.equal(
    (await db.sql`select disabled_at from app.users where username = 'alice'`)[0].disabled_at,
    null,
  );
  assert.equal((await s.call("POST", "/api/admin/feed/users/999999/disable")).status, 404);

  const listed = await s.call("GET", "/api/admin/feed/users?q=ali");
  assert.deepEqual(listed.body.map((u: { username: string }) => u.username), ["alice"]);
  const audit = await db.sql<{ action: string; status: number }[]>`
    select action, status from control.console_audit where action like '%/feed/%' order by id`;
  assert.deepEqual(audit.map((a) => a.status), [204, 404, 200, 200, 404]);
  assert.ok(audit.every((a) => a.action.includes("/feed/")));
});
