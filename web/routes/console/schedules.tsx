import { Island } from "../../components/Island.tsx";
import { ago, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { ApiForm } from "../../islands/ApiForm.tsx";
import type { ConsolePage } from "./page.ts";

interface ScheduleRow {
  id: string;
  function_name: string;
  cron: string;
  enabled: boolean;
  next_run_at: Date | null;
  last_run_at: Date | null;
}

interface NodeRow {
  node_id: string;
  host: string;
  pid: number;
  bind: string;
  started_at: Date;
  heartbeat_at: Date;
  stopped_at: Date | null;
  role: string;
  alive: boolean;
}

/** Dispatch schedules (create, enable/disable, delete) and the nodes with their roles. */
export const schedulesPage: ConsolePage = {
  href: "/console/schedules",
  title: "Schedules & nodes",
  routes(r, kit) {
    r.get("/schedules", async (c) => {
      const sql = kit.sql();
      const [schedules, nodes, fns] = await Promise.all([
        sql<ScheduleRow[]>`select id::text, function_name, cron, enabled, next_run_at, last_run_at
                             from control.dispatch_schedules order by id`,
        sql<NodeRow[]>`
          select n.node_id, n.host, n.pid, n.bind, n.started_at, n.heartbeat_at, n.stopped_at,
                 case when l.holder = n.node_id and l.lease_until > now() then 'master' else 'node' end as role,
                 n.lease_until > now() and n.stopped_at is null as alive
            from control.dispatch_nodes n cross join control.dispatch_leases l
           where l.name = 'master' and (n.stopped_at is null or n.stopped_at > now() - interval '1 hour')
           order by alive desc, role, n.started_at desc`,
        sql<{ name: string }[]>`select name from control.dispatch_functions order by name`,
      ]);
      return kit.render(c, {
        title: "Schedules & nodes",
        active: "/console/schedules",
        body: (
          <>
            <h1>Schedules &amp; nodes</h1>
            <section class="card">
              <h2>Schedules</h2>
              {schedules.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="schedules">
                      <thead>
                        <tr>
                          <th>Function</th>
                          <th>Cron (UTC)</th>
                          <th>State</th>
                          <th>Next run</th>
                          <th>Last run</th>
                          <th></th>
                        </tr>
                      </thead>
                      <tbody>
                        {schedules.map((s) => (
                          <tr>
                            <td data-label="Function">
                              <a href={`/console/functions/${encodeURIComponent(s.function_name)}`}>
                                {s.function_name}
                              </a>
                            </td>
                            <td data-label="Cron">
                              <code>{s.cron}</code>
                            </td>
                            <td data-label="State">
                              <span class={`badge ${s.enabled ? "ok" : "stopped"}`}>
                                {s.enabled ? "enabled" : "disabled"}
                              </span>
                            </td>
                            <td data-label="Next run" title={stamp(s.next_run_at)}>
                              {s.enabled ? ago(s.next_run_at) : "–"}
                            </td>
                            <td data-label="Last run" title={stamp(s.last_run_at)}>{ago(s.last_run_at)}</td>
                            <td class="actions">
                              <Island
                                component={ApiAction}
                                props={{
                                  label: s.enabled ? "Disable" : "Enable",
                                  method: "PATCH",
                                  url: `/api/admin/schedules/${s.id}`,
                                  body: { enabled: !s.enabled },
                                  variant: "quiet",
                                }}
                              />
                              <Island
                                component={ApiAction}
                                props={{
                                  label: "Delete",
                                  method: "DELETE",
                                  url: `/api/admin/schedules/${s.id}`,
                                  confirm: `Delete the schedule ${s.cron} of ${s.function_name}?`,
                                  variant: "danger",
                                }}
                              />
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : (
                  <p class="empty">
                    No schedule. A schedule runs a function at cron times, on the master node.
                  </p>
                )}
              <h3>Add a schedule</h3>
              {fns.length
                ? (
                  <Island
                    component={ApiForm}
                    props={{
                      method: "POST",
                      url: "/api/admin/schedules",
                      submitLabel: "Add schedule",
                      fields: [
                        {
                          name: "function_name",
                          label: "Function",
                          type: "select",
                          options: fns.map((f) => f.name),
                        },
                        {
                          name: "cron",
                          label: "Cron",
                          type: "text",
                          placeholder: "*/5 * * * *",
                          required: true,
                        },
                      ],
                    }}
                  />
                )
                : <p class="empty">Create a function first.</p>}
            </section>
            <section class="card">
              <h2>Nodes</h2>
              {nodes.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="nodes">
                      <thead>
                        <tr>
                          <th>Node</th>
                          <th>Role</th>
                          <th>State</th>
                          <th>Bind</th>
                          <th>Last heartbeat</th>
                          <th>Started</th>
                        </tr>
                      </thead>
                      <tbody>
                        {nodes.map((n) => (
                          <tr data-role={n.role}>
                            <td data-label="Node" class="small">{n.node_id}</td>
                            <td data-label="Role">
                              <span class={`badge ${n.role === "master" ? "master" : ""}`}>{n.role}</span>
                            </td>
                            <td data-label="State">
                              <span class={`badge ${n.alive ? "ok" : n.stopped_at ? "stopped" : "stale"}`}>
                                {n.alive ? "alive" : n.stopped_at ? "stopped" : "lease expired"}
                              </span>
                            </td>
                            <td data-label="Bind">
                              <code>{n.bind}</code>
                            </td>
                            <td data-label="Last heartbeat" title={stamp(n.heartbeat_at)}>
                              {ago(n.heartbeat_at)}
                            </td>
                            <td data-label="Started">{stamp(n.started_at)}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : (
                  <p class="empty">
                    No dispatch node has registered. Start one with <code>deno task worker:dispatch</code>.
                  </p>
                )}
            </section>
          </>
        ),
      });
    });
  },
};
