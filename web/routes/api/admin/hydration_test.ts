import assert from "node:assert/strict";
import { createTestDatabase } from "../../../../shared/testing/mod.ts";
import { adminClient } from "./_testing.ts";

const good = {
  name: "emails",
  source: { schema: "public", table: "people" },
  key_template: "user:{id}:email",
  value: { shape: "string", column: "email" },
};

Deno.test("the hydration admin API refuses bad mappings with a 400 and stores nothing", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.people (id int primary key, email text, secret text)`;
  await db.sql`create sequence public.seq`;
  const { app, call } = adminClient(db.sql, "/api/admin/hydration");
  const cases: [string, unknown, RegExp][] = [
    ["missing column", { ...good, value: { shape: "string", column: "mail" } }, /no column mail/],
    ["missing template column", { ...good, key_template: "user:{uid}" }, /no column uid/],
    ["unclosed placeholder", { ...good, key_template: "user:{id" }, /key template/],
    ["template without a column", { ...good, key_template: "user" }, /names no \{column\}/],
    ["unknown table", { ...good, source: { schema: "public", table: "nope" } }, /does not exist/],
    ["bad shape", { ...good, value: { shape: "list" } }, /validation/i],
    ["bad name", { ...good, name: "Bad Name" }, /validation/i],
    [
      "a write",
      { ...good, source: { query: "insert into public.people values (9) returning *" } },
      /read-only/,
    ],
    [
      "two statements",
      { ...good, source: { query: "select 1 as id; drop table public.people" } },
      /read-only/,
    ],
    [
      "a volatile write",
      { ...good, source: { query: "select nextval('public.seq') as id, 'x' as email" } },
      /read-only/,
    ],
    ["a data-modifying WITH", {
      ...good,
      source: { query: "with d as (delete from public.people returning *) select * from d" },
    }, /read-only/],
    ["not JSON", "{nope", /JSON/],
  ];
  for (const [what, body, message] of cases) {
    const res = await call("POST", "/mappings", body);
    assert.equal(res.status, 400, what);
    assert.match(JSON.stringify(res.body), message, what);
  }
  assert.equal((await call("GET", "/mappings")).body.length, 0);
  const [n] = await db.sql`select count(*)::int as n from public.people`;
  assert.equal(n.n, 0);
  const [t] = await db.sql`select count(*)::int as n from pg_trigger where tgname like 'wharf_hydrate%'`;
  assert.equal(t.n, 0, "no trigger installed for refused mappings");
  assert.equal((await app.request("/api/admin/hydration/mappings")).status, 401);
});

Deno.test("the hydration admin API creates, reads, replaces, resyncs and deletes mappings and lists stats", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.people (id int primary key, email text, secret text)`;
  const { call } = adminClient(db.sql, "/api/admin/hydration");

  const created = await call("POST", "/mappings", good);
  assert.equal(created.status, 201);
  assert.equal(created.body.key_prefix, "");
  assert.equal((await call("POST", "/mappings", good)).status, 409);
  const q = await call("POST", "/mappings", {
    name: "docs",
    source: { query: "select id, email from public.people where email is not null" },
    key_template: "doc:{id}",
    value: { shape: "json" },
    ttl_seconds: 60,
  });
  assert.equal(q.status, 201);
  const [trig] = await db.sql`select count(*)::int as n from pg_trigger
                                where tgrelid = 'public.people'::regclass and tgname like 'wharf_hydrate%'`;
  assert.equal(trig.n, 2, "the capture triggers are installed on the mapped table");

  const list = await call("GET", "/mappings");
  assert.deepEqual(list.body.map((m: { name: string }) => m.name), ["docs", "emails"]);
  assert.equal((await call("GET", "/mappings/emails")).body.source.table, "people");
  assert.equal((await call("GET", "/mappings/none")).status, 404);

  const replaced = await call("PUT", "/mappings/emails", {
    ...good,
    name: "ignored",
    value: { shape: "hash", columns: ["email"] },
    key_prefix: "app:",
  });
  assert.equal(replaced.status, 200);
  assert.equal(replaced.body.name, "emails");
  const bad = await call("PUT", "/mappings/emails", { ...good, value: { shape: "hash", columns: ["nope"] } });
  assert.equal(bad.status, 400);
  assert.equal(
    (await call("GET", "/mappings/emails")).body.value.shape,
    "hash",
    "a refused update changes nothing",
  );
  assert.equal((await call("PUT", "/mappings/none", good)).status, 404);

  const resync = await call("POST", "/mappings/emails/resync");
  assert.equal(resync.status, 202);
  assert.ok(resync.body.resync_requested_at);
  assert.equal((await call("POST", "/mappings/none/resync")).status, 404);
  assert.deepEqual((await call("POST", "/resync")).body.mappings.sort(), ["docs", "emails"]);

  await db
    .sql`insert into control.hydrate_stats (mapping, last_sync_rows, generation) values ('emails', 5, 7)`;
  const stats = await call("GET", "/stats");
  assert.equal(stats.status, 200);
  const e = stats.body.find((s: { mapping: string }) => s.mapping === "emails");
  assert.equal(Number(e.last_sync_rows), 5);
  assert.equal(stats.body.find((s: { mapping: string }) => s.mapping === "docs").last_sync_rows, null);

  assert.equal((await call("DELETE", "/mappings/emails")).status, 204);
  assert.equal((await call("DELETE", "/mappings/emails")).status, 404);
  assert.equal((await call("DELETE", "/mappings/docs")).status, 204);
  const [after] = await db.sql`select count(*)::int as n from pg_trigger where tgname like 'wharf_hydrate%'`;
  assert.equal(after.n, 0, "triggers go with the last mapping of the table");
});
