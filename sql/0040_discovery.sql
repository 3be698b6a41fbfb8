-- Discovery: the state of the Patroni clusters that discovery workers run, for the console. Workers
-- write; the web reads. Several workers of one cluster write the same rows: the diff against the stored
-- snapshot is taken under a per-scope advisory lock, so each change is recorded once.

-- One row per Patroni member as last seen in `GET /cluster`.
create table control.cluster_members (
  scope      text not null,
  name       text not null,
  host       text,
  port       integer,
  api_url    text,
  -- Patroni's role: leader, replica, sync_standby, standby_leader.
  role       text not null,
  -- Patroni's state: running, streaming, starting, stopped, ...
  state      text not null,
  timeline   integer,
  -- Replication lag in bytes behind the leader (null for the leader or when unknown).
  lag_bytes  bigint,
  -- Last WAL position written (leader) or replayed (replica), as `X/Y`.
  lsn        text,
  seen_at    timestamptz not null default now(),
  primary key (scope, name)
);

-- Membership and leadership changes, newest last.
--   join: a member appeared; leave: a member vanished from Patroni (its key expired or it stopped);
--   removal: the updater removed it from etcd after consecutive omissions by the discovery source;
--   failover: the leader changed; switchover_requested: an operator asked for a switchover.
create table control.cluster_history (
  id         bigserial primary key,
  scope      text not null,
  kind       text not null check (kind in ('join', 'leave', 'removal', 'failover', 'switchover_requested')),
  member     text,
  detail     jsonb not null default '{}'::jsonb,
  actor      text not null default 'worker',
  at         timestamptz not null default now()
);
create index cluster_history_scope_idx on control.cluster_history (scope, id desc);

-- The leader last seen per cluster, so that a leader change is recorded as a failover even when
-- snapshots taken during the election showed no leader at all.
create table control.cluster_state (
  scope      text primary key,
  leader     text,
  timeline   integer,
  -- When the last snapshot written was taken: a slower worker's older snapshot is skipped rather than
  -- recorded as members leaving and joining again.
  snapshot_at timestamptz,
  updated_at timestamptz not null default now()
);
