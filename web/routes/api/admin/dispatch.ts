/**
 * Admin API for dispatch, mounted at `/api/admin` (so `/api/admin/functions`, `/triggers`, `/events`,
 * `/schedules`, `/nodes`, and `/schemas` to list or install dispatch schemas). Functions are compiled in
 * a sandbox before they are saved, so a typo is a 400 with the compiler's message instead of a dead event
 * later.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import type { AppEnv, AppOptions } from "../../../app.tsx";
import type { Sql } from "../../../../shared/db.ts";
import { WharfError } from "../../../../shared/errors.ts";
import { parseCron } from "../../../../workers/dispatch/cron.ts";
import { installSchema } from "../../../../workers/dispatch/node.ts";
import { runInSandbox } from "../../../../workers/dispatch/sandbox.ts";

const Ident = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, "must be a plain identifier");

const FunctionBody = z.object({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, "must be lower case letters, digits and _"),
  code: z.string().min(1).max(1_000_000),
  signature: z.string().nullable().optional(),
  timeout_ms: z.number().int().min(10).max(600_000).optional(),
  max_attempts: z.number().int().min(1).max(100).optional(),
  backoff_ms: z.number().int().min(1).max(3_600_000).optional(),
  enabled: z.boolean().optional(),
});

const TriggerBody = z.object({
  table_schema: Ident,
  table_name: Ident,
  function_name: z.string(),
  ops: z.array(z.enum(["insert", "update", "delete"])).min(1).optional(),
});

const ScheduleBody = z.object({
  function_name: z.string(),
  cron: z.string(),
  enabled: z.boolean().optional(),
});

const EventQuery = z.object({
  state: z.enum(["pending", "running", "done", "dead"]).optional(),
  function: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: z.coerce.number().int().optional(),
});

function needSql(o: AppOptions): Sql {
  if (!o.sql) throw new WharfError(503, "Cannot serve dispatch as no database is configured");
  return o.sql;
}

async function compile(code: string): Promise<void> {
  const r = await runInSandbox({ code, timeoutMs: 10_000, checkOnly: true });
  if (!r.ok) throw new WharfError(400, `Cannot save function as its code does not compile: ${r.error}`);
}

const SchemaQuery = z.object({ schema: Ident.optional() });

/**
 * Builds the dispatch admin routes. They serve the `control` schema (or `settings.schema`) unless a
 * request names another with `?schema=`, which must be one dispatch was installed in
 * (`control.dispatch_schemas`).
 */
