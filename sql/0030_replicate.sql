-- Replicate: the WAL of a source database streamed into a warehouse through S3 batches. These tables are
-- the worker's state for the console; the exactly-once bookkeeping (applied LSN per table) lives in the
-- target, in the same transaction as each merge, and never here.

-- One row per pipeline (one source slot + publication → one target). The worker upserts it on start and
-- refreshes the figures every few seconds; an operator sets `paused` (the admin API does).
create table control.replicate_pipelines (
  name               text primary key check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  slot_name          text not null,
  publication        text not null,
  target_kind        text not null check (target_kind in ('postgres', 'redshift')),
  bucket             text not null,
  -- idle | snapshot | streaming | paused | retrying | stopped
  state              text not null default 'idle',
  paused             boolean not null default false,
  -- pg_current_wal_lsn() - confirmed_flush_lsn of the slot, in bytes.
  lag_bytes          bigint,
  -- Source commit time of the oldest change not yet committed in the target, to now (0 when caught up).
  lag_seconds        double precision,
  -- pg_current_wal_lsn() - restart_lsn: the WAL the slot forces the source to keep.
  retained_wal_bytes bigint,
  wal_warn_bytes     bigint not null default 1073741824,
  confirmed_lsn      text,
  last_error         text,
  instance_id        text,
  updated_at         timestamptz not null default now(),
  created_at         timestamptz not null default now()
);

-- Per table of a pipeline: rows applied and the initial snapshot's progress.
create table control.replicate_tables (
  pipeline        text not null references control.replicate_pipelines (name) on delete cascade,
  table_name      text not null, -- schema.table
  rows_applied    bigint not null default 0,
  batches         bigint not null default 0,
  -- pending | copying | done
  snapshot_state  text not null default 'pending',
  snapshot_rows   bigint not null default 0,
  snapshot_total  bigint,
  last_lsn        text,
  last_batch_at   timestamptz,
  primary key (pipeline, table_name)
);

-- One row per loaded batch and table (kept a day by the worker).
create table control.replicate_batches (
  id           bigserial primary key,
  pipeline     text not null references control.replicate_pipelines (name) on delete cascade,
  table_name   text not null,
  rows         bigint not null,
  bytes        bigint not null,
  duration_ms  double precision not null,
  lsn          text not null,
  s3_key       text not null,
  loaded_at    timestamptz not null default now()
);
create index replicate_batches_pipeline_idx on control.replicate_batches (pipeline, id desc);

-- Lag over time for the console's chart: one point every few seconds per pipeline (kept a day).
create table control.replicate_lag_history (
  pipeline     text not null references control.replicate_pipelines (name) on delete cascade,
  at           timestamptz not null default now(),
  lag_bytes    bigint,
  lag_seconds  double precision,
  retained_wal_bytes bigint,
  primary key (pipeline, at)
);
