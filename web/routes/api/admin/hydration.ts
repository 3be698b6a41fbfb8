/**
 * Admin API for hydrate, mounted at `/api/admin/hydration`: mappings (list, read, create, replace,
 * delete), stats, and "resync now". A mapping is checked against the live table or query before it is
 * stored (missing column, bad template, a query that is not a read-only SELECT → 400, nothing stored);
 * the worker picks changes up from the table and a NOTIFY, never from this process.
 */
import { Hono } from "hono";
import type { AppEnv, AppOptions } from "../../../app.tsx";
import type { Sql } from "../../../../shared/db.ts";
import { WharfError } from "../../../../shared/errors.ts";
import {
  deleteMapping,
  fromRow,
  type MappingRow,
  saveMapping,
  toInput,
  validateMapping,
} from "../../../../workers/hydrate/mapping.ts";

function needSql(o: AppOptions): Sql {
  if (!o.sql) throw new WharfError(503, "Cannot serve hydration as no database is configured");
  return o.sql;
}

async function body(c: { req: { json(): Promise<unknown> } }): Promise<Record<string, unknown>> {
  let b: unknown;
  try {
    b = await c.req.json();
  } catch {
    throw new WharfError(400, "Cannot read the request body as JSON");
  }
  if (!b || typeof b !== "object" || Array.isArray(b)) {
    throw new WharfError(400, "Cannot use the request body as it is not a JSON object");
  }
  return b as Record<string, unknown>;
}

/** Builds the hydration admin routes. */
export function hydrationAdminRoutes(options: AppOptions): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/mappings", async (c) => {
    const rows = await needSql(options)<MappingRow[]>`select * from control.hydrate_mappings order by name`;
    return c.json(rows.map((row) => toInput(fromRow(row))));
  });
  r.get("/mappings/:name", async (c) => {
    const [row] = await needSql(options)<MappingRow[]>`
      select * from control.hydrate_mappings where name = ${c.req.param("name")}`;
    if (!row) throw new WharfError(404, "Cannot find the mapping");
    return c.json(toInput(fromRow(row)));
  });
  r.post("/mappings", async (c) => {
    const sql = needSql(options);
    const m = await validateMapping(sql, await body(c));
    await sql.begin((tx) => saveMapping(tx, m, false));
    return c.json(toInput(m), 201);
  });
  r.put("/mappings/:name", async (c) => {
    const sql = needSql(options);
    const m = await validateMapping(sql, { ...await body(c), name: c.req.param("name") });
    await sql.begin((tx) => saveMapping(tx, m, true));
    return c.json(toInput(m));
  });
  r.delete("/mappings/:name", async (c) => {
    const sql = needSql(options);
    const gone = await sql.begin((tx) => deleteMapping(tx, c.req.param("name")));
    if (!gone) throw new WharfError(404, "Cannot delete the mapping as it does not exist");
    return c.body(null, 204);
  });
  r.post("/mappings/:name/resync", async (c) => {
    const sql = needSql(options);
    const rows = await sql`
      update control.hydrate_mappings set resync_requested_at = now() where name = ${c.req.param("name")}
      returning name, resync_requested_at`;
    if (!rows.length) throw new WharfError(404, "Cannot resync the mapping as it does not exist");
    await sql`select pg_notify('wharf_hydrate', 'resync')`;
    return c.json(rows[0], 202);
  });
  r.post("/resync", async (c) => {
    const sql = needSql(options);
    const rows = await sql`update control.hydrate_mappings set resync_requested_at = now() returning name`;
    await sql`select pg_notify('wharf_hydrate', 'resync')`;
    return c.json({ mappings: rows.map((x) => x.name) }, 202);
  });
  r.get("/stats", async (c) => {
    const rows = await needSql(options)`
      select m.name as mapping, m.enabled, s.last_sync_started_at, s.last_sync_finished_at,
             s.last_sync_duration_ms, s.last_sync_rows, s.last_sync_rows_per_s, s.last_sync_keys_written,
             s.last_sync_keys_removed, s.generation, coalesce(s.changes_applied, 0) as changes_applied,
             s.last_change_applied_at, s.freshness_lag_ms, s.last_error, s.last_error_at
        from control.hydrate_mappings m left join control.hydrate_stats s on s.mapping = m.name
       order by m.name`;
    return c.json(rows);
  });

  return r;
}
