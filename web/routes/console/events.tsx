import { z } from "zod";
import type { Sql } from "../../../shared/db.ts";
import { Island } from "../../components/Island.tsx";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { EventLog, type EventRow } from "../../islands/EventLog.tsx";
import type { ConsolePage } from "./page.ts";

const STATES = ["pending", "running", "done", "dead"] as const;
const SOURCES = ["trigger", "schedule", "manual"] as const;

/** The event log's filters, from the query string. Unknown values are dropped, not refused. */
export const EventFilters = z.object({
  state: z.enum(STATES).optional().catch(undefined),
  source: z.enum(SOURCES).optional().catch(undefined),
  function: z.string().max(63).optional().catch(undefined).transform((v) => v || undefined),
  table: z.string().max(130).optional().catch(undefined).transform((v) => v || undefined),
  id: z.coerce.number().int().positive().optional().catch(undefined),
  failed: z.enum(["1"]).optional().catch(undefined),
  before: z.coerce.number().int().positive().optional().catch(undefined),
  limit: z.coerce.number().int().min(1).max(500).default(100).catch(100),
});
type Filters = z.infer<typeof EventFilters>;

/** The events matching the filters, newest first. */
export async function eventRows(sql: Sql, f: Filters): Promise<EventRow[]> {
  const [schema, table] = f.table?.includes(".") ? f.table.split(".", 2) : [undefined, f.table];
  const rows = await sql<EventRow[]>`
    select id::text, function_name, source, table_schema, table_name, op, row_id, state, attempts,
           created_at, run_at, started_at, finished_at, claimed_by, last_error
      from control.dispatch_events
     where true
       ${f.id ? sql`and id = ${f.id}` : sql``}
       ${f.state ? sql`and state = ${f.state}` : sql``}
       ${f.source ? sql`and source = ${f.source}` : sql``}
       ${f.function ? sql`and function_name = ${f.function}` : sql``}
       ${table ? sql`and table_name = ${table}` : sql``}
       ${schema ? sql`and table_schema = ${schema}` : sql``}
       ${f.failed ? sql`and last_error is not null` : sql``}
       ${f.before ? sql`and id < ${f.before}` : sql``}
     order by id desc limit ${f.limit}`;
  return rows.map((r) => JSON.parse(JSON.stringify(r)));
}

function query(f: Filters): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) {
    if (v !== undefined && !(k === "limit" && v === 100)) p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** The event log with filters, live updates, and retry of one or every dead event. */
export const eventsPage: ConsolePage = {
  href: "/console/events",
  title: "Events",
  routes(r, kit) {
    r.get("/events", async (c) => {
      const sql = kit.sql();
      const f = EventFilters.parse(c.req.query());
      const [rows, fns, [counts]] = await Promise.all([
        eventRows(sql, f),
        sql<{ name: string }[]>`select name from control.dispatch_functions order by name`,
        sql<{ dead: number; pending: number; running: number; failed: number }[]>`
          select count(*) filter (where state = 'dead')::int as dead,
                 count(*) filter (where state = 'pending' and last_error is not null)::int as failed,
                 count(*) filter (where state = 'pending')::int as pending,
                 count(*) filter (where state = 'running')::int as running
            from control.dispatch_events
           where true ${f.function ? sql`and function_name = ${f.function}` : sql``}`,
      ]);
      return kit.render(c, {
        title: "Events",
        active: "/console/events",
        body: (
          <>
            <div class="head">
              <h1>Events</h1>
              <span class="muted">
                {counts.pending} pending ({counts.failed} after an error) · {counts.running} running ·{" "}
                {counts.dead} dead
              </span>
              {counts.dead + counts.failed > 0 && (
                <Island
                  component={ApiAction}
                  props={{
                    label: `Retry all failed and dead${f.function ? ` of ${f.function}` : ""}`,
                    method: "POST",
                    url: "/api/admin/events/retry",
                    body: { ...(f.function ? { function: f.function } : {}), failed: true },
                    confirm: `Run ${counts.dead} dead and ${counts.failed} failed event(s) again now?`,
                    testid: "retry-all",
                  }}
                />
              )}
            </div>
            <form class="filters card" method="get" action="/console/events" data-testid="event-filters">
              <label class="field">
                <span>State</span>
                <select name="state">
                  <option value="">any</option>
                  {STATES.map((s) => <option key={s} value={s} selected={f.state === s}>{s}</option>)}
                </select>
              </label>
              <label class="field">
                <span>Function</span>
                <select name="function">
                  <option value="">any</option>
                  {fns.map((fn) => (
                    <option value={fn.name} selected={f.function === fn.name}>{fn.name}</option>
                  ))}
                </select>
              </label>
              <label class="field">
                <span>Source</span>
                <select name="source">
                  <option value="">any</option>
                  {SOURCES.map((s) => <option key={s} value={s} selected={f.source === s}>{s}</option>)}
                </select>
              </label>
              <label class="field">
                <span>Table</span>
                <input name="table" value={f.table ?? ""} placeholder="schema.table" />
              </label>
              <label class="field field-checkbox">
                <span>With an error</span>
                <input type="checkbox" name="failed" value="1" checked={!!f.failed} />
              </label>
              <div class="actions">
                <button type="submit">Filter</button>
                <a href="/console/events">Clear</a>
              </div>
            </form>
            <section class="card">
              <Island
                component={EventLog}
                props={{ initial: rows, url: `/console/live/events${query(f)}`, intervalMs: 2_000 }}
              />
              <p class="pager">
                {f.before && <a href={`/console/events${query({ ...f, before: undefined })}`}>Newest</a>}
                {rows.length === f.limit && (
                  <a
                    href={`/console/events${query({ ...f, before: Number(rows.at(-1)!.id) })}`}
                    data-testid="older"
                  >
                    Older
                  </a>
                )}
              </p>
            </section>
          </>
        ),
      });
    });
    r.get("/live/events", async (c) => c.json(await eventRows(kit.sql(), EventFilters.parse(c.req.query()))));
  },
};
