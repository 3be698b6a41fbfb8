/**
 * Writes a `GET /cluster` snapshot to `control.cluster_members` and the changes since the last one to
 * `control.cluster_history`. Every worker of a cluster writes; the diff is taken under a per-scope
 * transaction advisory lock against the stored rows, so a change seen by three workers is recorded once.
 */
import type { Sql } from "../../shared/db.ts";
import type { ClusterMember } from "./patroni_api.ts";

/** A member with the WAL position read from its own API. */
export type MemberStatus = ClusterMember & { lsn?: string };

/** A change found by {@linkcode diffSnapshot}. */
export interface Change {
  kind: "join" | "leave" | "failover";
  member: string;
  detail: Record<string, unknown>;
}

/**
 * Changes between the stored member names and leader and a new snapshot. A snapshot without a leader
 * (an election is running) never records a failover: the next one that shows the new leader does.
 */
export function diffSnapshot(
  before: { names: string[]; leader?: string | null },
  now: MemberStatus[],
): { changes: Change[]; leader?: MemberStatus } {
  const changes: Change[] = [];
  const had = new Set(before.names);
  const has = new Set(now.map((m) => m.name));
  for (const m of now) {
    if (!had.has(m.name)) {
      changes.push({ kind: "join", member: m.name, detail: { role: m.role, host: m.host } });
    }
  }
  for (const n of before.names) if (!has.has(n)) changes.push({ kind: "leave", member: n, detail: {} });
  const leader = now.find((m) => m.role === "leader" || m.role === "standby_leader");
  if (leader && before.leader && leader.name !== before.leader) {
    changes.push({
      kind: "failover",
      member: leader.name,
      detail: { from: before.leader, to: leader.name, timeline: leader.timeline ?? null },
    });
  }
  return { changes, leader };
}

/**
 * Stores a snapshot taken at `takenAt`; resolves to the changes it recorded. A snapshot older than the
 * last one stored (another worker's was written first) is skipped.
 *
 * A member missing from the snapshot is recorded as gone only once no snapshot has shown it for
 * `leaveAfterMs`: each Patroni answers `GET /cluster` from its own copy of the DCS, refreshed once per
 * loop, so one member's answer can briefly lack a member another's already showed (a member that has
 * just joined, or whose key was renewed late on a busy host). Until then its row stays as last seen, and
 * a brief gap records neither a leave nor a second join.
 */
export async function writeSnapshot(
  sql: Sql,
  scope: string,
  now: MemberStatus[],
  takenAt: Date = new Date(),
  leaveAfterMs = 0,
): Promise<Change[]> {
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${"wharf.cluster:" + scope}))`;
    const [state] = await tx`select leader, snapshot_at from control.cluster_state where scope = ${scope}`;
    if (state?.snapshot_at && (state.snapshot_at as Date).getTime() >= takenAt.getTime()) return [];
    const rows = await tx`
      select name, seen_at < now() - make_interval(secs => ${leaveAfterMs / 1000}) as stale
        from control.cluster_members where scope = ${scope}`;
    const listed = new Set(now.map((m) => m.name));
    // Missing but seen recently: kept (as last seen) and left out of the diff, so it records nothing.
    const held = rows.filter((r) => !listed.has(r.name as string) && !r.stale).map((r) => r.name as string);
    const { changes, leader } = diffSnapshot(
      {
        names: rows.map((r) => r.name as string).filter((n) => !held.includes(n)),
        leader: (state?.leader as string | null) ?? null,
      },
      now,
    );
    for (const c of changes) {
      if (c.kind === "failover") {
        // A leader change an operator asked for in the last two minutes is a planned one (a switchover).
        const [asked] = await tx`
          select 1 from control.cluster_history
           where scope = ${scope} and kind = 'switchover_requested' and at > now() - interval '2 minutes'
             and (member = ${c.member} or member is null)
             and coalesce((detail ->> 'status')::int, 200) between 200 and 299
           limit 1`;
        c.detail.planned = !!asked;
      }
      await tx`insert into control.cluster_history (scope, kind, member, detail)
               values (${scope}, ${c.kind}, ${c.member}, ${tx.json(JSON.parse(JSON.stringify(c.detail)))})`;
    }
    await tx`delete from control.cluster_members
              where scope = ${scope} and not (name = any(${[...listed, ...held]}::text[]))`;
    for (const m of now) {
      await tx`
        insert into control.cluster_members
          (scope, name, host, port, api_url, role, state, timeline, lag_bytes, lsn, seen_at)
        values (${scope}, ${m.name}, ${m.host ?? null}, ${m.port ?? null}, ${m.api_url ?? null}, ${m.role},
                ${m.state}, ${m.timeline ?? null}, ${m.lag ?? null}, ${m.lsn ?? null}, now())
        on conflict (scope, name) do update set host = excluded.host, port = excluded.port,
          api_url = excluded.api_url, role = excluded.role, state = excluded.state,
          timeline = excluded.timeline, lag_bytes = excluded.lag_bytes, lsn = excluded.lsn, seen_at = now()`;
    }
    await tx`insert into control.cluster_state (scope, leader, timeline, snapshot_at)
             values (${scope}, ${leader?.name ?? null}, ${leader?.timeline ?? null}, ${takenAt})
             on conflict (scope) do update set
               leader = coalesce(excluded.leader, control.cluster_state.leader),
               timeline = coalesce(excluded.timeline, control.cluster_state.timeline),
               snapshot_at = excluded.snapshot_at, updated_at = now()`;
    return changes;
  });
}

/** Records a change the updater or an operator made (removal, switchover request); resolves to its id. */
export async function recordHistory(
  sql: Sql,
  entry: {
    scope: string;
    kind: "removal" | "switchover_requested";
    member?: string;
    detail?: unknown;
    actor?: string;
  },
): Promise<number> {
  const [row] = await sql`
    insert into control.cluster_history (scope, kind, member, detail, actor)
    values (${entry.scope}, ${entry.kind}, ${entry.member ?? null},
            ${sql.json(JSON.parse(JSON.stringify(entry.detail ?? {})))}, ${entry.actor ?? "worker"})
    returning id`;
  return Number(row.id);
}
