import { z } from "zod";
import type { Sql } from "../../../shared/db.ts";
import { Island } from "../../components/Island.tsx";
import { ago, bytes, count, seconds, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { type ChartData, TimeSeriesChart } from "../../islands/TimeSeriesChart.tsx";
import type { ConsolePage } from "./page.ts";

/** The worker refreshes a pipeline's figures every few seconds; older than this, they are stale. */
const STALE_AFTER_S = 30;
/** How much lag history the chart shows. */
const LAG_MINUTES = 60;

interface PipelineRow {
  name: string;
  slot_name: string;
  publication: string;
  target_kind: string;
  bucket: string;
  state: string;
  paused: boolean;
  lag_bytes: number | null;
  lag_seconds: number | null;
  retained_wal_bytes: number | null;
  wal_warn_bytes: number;
  wal_warning: boolean;
  confirmed_lsn: string | null;
  last_error: string | null;
  instance_id: string | null;
  updated_at: Date;
  age_s: number;
}

interface TableRow {
  pipeline: string;
  table_name: string;
  rows_applied: number;
  batches: number;
  snapshot_state: string;
  snapshot_rows: number;
  snapshot_total: number | null;
  last_lsn: string | null;
  last_batch_at: Date | null;
}

const Name = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/);

/** Lag over the last hour of one pipeline as chart data: bytes (left axis) and seconds (right axis). */
export async function lagSeries(sql: Sql, pipeline: string): Promise<ChartData> {
  const rows = await sql<{ t: number; lag_bytes: number | null; lag_seconds: number | null }[]>`
    select extract(epoch from at)::float8 as t, lag_bytes::float8 as lag_bytes, lag_seconds from (
      select at, lag_bytes, lag_seconds from control.replicate_lag_history
       where pipeline = ${pipeline} and at > now() - make_interval(mins => ${LAG_MINUTES})
       order by at desc limit 2000) h
     order by at`;
  return {
    t: rows.map((r) => r.t),
    values: [rows.map((r) => r.lag_bytes), rows.map((r) => r.lag_seconds)],
  };
}

function stateBadge(p: PipelineRow): { cls: string; text: string } {
  if (p.age_s > STALE_AFTER_S && p.state !== "stopped") return { cls: "stale", text: `${p.state} (stale)` };
  const cls = p.state === "streaming"
    ? "ok"
    : p.state === "retrying"
    ? "failed"
    : p.state === "stopped" || p.state === "paused"
    ? "stopped"
    : "pending";
  return { cls, text: p.state };
}

/**
 * Replication: each pipeline's state, slot (confirmed LSN, retained WAL with a warning past the
 * pipeline's threshold), lag in bytes and seconds over the last hour as a live chart, rows per table,
 * pause / resume through `/api/admin/replication`.
 */
