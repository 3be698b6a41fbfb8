/**
 * Observability of hydrate: Prometheus series on the worker's `/metrics`, and one row per mapping in
 * `control.hydrate_stats` that the console reads (it never asks the worker).
 */
import type { Sql } from "../../shared/db.ts";
import type { Registry } from "../../shared/metrics.ts";
import type { Mapping } from "./mapping.ts";
import type { ApplyResult, ChangeRef, FullSyncResult } from "./sync.ts";

/** The hydrate series, registered once per worker. */
export class HydrateMetrics {
  readonly #syncDuration;
  readonly #rows;
  readonly #keysWritten;
  readonly #keysRemoved;
  readonly #lastSync;
  readonly #rowsPerS;
  readonly #generation;
  readonly #lag;
  readonly #changeLag;
  readonly #errors;

  constructor(reg: Registry) {
    this.#syncDuration = reg.histogram(
      "wharf_hydrate_full_sync_duration_seconds",
      "Duration of full syncs by mapping",
      [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    );
    this.#rows = reg.counter("wharf_hydrate_rows_total", "Rows read by mapping and kind (full, change)");
    this.#keysWritten = reg.counter("wharf_hydrate_keys_written_total", "Redis keys written by mapping");
    this.#keysRemoved = reg.counter("wharf_hydrate_keys_removed_total", "Redis keys removed by mapping");
    this.#lastSync = reg.gauge(
      "wharf_hydrate_last_full_sync_timestamp_seconds",
      "End of the last full sync by mapping (Unix time)",
    );
    this.#rowsPerS = reg.gauge(
      "wharf_hydrate_last_full_sync_rows_per_second",
      "Rows per second of the last full sync",
    );
    this.#generation = reg.gauge("wharf_hydrate_generation", "Published generation by mapping");
    this.#lag = reg.gauge(
      "wharf_hydrate_freshness_lag_seconds",
      "Age of the oldest change of the mapping's table not yet in Redis (0 when caught up)",
    );
    this.#changeLag = reg.histogram(
      "wharf_hydrate_change_lag_seconds",
      "From a change's recording in Postgres to its write in Redis",
    );
    this.#errors = reg.counter("wharf_hydrate_errors_total", "Failed steps by mapping");
  }

  /** Records a finished full sync. */
  fullSync(mapping: string, r: FullSyncResult): void {
    const l = { mapping };
    this.#syncDuration.observe(r.durationMs / 1000, l);
    this.#rows.inc({ mapping, kind: "full" }, r.rows);
    this.#keysWritten.inc(l, r.keysWritten);
    this.#keysRemoved.inc(l, r.keysRemoved);
    this.#lastSync.set(Date.now() / 1000, l);
    this.#rowsPerS.set(r.durationMs > 0 ? r.rows / (r.durationMs / 1000) : 0, l);
    this.#generation.set(r.generation, l);
  }

  /** Records an applied batch of changes. */
  changes(r: ApplyResult, refs: ChangeRef[]): void {
    for (const [mapping, n] of r.applied) this.#rows.inc({ mapping, kind: "change" }, n);
    for (const c of refs) this.#changeLag.observe(Number(c.lag_ms) / 1000);
  }

  /** Sets the freshness lag of every mapping from the per-table lags. */
  lags(mappings: Mapping[], lags: Map<string, number>): void {
    for (const m of mappings) {
      const t = "table" in m.source ? `${m.source.schema}.${m.source.table}` : "";
      this.#lag.set((lags.get(t) ?? 0) / 1000, { mapping: m.name });
    }
  }

  /** Counts a failed step. */
  error(mapping: string | undefined): void {
    this.#errors.inc({ mapping: mapping ?? "" });
  }

  /** Drops a deleted mapping's gauges (counters keep their totals, as Prometheus expects). */
  forget(mapping: string): void {
    this.#lag.set(0, { mapping });
  }
}

/** Writes the stats row of a finished full sync. */
export async function writeSyncStats(
  sql: Sql,
  mapping: string,
  started: Date,
  r: FullSyncResult,
): Promise<void> {
  const rps = r.durationMs > 0 ? r.rows / (r.durationMs / 1000) : 0;
  await sql`
    insert into control.hydrate_stats as s (mapping, last_sync_started_at, last_sync_finished_at,
      last_sync_duration_ms, last_sync_rows, last_sync_rows_per_s, last_sync_keys_written,
      last_sync_keys_removed, generation, last_error, last_error_at, updated_at)
    select ${mapping}, ${started}, now(), ${r.durationMs}, ${r.rows}, ${rps}, ${r.keysWritten},
           ${r.keysRemoved}, ${r.generation}, null, null, now()
     where exists (select 1 from control.hydrate_mappings where name = ${mapping})
    on conflict (mapping) do update set last_sync_started_at = excluded.last_sync_started_at,
      last_sync_finished_at = excluded.last_sync_finished_at,
      last_sync_duration_ms = excluded.last_sync_duration_ms, last_sync_rows = excluded.last_sync_rows,
      last_sync_rows_per_s = excluded.last_sync_rows_per_s,
      last_sync_keys_written = excluded.last_sync_keys_written,
      last_sync_keys_removed = excluded.last_sync_keys_removed, generation = excluded.generation,
      last_error = null, last_error_at = null, updated_at = now()`;
}

/** Adds applied changes to the mappings' stats rows. */
export async function writeChangeStats(sql: Sql, applied: Map<string, number>): Promise<void> {
  for (const [mapping, n] of applied) {
    if (!n) continue;
    await sql`
      insert into control.hydrate_stats (mapping, changes_applied, last_change_applied_at)
      select ${mapping}, ${n}, now() where exists (select 1 from control.hydrate_mappings where name = ${mapping})
      on conflict (mapping) do update set changes_applied = control.hydrate_stats.changes_applied + ${n},
        last_change_applied_at = now(), updated_at = now()`;
  }
}

/** Records a failure on a mapping's stats row. The message is the error's, never a connection string. */
export async function writeErrorStats(sql: Sql, mapping: string, message: string): Promise<void> {
  await sql`
    insert into control.hydrate_stats (mapping, last_error, last_error_at)
    select ${mapping}, ${message.slice(0, 2_000)}, now()
     where exists (select 1 from control.hydrate_mappings where name = ${mapping})
    on conflict (mapping) do update set last_error = excluded.last_error, last_error_at = now(),
      updated_at = now()`;
}

/**
 * Writes every table mapping's freshness lag (age of its oldest pending change, 0 when none) and
 * returns the per-table lags in milliseconds, keyed `schema.table`.
 */
export async function writeLagStats(sql: Sql): Promise<Map<string, number>> {
  const rows = await sql<{ t: string; lag_ms: number }[]>`
    select table_schema || '.' || table_name as t,
           extract(epoch from clock_timestamp() - min(created_at)) * 1000 as lag_ms
      from control.hydrate_changes group by table_schema, table_name`;
  const lags = new Map(rows.map((r) => [r.t, Number(r.lag_ms)]));
  await sql`
    insert into control.hydrate_stats as s (mapping, freshness_lag_ms)
    select m.name, coalesce(l.lag_ms, 0)
      from control.hydrate_mappings m
      left join (select table_schema, table_name,
                        extract(epoch from clock_timestamp() - min(created_at)) * 1000 as lag_ms
                   from control.hydrate_changes group by 1, 2) l
        on l.table_schema = m.source_schema and l.table_name = m.source_table
    on conflict (mapping) do update set freshness_lag_ms = excluded.freshness_lag_ms,
      updated_at = now()
      where s.freshness_lag_ms is distinct from excluded.freshness_lag_ms`;
  return lags;
}
