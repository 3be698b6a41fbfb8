import assert from "node:assert/strict";
import { join } from "node:path";
import { createTestDatabase, testEnv } from "../../shared/testing/mod.ts";
import { WharfError } from "../../shared/errors.ts";
import {
  ensureDefaultMappings,
  loadMappings,
  loadMappingsFile,
  parseTemplate,
  resolveUsersTable,
} from "./mapping.ts";
import { fullSyncQuery } from "./projection.ts";

Deno.test("parseTemplate() splits literal text and columns, reads {{ }} as braces, and refuses bad templates", () => {
  assert.deepEqual(parseTemplate("user:{id}:email"), [{ text: "user:" }, { column: "id" }, {
    text: ":email",
  }]);
  assert.deepEqual(parseTemplate("{{x}}{a}{b}"), [{ text: "{x}" }, { column: "a" }, { column: "b" }]);
  for (const bad of ["user", "user:{id", "user:}", "{}", "{a{b}"]) {
    assert.throws(() => parseTemplate(bad), (e) => e instanceof WharfError && e.status === 400, bad);
  }
});

Deno.test("the projection passes template text and the prefix as parameters, never as SQL text", () => {
  const q = fullSyncQuery({
    name: "x",
    source: { schema: "public", table: 'we"ird' },
    keyTemplate: "k:{id}:'; drop table x; --",
    value: { shape: "string", column: "email" },
    keyPrefix: "p'",
    ttlSeconds: null,
    periodSeconds: null,
    enabled: true,
    resyncRequestedAt: null,
  });
  assert.ok(!q.text.includes("drop table"));
  assert.ok(q.text.includes('"public"."we""ird"'));
  assert.deepEqual(q.params, ["p'k:", ":'; drop table x; --"]);
});

Deno.test("users resolves to app.users when it exists, else public.users, and the defaults are stored only then", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await sql`drop table if exists app.users cascade`;
  assert.equal(await resolveUsersTable(sql), undefined);
  assert.equal(await ensureDefaultMappings(sql), 0, "no users table yet: nothing stored");
  await sql`create table public.users (id int primary key, email text, username text, password text)`;
  assert.deepEqual(await resolveUsersTable(sql), { schema: "public", table: "users" });
  await sql`create table app.users (id int primary key, email text, username text, password text)`;
  assert.deepEqual(await resolveUsersTable(sql), { schema: "app", table: "users" });
  assert.equal(await ensureDefaultMappings(sql), 2);
  assert.equal(await ensureDefaultMappings(sql), 0, "idempotent");
  const ms = await loadMappings(sql);
  assert.deepEqual(ms.map((m) => [m.name, m.source, m.keyTemplate, m.value]), [
    ["users_email", { schema: "app", table: "users" }, "{id}", { shape: "string", column: "email" }],
    ["users_password", { schema: "app", table: "users" }, "{username}", {
      shape: "string",
      column: "password",
    }],
  ]);
});

Deno.test("a mappings file is stored whole, or not at all when one entry is bad", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.items (id int primary key, name text)`;
  const file = join(testEnv.tmp, `mappings-${db.name}.json`);
  const ok = {
    name: "items",
    source: { table: "items" },
    key_template: "item:{id}",
    value: { shape: "json" },
  };
  await Deno.writeTextFile(file, JSON.stringify([ok, { ...ok, name: "bad", key_template: "item:{nope}" }]));
  await assert.rejects(
    () => loadMappingsFile(db.sql, file),
    /mapping 1 of the mappings file.*no column nope/,
  );
  assert.equal((await loadMappings(db.sql)).length, 0);
  await Deno.writeTextFile(file, JSON.stringify([ok]));
  assert.equal(await loadMappingsFile(db.sql, file), 1);
  assert.deepEqual((await loadMappings(db.sql))[0].source, { schema: "public", table: "items" });
  await Deno.remove(file);
});
