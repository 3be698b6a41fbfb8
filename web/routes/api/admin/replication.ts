/**
 * Admin API for replication, mounted at `/api/admin/replication`: pipelines with their figures, one
 * pipeline's tables and recent batches, lag over time (for the console's chart), pause and resume. The
 * worker writes the figures; pause and resume are a flag the worker reads within a couple of seconds.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv, AppOptions } from "../../../app.tsx";
import type { Sql } from "../../../../shared/db.ts";
import { WharfError } from "../../../../shared/errors.ts";

const Name = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, "must be lower case letters, digits and _");

const LagQuery = z.object({
  minutes: z.coerce.number().int().min(1).max(24 * 60).default(60),
  limit: z.coerce.number().int().min(1).max(10_000).default(1_000),
});

function needSql(o: AppOptions): Sql {
  if (!o.sql) throw new WharfError(503, "Cannot serve replication as no database is configured");
  return o.sql;
}

/** Pipeline figures plus `wal_warning`: retained WAL above the pipeline's threshold. */
const PIPELINE_COLUMNS =
  `name, slot_name, publication, target_kind, bucket, state, paused, lag_bytes, lag_seconds,
  retained_wal_bytes, wal_warn_bytes, coalesce(retained_wal_bytes > wal_warn_bytes, false) as wal_warning,
  confirmed_lsn, last_error, instance_id, updated_at, created_at`;

/** Builds the replication admin routes. */
export function replicationAdminRoutes(options: AppOptions): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/pipelines", async (c) => {
    const sql = needSql(options);
    return c.json(
      await sql.unsafe(`select ${PIPELINE_COLUMNS} from control.replicate_pipelines order by name`),
    );
  });

  r.get("/pipelines/:name", async (c) => {
    const sql = needSql(options);
    const name = Name.parse(c.req.param("name"));
    const [pipeline] = await sql.unsafe(
      `select ${PIPELINE_COLUMNS} from control.replicate_pipelines where name = $1`,
      [name],
    );
    if (!pipeline) throw new WharfError(404, "Cannot show pipeline as it does not exist");
    const tables = await sql`select table_name, rows_applied, batches, snapshot_state, snapshot_rows,
                                    snapshot_total, last_lsn, last_batch_at
                               from control.replicate_tables where pipeline = ${name} order by table_name`;
    const batches = await sql`select id, table_name, rows, bytes, duration_ms, lsn, s3_key, loaded_at
                                from control.replicate_batches where pipeline = ${name}
                               order by id desc limit 50`;
    return c.json({ ...pipeline, tables, batches });
  });

  r.get("/pipelines/:name/lag", async (c) => {
    const sql = needSql(options);
    const name = Name.parse(c.req.param("name"));
    const q = LagQuery.parse(c.req.query());
    const rows = await sql`
      select at, lag_bytes, lag_seconds, retained_wal_bytes from (
        select * from control.replicate_lag_history
         where pipeline = ${name} and at > now() - make_interval(mins => ${q.minutes})
         order by at desc limit ${q.limit}) h
       order by at`;
    return c.json(rows);
  });

  const setPaused = (paused: boolean) => async (c: import("hono").Context<AppEnv>) => {
    const sql = needSql(options);
    const name = Name.parse(c.req.param("name"));
    const rows = await sql`update control.replicate_pipelines set paused = ${paused}, updated_at = now()
                            where name = ${name} returning name, paused, state`;
    if (!rows.length) throw new WharfError(404, "Cannot change pipeline as it does not exist");
    return c.json(rows[0]);
  };
  r.post("/pipelines/:name/pause", setPaused(true));
  r.post("/pipelines/:name/resume", setPaused(false));
  return r;
}
