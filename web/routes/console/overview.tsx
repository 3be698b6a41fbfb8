import type { Sql } from "../../../shared/db.ts";
import { Island } from "../../components/Island.tsx";
import { HealthCheck } from "../../islands/HealthCheck.tsx";
import { type ChartData, TimeSeriesChart } from "../../islands/TimeSeriesChart.tsx";
import { type WorkerRow, WorkersLive } from "../../islands/WorkersLive.tsx";
import type { ConsolePage } from "./page.ts";

/** A heartbeat older than this marks an instance stale (workers report every 5 s). */
const STALE_AFTER_S = 20;
/** Instances that stopped longer ago than this are left off the overview. */
const KEEP_STOPPED = "1 hour";

/** Every worker instance that is alive or ended recently, most recent heartbeat first per worker. */
export async function workerRows(sql: Sql): Promise<WorkerRow[]> {
  const rows = await sql<WorkerRow[]>`
    select instance_id, worker, host, pid, state, healthy, status, started_at, heartbeat_at,
           extract(epoch from now() - heartbeat_at)::float8 as heartbeat_age_s
      from control.worker_instances
     where state not in ('stopped', 'failed') or heartbeat_at > now() - ${KEEP_STOPPED}::interval
     order by worker, heartbeat_at desc`;
  return rows.map((r) => ({
    ...r,
    started_at: new Date(r.started_at).toISOString(),
    heartbeat_at: new Date(r.heartbeat_at).toISOString(),
  }));
}

/** Dispatch events finished per minute over the last 30 minutes: done and dead. */
export async function dispatchThroughput(sql: Sql): Promise<ChartData> {
  const rows = await sql<{ t: number; done: number; dead: number }[]>`
    with minutes as (
      select generate_series(date_trunc('minute', now()) - interval '29 minutes',
                             date_trunc('minute', now()), interval '1 minute') as m
    )
    select extract(epoch from m.m)::float8 as t,
           count(e.id) filter (where e.state = 'done')::int as done,
           count(e.id) filter (where e.state = 'dead')::int as dead
      from minutes m
      left join control.dispatch_events e
        on e.finished_at >= m.m and e.finished_at < m.m + interval '1 minute'
     group by m.m order by m.m`;
  return { t: rows.map((r) => r.t), values: [rows.map((r) => r.done), rows.map((r) => r.dead)] };
}

/** The overview: every worker's health, heartbeat, throughput and errors, and dispatch throughput. */
export const overviewPage: ConsolePage = {
  href: "/console",
  title: "Overview",
  routes(r, kit) {
    r.get("/", async (c) => {
      const sql = kit.sql();
      const [workers, throughput] = await Promise.all([workerRows(sql), dispatchThroughput(sql)]);
      return kit.render(c, {
        title: "Overview",
        active: "/console",
        body: (
          <>
            <h1>Overview</h1>
            <section class="card">
              <h2>Workers</h2>
              <Island
                component={WorkersLive}
                props={{
                  initial: workers,
                  url: "/console/live/workers",
                  intervalMs: 5_000,
                  staleAfterS: STALE_AFTER_S,
                  renderedAt: Date.now(),
                }}
              />
            </section>
            <section class="card">
              <h2>Web</h2>
              <Island component={HealthCheck} props={{ url: "/healthz" }} />
            </section>
            <section class="card">
              <h2>Dispatch throughput</h2>
              <Island
                component={TimeSeriesChart}
                props={{
                  title: "Events finished per minute (last 30 min)",
                  series: [{ label: "done", color: "#2e7d32" }, { label: "dead", color: "#c62828" }],
                  initial: throughput,
                  url: "/console/live/dispatch-throughput",
                  intervalMs: 10_000,
                  leftUnit: "events/min",
                  testid: "throughput-chart",
                }}
              />
            </section>
          </>
        ),
      });
    });
    r.get("/live/workers", async (c) => c.json(await workerRows(kit.sql())));
    r.get("/live/dispatch-throughput", async (c) => c.json(await dispatchThroughput(kit.sql())));
  },
};
