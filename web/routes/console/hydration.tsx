import type { Sql } from "../../../shared/db.ts";
import { WharfError } from "../../../shared/errors.ts";
import {
  fromRow,
  type MappingRow,
  sourceColumns,
  toInput,
  validateMapping,
} from "../../../workers/hydrate/mapping.ts";
import { Island } from "../../components/Island.tsx";
import { ago, count, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { MappingForm, type MappingValue } from "../../islands/MappingForm.tsx";
import type { ConsolePage } from "./page.ts";

interface StatsRow extends MappingRow {
  last_sync_started_at: Date | null;
  last_sync_finished_at: Date | null;
  last_sync_duration_ms: number | null;
  last_sync_rows: number | null;
  last_sync_rows_per_s: number | null;
  last_sync_keys_written: number | null;
  last_sync_keys_removed: number | null;
  changes_applied: number;
  last_change_applied_at: Date | null;
  freshness_lag_ms: number | null;
  last_error: string | null;
  last_error_at: Date | null;
}

function mappingsWithStats(sql: Sql, name?: string): Promise<StatsRow[]> {
  return sql<StatsRow[]>`
    select m.*, s.last_sync_started_at, s.last_sync_finished_at, s.last_sync_duration_ms,
           s.last_sync_rows::float8 as last_sync_rows, s.last_sync_rows_per_s,
           s.last_sync_keys_written::float8 as last_sync_keys_written,
           s.last_sync_keys_removed::float8 as last_sync_keys_removed,
           coalesce(s.changes_applied, 0)::float8 as changes_applied, s.last_change_applied_at,
           s.freshness_lag_ms, s.last_error, s.last_error_at
      from control.hydrate_mappings m left join control.hydrate_stats s on s.mapping = m.name
     where ${name === undefined ? sql`true` : sql`m.name = ${name}`}
     order by m.name`;
}

function source(m: StatsRow): string {
  return m.source_query !== null ? "query" : `${m.source_schema}.${m.source_table}`;
}

/** Whether a resync was asked for and the worker has not started a sync since. */
function resyncPending(m: StatsRow): boolean {
  return !!m.resync_requested_at &&
    (!m.last_sync_started_at || m.last_sync_started_at < m.resync_requested_at);
}

function SyncState({ m }: { m: StatsRow }) {
  if (
    m.last_error &&
    (!m.last_sync_finished_at || (m.last_error_at && m.last_error_at > m.last_sync_finished_at))
  ) {
    return <span class="badge dead">error</span>;
  }
  if (!m.enabled) return <span class="badge stopped">disabled</span>;
  if (resyncPending(m)) return <span class="badge pending">resync asked</span>;
  if (!m.last_sync_finished_at) return <span class="badge pending">never synced</span>;
  return <span class="badge ok">synced</span>;
}

function Stats({ m }: { m: StatsRow }) {
  return (
    <dl class="facts" data-testid={`stats-${m.name}`}>
      <dt>Last full sync</dt>
      <dd title={stamp(m.last_sync_finished_at)}>
        {m.last_sync_finished_at
          ? (
            <>
              {ago(m.last_sync_finished_at)}: {count(m.last_sync_rows)} rows in{" "}
              {m.last_sync_duration_ms === null ? "–" : `${count(m.last_sync_duration_ms)} ms`}{" "}
              ({count(m.last_sync_rows_per_s)} rows/s), {count(m.last_sync_keys_written)} keys written,{" "}
              {count(m.last_sync_keys_removed)} removed
            </>
          )
          : "never"}
      </dd>
      <dt>Changes applied</dt>
      <dd>
        {count(m.changes_applied)}
        {m.last_change_applied_at && <>, last {ago(m.last_change_applied_at)}</>}
      </dd>
      <dt>Freshness lag</dt>
      <dd>{m.freshness_lag_ms === null ? "–" : `${count(m.freshness_lag_ms)} ms`}</dd>
      {m.last_error && (
        <>
          <dt>Last error</dt>
          <dd class="error" title={stamp(m.last_error_at)}>
            <code>{m.last_error}</code> ({ago(m.last_error_at)})
          </dd>
        </>
      )}
    </dl>
  );
}

/**
 * Hydration: the mappings that keep Redis in step with Postgres, with each one's last sync stats; create
 * and edit with a "Validate" step against the live source (the admin API's 400 message inline), resync
 * now, enable / disable, delete. Changes go through `/api/admin/hydration`.
 */
export const hydrationPage: ConsolePage = {
  href: "/console/hydration",
  title: "Hydration",
  routes(r, kit) {
    r.get("/hydration", async (c) => {
      const rows = await mappingsWithStats(kit.sql());
      return kit.render(c, {
        title: "Hydration",
        active: "/console/hydration",
        body: (
          <>
            <h1>Hydration</h1>
            <section class="card">
              <h2>Mappings</h2>
              {rows.length
                ? (
                  <>
                    <div class="table-wrap">
                      <table data-testid="mappings">
                        <thead>
                          <tr>
                            <th>Mapping</th>
                            <th>Source</th>
                            <th>Key</th>
                            <th>State</th>
                            <th>Last sync</th>
                            <th>Rows</th>
                            <th>Changes</th>
                            <th></th>
                          </tr>
                        </thead>
                        <tbody>
                          {rows.map((m) => (
                            <tr data-mapping={m.name}>
                              <td data-label="Mapping">
                                <a href={`/console/hydration/${m.name}`}>{m.name}</a>
                              </td>
                              <td data-label="Source">
                                <code>{source(m)}</code>
                              </td>
                              <td data-label="Key">
                                <code>{m.key_prefix}{m.key_template}</code> ({m.value_shape})
                              </td>
                              <td data-label="State">
                                <SyncState m={m} />
                              </td>
                              <td data-label="Last sync" title={stamp(m.last_sync_finished_at)}>
                                {m.last_sync_finished_at ? ago(m.last_sync_finished_at) : "never"}
                              </td>
                              <td data-label="Rows">{count(m.last_sync_rows)}</td>
                              <td data-label="Changes">{count(m.changes_applied)}</td>
                              <td class="actions">
                                <Island
                                  component={ApiAction}
                                  props={{
                                    label: "Resync now",
                                    method: "POST",
                                    url: `/api/admin/hydration/mappings/${m.name}/resync`,
                                    variant: "quiet",
                                    testid: `resync-${m.name}`,
                                  }}
                                />
                              </td>
                            </tr>
                          ))}
                        </tbody>
                      </table>
                    </div>
                    <div class="actions">
                      <Island
                        component={ApiAction}
                        props={{
                          label: "Resync all",
                          method: "POST",
                          url: "/api/admin/hydration/resync",
                          confirm: "Run a full sync of every mapping?",
                          variant: "quiet",
                        }}
                      />
                    </div>
                  </>
                )
                : (
                  <p class="empty">
                    No mapping. A mapping turns each row of a table or query into a Redis key; the hydrate
                    worker keeps them in step.
                  </p>
                )}
            </section>
            <section class="card">
              <h2>New mapping</h2>
              <Island
                component={MappingForm}
                props={{ validateUrl: "/console/hydration/validate", testid: "new-mapping" }}
              />
            </section>
          </>
        ),
      });
    });

    r.post("/hydration/validate", async (c) => {
      let raw: unknown;
      try {
        raw = await c.req.json();
      } catch {
        throw new WharfError(400, "Cannot read the request body as JSON");
      }
      const sql = kit.sql();
      const m = await validateMapping(sql, raw);
      return c.json({ ok: true, columns: await sourceColumns(sql, m.source) });
    });

    r.get("/hydration/:name", async (c) => {
      const name = c.req.param("name");
      const [m] = /^[a-z][a-z0-9_]{0,62}$/.test(name) ? await mappingsWithStats(kit.sql(), name) : [];
      if (!m) {
        return kit.render(c, {
          title: "Hydration",
          active: "/console/hydration",
          status: 404,
          body: (
            <section class="card">
              <h1>Mapping not found</h1>
              <p class="error">There is no mapping named {name}.</p>
              <a href="/console/hydration">All mappings</a>
            </section>
          ),
        });
      }
      const value = toInput(fromRow(m)) as MappingValue & { resync_requested_at?: unknown };
      delete value.resync_requested_at;
      return kit.render(c, {
        title: `Mapping ${m.name}`,
        active: "/console/hydration",
        body: (
          <>
            <p class="crumbs">
              <a href="/console/hydration">Hydration</a> / {m.name}
            </p>
            <h1>
              {m.name} <SyncState m={m} />
            </h1>
            <section class="card">
              <h2>Last sync</h2>
              <Stats m={m} />
              <div class="actions">
                <Island
                  component={ApiAction}
                  props={{
                    label: "Resync now",
                    method: "POST",
                    url: `/api/admin/hydration/mappings/${m.name}/resync`,
                    testid: `resync-${m.name}`,
                  }}
                />
              </div>
            </section>
            <section class="card">
              <h2>Edit</h2>
              <Island
                component={MappingForm}
                props={{ initial: value, validateUrl: "/console/hydration/validate", testid: "edit-mapping" }}
              />
            </section>
            <section class="card danger-zone">
              <h2>Delete</h2>
              <p class="muted">
                Its keys stay in Redis until they expire; the capture trigger leaves the table when no mapping
                reads it.
              </p>
              <Island
                component={ApiAction}
                props={{
                  label: "Delete mapping",
                  method: "DELETE",
                  url: `/api/admin/hydration/mappings/${m.name}`,
                  confirm: `Delete the mapping ${m.name}?`,
                  then: "/console/hydration",
                  variant: "danger",
                }}
              />
            </section>
          </>
        ),
      });
    });
  },
};