export const replicationPage: ConsolePage = {
  href: "/console/replication",
  title: "Replication",
  routes(r, kit) {
    r.get("/replication", async (c) => {
      const sql = kit.sql();
      const [pipelines, tables] = await Promise.all([
        sql<PipelineRow[]>`
          select name, slot_name, publication, target_kind, bucket, state, paused,
                 lag_bytes::float8 as lag_bytes, lag_seconds, retained_wal_bytes::float8 as retained_wal_bytes,
                 wal_warn_bytes::float8 as wal_warn_bytes,
                 coalesce(retained_wal_bytes > wal_warn_bytes, false) as wal_warning,
                 confirmed_lsn, last_error, instance_id, updated_at,
                 extract(epoch from now() - updated_at)::float8 as age_s
            from control.replicate_pipelines order by name`,
        sql<TableRow[]>`
          select pipeline, table_name, rows_applied::float8 as rows_applied, batches::float8 as batches,
                 snapshot_state, snapshot_rows::float8 as snapshot_rows, snapshot_total::float8 as snapshot_total,
                 last_lsn, last_batch_at
            from control.replicate_tables order by pipeline, table_name`,
      ]);
      const lags = await Promise.all(pipelines.map((p) => lagSeries(sql, p.name)));
      return kit.render(c, {
        title: "Replication",
        active: "/console/replication",
        body: (
          <>
            <h1>Replication</h1>
            {!pipelines.length && (
              <section class="card">
                <p class="empty" data-testid="no-pipelines">
                  No pipeline has reported. A pipeline appears when the replicate worker starts it:{" "}
                  <code>deno task worker:replicate</code>.
                </p>
              </section>
            )}
            {pipelines.map((p, i) => {
              const badge = stateBadge(p);
              const own = tables.filter((t) => t.pipeline === p.name);
              return (
                <section class="card" data-pipeline={p.name} data-state={p.state}>
                  <h2>
                    {p.name} <span class={`badge ${badge.cls}`}>{badge.text}</span>
                    {p.paused && p.state !== "paused" && <span class="badge stopped">pausing</span>}
                  </h2>
                  {p.wal_warning && (
                    <p class="error" role="alert" data-testid="wal-warning">
                      The slot {p.slot_name} keeps {bytes(p.retained_wal_bytes)}{" "}
                      of WAL on the source, more than{" "}
                      {bytes(p.wal_warn_bytes)}. The source's disk fills while this pipeline is behind or
                      paused.
                    </p>
                  )}
                  {p.last_error && (
                    <p class="error" data-testid="pipeline-error">
                      Last error: <code>{p.last_error}</code>
                    </p>
                  )}
                  <dl class="facts">
                    <dt>Lag</dt>
                    <dd data-testid="lag">{bytes(p.lag_bytes)} · {seconds(p.lag_seconds)}</dd>
                    <dt>Slot</dt>
                    <dd>
                      <code>{p.slot_name}</code> confirmed at <code>{p.confirmed_lsn ?? "–"}</code>
                    </dd>
                    <dt>Retained WAL</dt>
                    <dd>{bytes(p.retained_wal_bytes)} (warns past {bytes(p.wal_warn_bytes)})</dd>
                    <dt>Publication</dt>
                    <dd>
                      <code>{p.publication}</code>
                    </dd>
                    <dt>Target</dt>
                    <dd>
                      {p.target_kind} via bucket <code>{p.bucket}</code>
                    </dd>
                    <dt>Updated</dt>
                    <dd title={stamp(p.updated_at)}>{ago(p.updated_at)} by {p.instance_id ?? "–"}</dd>
                  </dl>
                  <div class="actions">
                    {p.paused
                      ? (
                        <Island
                          component={ApiAction}
                          props={{
                            label: "Resume",
                            method: "POST",
                            url: `/api/admin/replication/pipelines/${p.name}/resume`,
                            testid: `resume-${p.name}`,
                          }}
                        />
                      )
                      : (
                        <Island
                          component={ApiAction}
                          props={{
                            label: "Pause",
                            method: "POST",
                            url: `/api/admin/replication/pipelines/${p.name}/pause`,
                            confirm:
                              `Pause ${p.name}? The slot keeps WAL on the source until the pipeline resumes.`,
                            variant: "danger",
                            testid: `pause-${p.name}`,
                          }}
                        />
                      )}
                  </div>
                  <Island
                    component={TimeSeriesChart}
                    props={{
                      title: `Lag over the last ${LAG_MINUTES} min`,
                      series: [
                        { label: "bytes", color: "#1565c0" },
                        { label: "seconds", color: "#ef6c00", axis: "right" },
                      ],
                      initial: lags[i],
                      url: `/console/live/replication/${p.name}/lag`,
                      intervalMs: 5_000,
                      leftUnit: "bytes",
                      rightUnit: "seconds",
                      testid: `lag-chart-${p.name}`,
                    }}
                  />
                  <h3>Tables</h3>
                  {own.length
                    ? (
                      <div class="table-wrap">
                        <table data-testid={`tables-${p.name}`}>
                          <thead>
                            <tr>
                              <th>Table</th>
                              <th>Rows applied</th>
                              <th>Batches</th>
                              <th>Snapshot</th>
                              <th>Last LSN</th>
                              <th>Last batch</th>
                            </tr>
                          </thead>
                          <tbody>
                            {own.map((t) => (
                              <tr data-table={t.table_name}>
                                <td data-label="Table">
                                  <code>{t.table_name}</code>
                                </td>
                                <td data-label="Rows applied">{count(t.rows_applied)}</td>
                                <td data-label="Batches">{count(t.batches)}</td>
                                <td data-label="Snapshot">
                                  <span class={`badge ${t.snapshot_state === "done" ? "ok" : "pending"}`}>
                                    {t.snapshot_state}
                                  </span>{" "}
                                  {t.snapshot_state === "done"
                                    ? `${count(t.snapshot_rows)} rows`
                                    : `${count(t.snapshot_rows)} / ${count(t.snapshot_total)}`}
                                </td>
                                <td data-label="Last LSN">
                                  <code>{t.last_lsn ?? "–"}</code>
                                </td>
                                <td data-label="Last batch" title={stamp(t.last_batch_at)}>
                                  {ago(t.last_batch_at)}
                                </td>
                              </tr>
                            ))}
                          </tbody>
                        </table>
                      </div>
                    )
                    : <p class="empty">No table of the publication has been seen yet.</p>}
                </section>
              );
            })}
          </>
        ),
      });
    });
    r.get("/live/replication/:name/lag", async (c) => {
      const name = Name.safeParse(c.req.param("name"));
      if (!name.success) return c.json({ t: [], values: [[], []] });
      return c.json(await lagSeries(kit.sql(), name.data));
    });
  },
};
