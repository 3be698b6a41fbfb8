import { z } from "zod";
import { Island } from "../../components/Island.tsx";
import { ago, bytes, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import type { ConsolePage } from "./page.ts";

/** Discovery workers poll Patroni every few seconds; a member not seen for longer is shown as stale. */
const STALE_AFTER_S = 60;

interface MemberRow {
  scope: string;
  name: string;
  host: string | null;
  port: number | null;
  role: string;
  state: string;
  timeline: number | null;
  lag_bytes: number | null;
  lsn: string | null;
  seen_at: Date;
  age_s: number;
}

interface ClusterRow {
  scope: string;
  leader: string | null;
  timeline: number | null;
  updated_at: Date;
}

interface HistoryRow {
  id: string;
  scope: string;
  kind: string;
  member: string | null;
  detail: Record<string, unknown>;
  actor: string;
  at: Date;
}

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/);

function stateClass(m: MemberRow): string {
  if (m.age_s > STALE_AFTER_S) return "stale";
  if (m.state === "running" || m.state === "streaming") return "ok";
  if (m.state === "stopped" || m.state.includes("fail")) return "dead";
  return "pending";
}

function describe(h: HistoryRow): string {
  const d = h.detail ?? {};
  switch (h.kind) {
    case "failover":
      return `leader ${d.from ?? "?"} → ${d.to ?? h.member ?? "?"}${
        d.timeline ? `, timeline ${d.timeline}` : ""
      }`;
    case "switchover_requested":
      return `from ${d.leader ?? "?"} to ${d.candidate ?? "the healthiest replica"}: ${d.status ?? ""} ${
        String(d.answer ?? "").slice(0, 200)
      }`;
    default: {
      const rest = Object.entries(d).map(([k, v]) => `${k} ${typeof v === "string" ? v : JSON.stringify(v)}`);
      return rest.join(", ");
    }
  }
}

/**
 * Cluster: the Patroni members the discovery workers see (role, state, timeline, lag), the history of
 * failovers and membership changes, and a switchover behind a confirmation page; the switchover itself is
 * `POST /api/admin/cluster/switchover`, audited and recorded in the history with who asked.
 */
