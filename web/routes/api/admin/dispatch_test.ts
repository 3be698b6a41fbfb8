import assert from "node:assert/strict";
import { createTestDatabase } from "../../../../shared/testing/mod.ts";
import { adminClient } from "./_testing.ts";

Deno.test("the dispatch admin API validates, saves and lists functions, triggers, schedules, events and nodes", async () => {
  await using db = await createTestDatabase();
  const { app, call } = adminClient(db.sql);

  const bad = await call("PUT", "/functions/broken", { code: "export default () => { let x = ; }" });
  assert.equal(bad.status, 400);
  assert.match(JSON.stringify(bad.body), /does not compile/);
  assert.equal((await call("PUT", "/functions/Bad-Name", { code: "export default () => {}" })).status, 400);

  const ok = await call("PUT", "/functions/noop", { code: "export default () => {}", max_attempts: 2 });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.max_attempts, 2);

  await db.sql`create table public.items (id int primary key)`;
  const trig = await call("POST", "/triggers", {
    table_schema: "public",
    table_name: "items",
    function_name: "noop",
  });
  assert.equal(trig.status, 201);
  assert.equal(
    (await call("POST", "/triggers", { table_schema: "public", table_name: "nope", function_name: "noop" }))
      .status,
    400,
  );
  await db.sql`insert into public.items values (1)`;
  const evs = await call("GET", "/events?function=noop&state=pending");
  assert.equal(evs.body.length, 1);
  assert.equal(evs.body[0].row_id, "1");

  assert.equal((await call("POST", "/schedules", { function_name: "noop", cron: "61 * * * *" })).status, 400);
  assert.equal(
    (await call("POST", "/schedules", { function_name: "noop", cron: "*/2 * * * *" })).status,
    201,
  );
  assert.equal((await call("GET", "/schedules")).body.length, 1);

  assert.equal((await call("POST", `/events/${evs.body[0].id}/retry`)).status, 409);
  await db.sql`update control.dispatch_events set state = 'dead', attempts = 2`;
  const retried = await call("POST", `/events/${evs.body[0].id}/retry`);
  assert.equal(retried.status, 200);
  assert.equal(retried.body.state, "pending");

  await db.sql`insert into control.dispatch_nodes (node_id, host, pid, bind, lease_until)
               values ('a', 'h', 1, 'x:1', now() + interval '1 minute'), ('b', 'h', 2, 'x:2', now() - interval '1 minute')`;
  await db.sql`update control.dispatch_leases set holder = 'a', lease_until = now() + interval '1 minute'`;
  const nodes = (await call("GET", "/nodes")).body as { node_id: string; role: string; alive: boolean }[];
  assert.deepEqual(nodes.map((n) => [n.node_id, n.role, n.alive]).sort(), [["a", "master", true], [
    "b",
    "node",
    false,
  ]]);

  assert.equal((await call("DELETE", "/functions/noop")).status, 204);
  assert.equal((await call("GET", "/triggers")).body.length, 0);
  assert.equal((await app.request("/api/admin/functions")).status, 401);
});

Deno.test("deleting a table's last dispatch trigger detaches the recording triggers from the table", async () => {
  await using db = await createTestDatabase();
  const { call } = adminClient(db.sql);
  const installed = async () =>
    (await db.sql`select count(*)::int as n from pg_trigger
                   where tgrelid = 'public.items'::regclass and tgname like 'wharf_dispatch%'`)[0].n;
  await db.sql`create table public.items (id int primary key)`;
  for (const name of ["one", "two"]) {
    assert.equal((await call("PUT", `/functions/${name}`, { code: "export default () => {}" })).status, 200);
  }
  const [a, b] = [
    await call("POST", "/triggers", { table_schema: "public", table_name: "items", function_name: "one" }),
    await call("POST", "/triggers", { table_schema: "public", table_name: "items", function_name: "two" }),
  ];
  assert.equal(await installed(), 3, "insert, update and delete triggers");

  // Another function still listens: the table stays recorded.
  assert.equal((await call("DELETE", `/triggers/${a.body.id}`)).status, 204);
  assert.equal(await installed(), 3);
  await db.sql`insert into public.items values (1)`;
  assert.deepEqual(
    (await db.sql`select function_name from control.dispatch_events`).map((r) => r.function_name),
    ["two"],
  );

  // The last one: nothing is recorded any more, and the table has no dispatch trigger left.
  assert.equal((await call("DELETE", `/triggers/${b.body.id}`)).status, 204);
  assert.equal(await installed(), 0);
  await db.sql`insert into public.items values (2)`;
  assert.equal((await db.sql`select count(*)::int as n from control.dispatch_events`)[0].n, 1);
  assert.equal((await call("DELETE", `/triggers/${b.body.id}`)).status, 404);
});
