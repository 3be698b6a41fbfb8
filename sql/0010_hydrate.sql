-- Hydrate: keep Redis in step with Postgres. Mappings are data; the console reads the stats rows.

-- One mapping: where rows come from, how a row becomes a Redis key and value.
create table control.hydrate_mappings (
  name           text primary key check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  -- Exactly one source: a table (schema + name), or a read-only SELECT.
  source_schema  text,
  source_table   text,
  source_query   text,
  -- `user:{id}:email`: literal text and {column} placeholders, rendered per row.
  key_template   text not null,
  -- string: one column as a string; hash: chosen columns as hash fields; json: the whole row as JSON.
  value_shape    text not null check (value_shape in ('string', 'hash', 'json')),
  value_column   text,
  value_columns  text[],
  -- Prepended to every key of the mapping (a namespace such as `app:`).
  key_prefix     text not null default '',
  ttl_seconds    integer check (ttl_seconds between 1 and 31536000),
  -- Full sync period; null means the worker's HYDRATE_PERIOD_S.
  period_seconds integer check (period_seconds between 1 and 86400),
  enabled        boolean not null default true,
  -- "Resync now": the worker runs a full sync when this is newer than its last sync start.
  resync_requested_at timestamptz,
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now(),
  check ((source_table is not null and source_schema is not null and source_query is null)
      or (source_query is not null and source_table is null and source_schema is null)),
  check (value_shape <> 'string' or value_column is not null)
);

-- One row per mapping, upserted by the worker after every full sync and every incremental batch.
create table control.hydrate_stats (
  mapping                 text primary key references control.hydrate_mappings (name) on delete cascade,
  last_sync_started_at    timestamptz,
  last_sync_finished_at   timestamptz,
  last_sync_duration_ms   double precision,
  last_sync_rows          bigint,
  last_sync_rows_per_s    double precision,
  last_sync_keys_written  bigint,
  last_sync_keys_removed  bigint,
  generation              bigint,
  changes_applied         bigint not null default 0,
  last_change_applied_at  timestamptz,
  -- Age of the oldest change of the mapping's table not yet in Redis (0 when caught up).
  freshness_lag_ms        double precision,
  last_error              text,
  last_error_at           timestamptz,
  updated_at              timestamptz not null default now()
);

-- The durable change record: the capture trigger writes one row per changed row, and the worker deletes
-- rows only after their effect is in Redis. NOTIFY is only a nudge, so changes made while the worker is
-- down are applied when it comes back, and a lost notification costs at most one poll interval.
create table control.hydrate_changes (
  id           bigserial primary key,
  table_schema text not null,
  table_name   text not null,
  op           text not null check (op in ('insert', 'update', 'delete', 'truncate')),
  old_row      jsonb,
  new_row      jsonb,
  created_at   timestamptz not null default clock_timestamp()
);

create function control.hydrate_capture() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if tg_op = 'TRUNCATE' then
    insert into control.hydrate_changes (table_schema, table_name, op)
    values (tg_table_schema, tg_table_name, 'truncate');
  else
    insert into control.hydrate_changes (table_schema, table_name, op, old_row, new_row)
    values (tg_table_schema, tg_table_name, lower(tg_op),
            case when tg_op <> 'INSERT' then to_jsonb(old) end,
            case when tg_op <> 'DELETE' then to_jsonb(new) end);
  end if;
  perform pg_notify('wharf_hydrate', 'change');
  return null;
end $$;

-- Attaches the capture triggers to a table (idempotent).
create function control.hydrate_install(p_schema text, p_table text) returns void
language plpgsql as $$
begin
  execute format('create or replace trigger wharf_hydrate_capture after insert or update or delete on %I.%I
                  for each row execute function control.hydrate_capture()', p_schema, p_table);
  execute format('create or replace trigger wharf_hydrate_truncate after truncate on %I.%I
                  for each statement execute function control.hydrate_capture()', p_schema, p_table);
end $$;

-- Detaches them when no mapping reads the table any more.
create function control.hydrate_uninstall(p_schema text, p_table text) returns void
language plpgsql as $$
begin
  if to_regclass(format('%I.%I', p_schema, p_table)) is null then
    return;
  end if;
  execute format('drop trigger if exists wharf_hydrate_capture on %I.%I', p_schema, p_table);
  execute format('drop trigger if exists wharf_hydrate_truncate on %I.%I', p_schema, p_table);
  delete from control.hydrate_changes where table_schema = p_schema and table_name = p_table;
end $$;

-- The leader lease: one worker copy at a time runs syncs. A row rather than a session advisory lock so
-- that leadership survives a reconnect and is visible to the console; the holder renews it while alive.
create table control.hydrate_leader (
  id          integer primary key default 1 check (id = 1),
  holder      text,
  lease_until timestamptz not null default '-infinity'
);
insert into control.hydrate_leader (id) values (1);