export const clusterPage: ConsolePage = {
  href: "/console/cluster",
  title: "Cluster",
  routes(r, kit) {
    r.get("/cluster", async (c) => {
      const sql = kit.sql();
      const [members, clusters, history] = await Promise.all([
        sql<MemberRow[]>`
          select scope, name, host, port, role, state, timeline, lag_bytes::float8 as lag_bytes, lsn, seen_at,
                 extract(epoch from now() - seen_at)::float8 as age_s
            from control.cluster_members order by scope, (role = 'leader') desc, name`,
        sql<
          ClusterRow[]
        >`select scope, leader, timeline, updated_at from control.cluster_state order by scope`,
        sql<HistoryRow[]>`select id::text, scope, kind, member, detail, actor, at from control.cluster_history
                           order by id desc limit 100`,
      ]);
      const scopes = [...new Set([...clusters.map((x) => x.scope), ...members.map((m) => m.scope)])].sort();
      return kit.render(c, {
        title: "Cluster",
        active: "/console/cluster",
        body: (
          <>
            <h1>Cluster</h1>
            {!scopes.length && (
              <section class="card">
                <p class="empty" data-testid="no-cluster">
                  No cluster has reported. Members appear when a discovery worker runs:{" "}
                  <code>deno task worker:discovery</code> (or <code>deno task dev:cluster</code> locally).
                </p>
              </section>
            )}
            {scopes.map((scope) => {
              const st = clusters.find((x) => x.scope === scope);
              const own = members.filter((m) => m.scope === scope);
              const hasLeader = own.some((m) => m.role === "leader");
              return (
                <section class="card" data-scope={scope}>
                  <h2>
                    {scope}{" "}
                    <span class="muted small">
                      leader {st?.leader ?? "none"} · timeline {st?.timeline ?? "–"}
                    </span>
                  </h2>
                  {!hasLeader && own.length > 0 && (
                    <p class="error" role="alert">No member is leader: the cluster cannot take writes.</p>
                  )}
                  {own.length
                    ? (
                      <div class="table-wrap">
                        <table data-testid={`members-${scope}`}>
                          <thead>
                            <tr>
                              <th>Member</th>
                              <th>Role</th>
                              <th>State</th>
                              <th>Timeline</th>
                              <th>Lag</th>
                              <th>LSN</th>
                              <th>Seen</th>
                              <th></th>
                            </tr>
                          </thead>
                          <tbody>
                            {own.map((m) => (
                              <tr data-member={m.name} data-role={m.role}>
                                <td data-label="Member">
                                  {m.name}
                                  {m.host && <span class="muted small">{` ${m.host}:${m.port ?? ""}`}</span>}
                                </td>
                                <td data-label="Role">
                                  <span class={`badge ${m.role === "leader" ? "master" : ""}`}>{m.role}</span>
                                </td>
                                <td data-label="State">
                                  <span class={`badge ${stateClass(m)}`}>
                                    {m.age_s > STALE_AFTER_S ? `${m.state} (stale)` : m.state}
                                  </span>
                                </td>
                                <td data-label="Timeline">{m.timeline ?? "–"}</td>
                                <td data-label="Lag">{m.role === "leader" ? "–" : bytes(m.lag_bytes)}</td>
                                <td data-label="LSN">
                                  <code>{m.lsn ?? "–"}</code>
                                </td>
                                <td data-label="Seen" title={stamp(m.seen_at)}>{ago(m.seen_at)}</td>
                                <td class="actions">
                                  {m.role !== "leader" && hasLeader && (
                                    <a
                                      class="button quiet"
                                      href={`/console/cluster/switchover?scope=${
                                        encodeURIComponent(scope)
                                      }&candidate=${encodeURIComponent(m.name)}`}
                                      data-testid={`switchover-${m.name}`}
                                    >
                                      Switch over to…
                                    </a>
                                  )}
                                </td>
                              </tr>
                            ))}
                          </tbody>
                        </table>
                      </div>
                    )
                    : <p class="empty">No member seen yet.</p>}
                </section>
              );
            })}
            <section class="card">
              <h2>History</h2>
              {history.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="cluster-history">
                      <thead>
                        <tr>
                          <th>When (UTC)</th>
                          <th>Cluster</th>
                          <th>What</th>
                          <th>Member</th>
                          <th>Details</th>
                          <th>By</th>
                        </tr>
                      </thead>
                      <tbody>
                        {history.map((h) => (
                          <tr data-kind={h.kind}>
                            <td data-label="When">{stamp(h.at)}</td>
                            <td data-label="Cluster">{h.scope}</td>
                            <td data-label="What">
                              <span class={`badge ${h.kind === "failover" ? "failed" : ""}`}>
                                {h.kind.replace("_", " ")}
                              </span>
                            </td>
                            <td data-label="Member">{h.member ?? "–"}</td>
                            <td data-label="Details" class="small">{describe(h)}</td>
                            <td data-label="By">{h.actor}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : <p class="empty">No failover or membership change recorded.</p>}
            </section>
          </>
        ),
      });
    });

    r.get("/cluster/switchover", async (c) => {
      const sql = kit.sql();
      const scope = Name.safeParse(c.req.query("scope"));
      const cand = Name.safeParse(c.req.query("candidate") || undefined);
      const back = <a href="/console/cluster">Back to the cluster</a>;
      if (!scope.success) {
        return kit.render(c, {
          title: "Switchover",
          active: "/console/cluster",
          status: 400,
          body: (
            <section class="card">
              <h1>Switchover</h1>
              <p class="error">Pick a cluster member on the cluster page. {back}</p>
            </section>
          ),
        });
      }
      const members = await sql<MemberRow[]>`
        select scope, name, host, port, role, state, timeline, lag_bytes::float8 as lag_bytes, lsn, seen_at,
               extract(epoch from now() - seen_at)::float8 as age_s
          from control.cluster_members where scope = ${scope.data} order by name`;
      const leader = members.find((m) => m.role === "leader");
      const target = cand.success ? members.find((m) => m.name === cand.data) : undefined;
      const problem = !leader
        ? "The cluster has no known leader, so there is nothing to switch over from."
        : cand.success && !target
        ? `The cluster ${scope.data} has no member named ${cand.data}.`
        : target?.role === "leader"
        ? `${target.name} already leads.`
        : undefined;
      return kit.render(c, {
        title: "Switchover",
        active: "/console/cluster",
        status: problem ? 409 : 200,
        body: (
          <section class="card" data-testid="switchover-confirm">
            <h1>Switchover in {scope.data}</h1>
            {problem ? <p class="error" role="alert">{problem} {back}</p> : (
              <>
                <p>
                  The leader <strong>{leader!.name}</strong> hands over to{" "}
                  <strong>{target ? target.name : "the healthiest replica (Patroni picks)"}</strong>
                  {target && <>(lag {bytes(target.lag_bytes)}, state {target.state})</>}. Writes stop for a
                  few seconds while the new leader is promoted; clients reconnect.
                </p>
                <div class="actions">
                  <Island
                    component={ApiAction}
                    props={{
                      label: "Confirm switchover",
                      method: "POST",
                      url: "/api/admin/cluster/switchover",
                      body: { scope: scope.data, ...(target ? { candidate: target.name } : {}) },
                      then: "/console/cluster",
                      variant: "danger",
                      testid: "confirm-switchover",
                    }}
                  />
                  {back}
                </div>
              </>
            )}
          </section>
        ),
      });
    });
  },
};