export function dispatchAdminRoutes(
  options: AppOptions,
  settings: { schema?: string } = {},
): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const installed = new Set<string>();

  /** The database and the dispatch schema this request is about. */
  async function target(c: Context<AppEnv>) {
    const sql = needSql(options);
    const name = SchemaQuery.parse(c.req.query()).schema ?? settings.schema ?? "control";
    if (!installed.has(name)) {
      const [row] = await sql`select 1 from control.dispatch_schemas where name = ${name}`;
      if (!row) throw new WharfError(404, "Cannot serve the schema as dispatch is not installed in it");
      installed.add(name);
    }
    return { sql, s: sql(name) };
  }

  r.get("/schemas", async (c) => {
    const sql = needSql(options);
    return c.json(await sql`select * from control.dispatch_schemas order by name`);
  });
  r.post("/schemas", async (c) => {
    const sql = needSql(options);
    const b = z.object({ name: Ident }).parse(await c.req.json());
    await installSchema(sql, b.name);
    const [row] = await sql`select * from control.dispatch_schemas where name = ${b.name}`;
    return c.json(row, 201);
  });

  r.get("/functions", async (c) => {
    const { sql, s } = await target(c);
    return c.json(await sql`select * from ${s}.dispatch_functions order by name`);
  });
  r.put("/functions/:name", async (c) => {
    const { sql, s } = await target(c);
    const b = FunctionBody.parse({ ...await c.req.json(), name: c.req.param("name") });
    await compile(b.code);
    const [row] = await sql`
      insert into ${s}.dispatch_functions (name, code, signature, timeout_ms, max_attempts, backoff_ms, enabled)
      values (${b.name}, ${b.code}, ${b.signature ?? null}, ${b.timeout_ms ?? 5000}, ${b.max_attempts ?? 5},
              ${b.backoff_ms ?? 500}, ${b.enabled ?? true})
      on conflict (name) do update set code = excluded.code, signature = excluded.signature,
        timeout_ms = excluded.timeout_ms, max_attempts = excluded.max_attempts,
        backoff_ms = excluded.backoff_ms, enabled = excluded.enabled, updated_at = now()
      returning *`;
    return c.json(row);
  });
  r.delete("/functions/:name", async (c) => {
    const { sql, s } = await target(c);
    const rows = await sql`delete from ${s}.dispatch_functions where name = ${
      c.req.param("name")
    } returning name`;
    if (!rows.length) throw new WharfError(404, "Cannot delete function as it does not exist");
    return c.body(null, 204);
  });

  r.get(
    "/triggers",
    async (c) => {
      const { sql, s } = await target(c);
      return c.json(await sql`select * from ${s}.dispatch_triggers order by id`);
    },
  );
  r.post("/triggers", async (c) => {
    const { sql, s } = await target(c);
    const b = TriggerBody.parse(await c.req.json());
    const row = await sql.begin(async (tx) => {
      const [t] = await tx`select 1 from information_schema.tables
                            where table_schema = ${b.table_schema} and table_name = ${b.table_name}`;
      if (!t) throw new WharfError(400, "Cannot add trigger as the table does not exist");
      const [f] = await tx`select 1 from ${s}.dispatch_functions where name = ${b.function_name}`;
      if (!f) throw new WharfError(400, "Cannot add trigger as the function does not exist");
      const [row] = await tx`
        insert into ${s}.dispatch_triggers (table_schema, table_name, function_name, ops)
        values (${b.table_schema}, ${b.table_name}, ${b.function_name},
                ${b.ops ?? ["insert", "update", "delete"]})
        on conflict (table_schema, table_name, function_name) do update set ops = excluded.ops
        returning *`;
      await tx`select ${s}.dispatch_install(${b.table_schema}, ${b.table_name})`;
      return row;
    });
    return c.json(row, 201);
  });
  r.delete("/triggers/:id", async (c) => {
    const { sql, s } = await target(c);
    const id = z.coerce.number().int().parse(c.req.param("id"));
    await sql.begin(async (tx) => {
      const [gone] = await tx<{ table_schema: string; table_name: string }[]>`
        delete from ${s}.dispatch_triggers where id = ${id} returning table_schema, table_name`;
      if (!gone) throw new WharfError(404, "Cannot delete trigger as it does not exist");
      // The table's last trigger: detach the recording triggers too, so its writes cost nothing more.
      const [left] = await tx`
        select 1 from ${s}.dispatch_triggers
         where table_schema = ${gone.table_schema} and table_name = ${gone.table_name} limit 1`;
      const [table] = await tx`select 1 from information_schema.tables
                                where table_schema = ${gone.table_schema} and table_name = ${gone.table_name}`;
      if (!left && table) await tx`select ${s}.dispatch_uninstall(${gone.table_schema}, ${gone.table_name})`;
    });
    return c.body(null, 204);
  });

  r.get(
    "/schedules",
    async (c) => {
      const { sql, s } = await target(c);
      return c.json(await sql`select * from ${s}.dispatch_schedules order by id`);
    },
  );
  r.post("/schedules", async (c) => {
    const { sql, s } = await target(c);
    const b = ScheduleBody.parse(await c.req.json());
    parseCron(b.cron);
    const [f] = await sql`select 1 from ${s}.dispatch_functions where name = ${b.function_name}`;
    if (!f) throw new WharfError(400, "Cannot add schedule as the function does not exist");
    const [row] = await sql`insert into ${s}.dispatch_schedules (function_name, cron, enabled)
      values (${b.function_name}, ${b.cron}, ${b.enabled ?? true}) returning *`;
    return c.json(row, 201);
  });
  r.delete("/schedules/:id", async (c) => {
    const { sql, s } = await target(c);
    const id = z.coerce.number().int().parse(c.req.param("id"));
    const rows = await sql`delete from ${s}.dispatch_schedules where id = ${id} returning id`;
    if (!rows.length) throw new WharfError(404, "Cannot delete schedule as it does not exist");
    return c.body(null, 204);
  });

  r.get("/events", async (c) => {
    const { sql, s } = await target(c);
    const q = EventQuery.parse(c.req.query());
    const rows = await sql`
      select * from ${s}.dispatch_events
       where true
         ${q.state ? sql`and state = ${q.state}` : sql``}
         ${q.function ? sql`and function_name = ${q.function}` : sql``}
         ${q.before ? sql`and id < ${q.before}` : sql``}
       order by id desc limit ${q.limit}`;
    return c.json(rows);
  });
  r.post("/events/:id/retry", async (c) => {
    const { sql, s } = await target(c);
    const id = z.coerce.number().int().parse(c.req.param("id"));
    const rows = await sql`
      update ${s}.dispatch_events set state = 'pending', attempts = 0, run_at = now(), claimed_by = null,
        finished_at = null
       where id = ${id} and state = 'dead' returning *`;
    if (!rows.length) throw new WharfError(409, "Cannot retry event as it is not dead");
    return c.json(rows[0]);
  });

  // Console additions: switch things on and off without resending them, run a function once against a
  // sample event, follow one event, and retry every dead event at once.
  const Enabled = z.object({ enabled: z.boolean() });
  r.patch("/functions/:name", async (c) => {
    const b = Enabled.parse(await c.req.json());
    const [row] = await needSql(options)`update control.dispatch_functions set enabled = ${b.enabled},
      updated_at = now() where name = ${c.req.param("name")} returning *`;
    if (!row) throw new WharfError(404, "Cannot change function as it does not exist");
    return c.json(row);
  });
  r.patch("/triggers/:id", async (c) => {
    const id = z.coerce.number().int().parse(c.req.param("id"));
    const b = Enabled.parse(await c.req.json());
    const [row] = await needSql(options)`update control.dispatch_triggers set enabled = ${b.enabled}
      where id = ${id} returning *`;
    if (!row) throw new WharfError(404, "Cannot change trigger as it does not exist");
    return c.json(row);
  });
  r.patch("/schedules/:id", async (c) => {
    const id = z.coerce.number().int().parse(c.req.param("id"));
    const b = Enabled.parse(await c.req.json());
    const [row] = await needSql(options)`update control.dispatch_schedules set enabled = ${b.enabled}
      where id = ${id} returning *`;
    if (!row) throw new WharfError(404, "Cannot change schedule as it does not exist");
    return c.json(row);
  });
  const TestBody = z.object({
    event: z.object({
      op: z.enum(["insert", "update", "delete"]).optional(),
      table_schema: Ident.optional(),
      table_name: Ident.optional(),
      row_id: z.union([z.string(), z.number()]).optional(),
      new: z.record(z.string(), z.unknown()).nullable().optional(),
      old: z.record(z.string(), z.unknown()).nullable().optional(),
    }).default({}),
  });
  r.post("/functions/:name/test", async (c) => {
    const sql = needSql(options);
    const b = TestBody.parse(await c.req.json());
    const e = b.event;
    const [f] = await sql`select 1 from control.dispatch_functions where name = ${c.req.param("name")}`;
    if (!f) throw new WharfError(404, "Cannot test-run function as it does not exist");
    const [row] = await sql`
      insert into control.dispatch_events (function_name, source, table_schema, table_name, op, row_id,
                                           new_row, old_row)
      values (${c.req.param("name")}, 'manual', ${e.table_schema ?? null}, ${e.table_name ?? null},
              ${e.op ?? null}, ${e.row_id === undefined ? null : String(e.row_id)},
              ${e.new ? sql.json(e.new as Record<string, never>) : null},
              ${e.old ? sql.json(e.old as Record<string, never>) : null})
      returning *`;
    await sql`select pg_notify('wharf_dispatch', '')`;
    return c.json(row, 201);
  });
  r.get("/events/:id{[0-9]+}", async (c) => {
    const [row] = await needSql(options)`select * from control.dispatch_events where id = ${
      c.req.param("id")
    }`;
    if (!row) throw new WharfError(404, "Cannot find event");
    return c.json(row);
  });
  // Dead events start over; with `failed`, events waiting out their backoff after an error run now too.
  r.post("/events/retry", async (c) => {
    const b = z.object({ function: z.string().optional(), failed: z.boolean().optional() })
      .parse(await c.req.json().catch(() => ({})));
    const sql = needSql(options);
    const fn = b.function ? sql`and function_name = ${b.function}` : sql``;
    const rows = await sql`
      update control.dispatch_events set state = 'pending', attempts = 0, run_at = now(), claimed_by = null,
        finished_at = null
       where state = 'dead' ${fn}
      returning id`;
    const failed = b.failed
      ? await sql`update control.dispatch_events set run_at = now()
                   where state = 'pending' and last_error is not null and run_at > now() ${fn} returning id`
      : [];
    if (failed.length) await sql`select pg_notify('wharf_dispatch', '')`;
    return c.json({ retried: rows.length + failed.length });
  });

  r.get("/nodes", async (c) => {
    const { sql, s } = await target(c);
    return c.json(
      await sql`
        select n.*, case when l.holder = n.node_id and l.lease_until > now() then 'master' else 'node' end as role,
               n.lease_until > now() and n.stopped_at is null as alive
          from ${s}.dispatch_nodes n cross join ${s}.dispatch_leases l
         where l.name = 'master'
         order by n.started_at desc`,
    );
  });
  return r;
}
