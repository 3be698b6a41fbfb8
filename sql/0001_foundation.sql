-- wharf's two schemas: `app` holds the image feed's own data, `control` holds what workers coordinate
-- through and report to the console. Numbers 0001-0009 belong to the foundation; each part of wharf
-- takes its own block of ten so that parts can add migrations independently:
--   0010 hydrate, 0020 dispatch, 0030 replicate, 0040 discovery, 0050 feed, 0060 console.
create schema if not exists app;
create schema if not exists control;

-- One row per worker process, upserted by its heartbeat (shared/worker.ts `reportTo`). The console shows
-- a worker as down when its heartbeat is older than a few intervals; rows are kept after a stop so that
-- "when did it last run" has an answer.
create table control.worker_instances (
  instance_id  text primary key,
  worker       text not null,
  host         text not null,
  pid          integer not null,
  state        text not null check (state in ('starting', 'running', 'stopping', 'stopped', 'failed')),
  healthy      boolean not null default true,
  status       jsonb not null default '{}'::jsonb,
  started_at   timestamptz not null,
  heartbeat_at timestamptz not null default now()
);
create index worker_instances_worker_idx on control.worker_instances (worker, heartbeat_at desc);
