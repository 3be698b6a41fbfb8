import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { adminClient } from "../../web/routes/api/admin/_testing.ts";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { installSchema } from "../../workers/dispatch/node.ts";

const MAIN = fromFileUrl(new URL("../../workers/dispatch/main.ts", import.meta.url));

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    await abortableSleep(100);
  }
  throw new Error(`Timed out waiting for ${what}`);
}

Deno.test("a node started on another schema installs dispatch there and runs that schema's triggers", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await sql`create table public.orders (id int primary key, total int)`;
  await sql`create table public.seen (event_id bigint, op text, row_id text)`;
  const env: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  // The schema comes as an argument, among the URL: arguments in any order.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-worker-options", MAIN, db.url, "tenant_a"],
    clearEnv: true,
    env: { ...env, OPS_PORT: "0", DISPATCH_POLL_MS: "200", WHARF_LOG_LEVEL: "warn" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await until("the node registered in tenant_a", async () => {
      const r = await sql`select count(*)::int as n from tenant_a.dispatch_nodes`;
      return r[0].n === 1;
    });
    const [installed] = await sql`select name from control.dispatch_schemas where name = 'tenant_a'`;
    assert.ok(installed, "the install is recorded");

    const { call } = adminClient(sql);
    assert.equal((await call("GET", "/functions?schema=nowhere")).status, 404);
    assert.equal((await call("GET", "/functions?schema=bad-name")).status, 400);
    // Installed from the admin API: the tables and the claim function a node needs.
    assert.equal((await call("POST", "/schemas", { name: "tenant_b" })).status, 201);
    const [fn] =
      await sql`select to_regprocedure('tenant_b.dispatch_claim(text, integer, bigint[], tid[], float8[], jsonb)')
                         is not null as ok,
                       to_regprocedure('tenant_b.dispatch_claim(text, integer, bigint[], tid[], float8[], jsonb, bigint, bigint)')
                         is not null as after`;
    assert.ok(fn.ok && fn.after);
    const code = `export default async (e, db) => {
      await db.sql\`insert into public.seen values (\${e.id}, \${e.op}, \${e.row_id})\`;
    }`;
    assert.equal((await call("PUT", "/functions/mark?schema=tenant_a", { code })).status, 200);
    const trig = await call("POST", "/triggers?schema=tenant_a", {
      table_schema: "public",
      table_name: "orders",
      function_name: "mark",
    });
    assert.equal(trig.status, 201);

    await sql`insert into public.orders values (1, 10), (2, 20)`;
    await sql`update public.orders set total = 11 where id = 1`;
    await sql`delete from public.orders where id = 2`;
    const seen = await until("four runs", async () => {
      const r = await sql`select op, row_id from public.seen order by event_id`;
      return r.length === 4 && r;
    });
    assert.deepEqual(seen.map((r) => [r.op, r.row_id]), [
      ["insert", "1"],
      ["insert", "2"],
      ["update", "1"],
      ["delete", "2"],
    ]);
    const events = await until("four events done", async () => {
      const r = await call("GET", "/events?schema=tenant_a&state=done");
      return r.body.length === 4 && r.body;
    });
    assert.ok(events.every((e: { table_name: string }) => e.table_name === "orders"));
    // Nothing went through the default schema.
    const [c] = await sql`select count(*)::int as n from control.dispatch_events`;
    assert.equal(c.n, 0);
    const nodes = (await call("GET", "/nodes?schema=tenant_a")).body;
    assert.equal(nodes.length, 1);
    assert.equal(nodes[0].role, "master");
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  }
});

Deno.test("installing a schema twice is harmless and odd names are quoted or refused", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await sql`select control.dispatch_install_schema('Mixed_Case')`;
  await sql`select control.dispatch_install_schema('Mixed_Case')`;
  await sql`insert into "Mixed_Case".dispatch_functions (name, code) values ('f', 'export default () => {}')`;
  await sql`create table public.t (id int primary key)`;
  await sql`insert into "Mixed_Case".dispatch_triggers (table_schema, table_name, function_name)
            values ('public', 't', 'f')`;
  await sql`select "Mixed_Case".dispatch_install('public', 't')`;
  await sql`insert into public.t values (1)`;
  const [e] = await sql`select op, row_id from "Mixed_Case".dispatch_events`;
  assert.deepEqual({ ...e }, { op: "insert", row_id: "1" });
  // The claim function a node uses there (made by the node at its start, as here).
  await installSchema(sql, "Mixed_Case");
  await installSchema(sql, "Mixed_Case");
  await sql`insert into "Mixed_Case".dispatch_nodes (node_id, host, pid, bind, lease_until)
            values ('n', 'h', 1, 'b', now() + interval '1 minute')`;
  const claimed =
    await sql`select id, op, row_id, attempts from "Mixed_Case".dispatch_claim('n', 10, null, null, null, null)`;
  assert.deepEqual(claimed.map((r) => ({ op: r.op, row_id: r.row_id, attempts: r.attempts })), [
    { op: "insert", row_id: "1", attempts: 1 },
  ]);
  const [running] = await sql`select state, claimed_by from "Mixed_Case".dispatch_events`;
  assert.deepEqual({ ...running }, { state: "running", claimed_by: "n" });
  for (const install of ["dispatch_install_schema", "dispatch_install_claim"]) {
    await assert.rejects(
      sql`select ${sql("control")}.${sql(install)}('x; drop table public.t')`,
      /plain identifier/,
    );
  }
  assert.equal((await sql`select count(*)::int as n from public.t`)[0].n, 1);
});

Deno.test("the history's event-list index is ascending in control and in a node's schema, and lists newest first", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  const def = async (schema: string) =>
    (await sql`select pg_get_indexdef(${schema + ".dispatch_history_fn_idx"}::regclass) as d`)[0].d as string;
  assert.match(await def("control"), /\(function_name, state, id\)$/);
  // Installed as before (descending), then rebuilt by what a node runs at its start; once only.
  await sql`select control.dispatch_install_schema('tenant_h')`;
  assert.match(await def("tenant_h"), /id DESC\)$/);
  await installSchema(sql, "tenant_h");
  assert.match(await def("tenant_h"), /\(function_name, state, id\)$/);
  const [again] = await sql`select control.dispatch_history_index('tenant_h') as rebuilt`;
  assert.equal(again.rebuilt, false);
  await sql`
    insert into tenant_h.dispatch_history (id, function_name, source, state, attempts, run_at, created_at)
    select g, case when g % 100 = 0 then 'a' else 'b' end, 'manual', case when g % 300 = 0 then 'dead' else 'done' end,
           1, now(), now()
      from generate_series(1, 3000) g`;
  await sql`analyze tenant_h.dispatch_history`;
  await sql.begin(async (tx) => {
    // A rare function: its newest events by the index, read backwards, not by a scan of the whole history.
    const q = tx`select id from tenant_h.dispatch_events
                  where function_name = 'a' and state = 'done' and id < 2000 order by id desc limit 3`;
    const plan = (await tx`explain select id from tenant_h.dispatch_history
                            where function_name = 'a' and state = 'done' and id < 2000 order by id desc limit 3`)
      .map((r) => r["QUERY PLAN"]).join("\n");
    assert.match(plan, /Index (Only )?Scan Backward using dispatch_history_fn_idx/);
    assert.deepEqual((await q).map((r) => Number(r.id)), [1900, 1700, 1600]);
  });
});
