-- Dispatch: table changes run functions, across nodes. Everything lives in `control` so that the
-- console can show it; no compiled extension is needed.

-- Functions: TypeScript code run in a sandboxed Web Worker when a trigger fires or a schedule is due.
create table control.dispatch_functions (
  name         text primary key check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  code         text not null,
  -- Base64 Ed25519 signature over the UTF-8 code, checked at call time when signatures are required.
  signature    text,
  timeout_ms   integer not null default 5000 check (timeout_ms between 10 and 600000),
  max_attempts integer not null default 5 check (max_attempts between 1 and 100),
  backoff_ms   integer not null default 500 check (backoff_ms between 1 and 3600000),
  enabled      boolean not null default true,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);

-- Which table's changes run which function.
create table control.dispatch_triggers (
  id           bigserial primary key,
  table_schema text not null,
  table_name   text not null,
  function_name text not null references control.dispatch_functions (name) on delete cascade,
  ops          text[] not null default array['insert', 'update', 'delete']
                check (ops <@ array['insert', 'update', 'delete'] and cardinality(ops) > 0),
  enabled      boolean not null default true,
  created_at   timestamptz not null default now(),
  unique (table_schema, table_name, function_name)
);

-- The durable queue. NOTIFY only nudges nodes; the row is the truth. The event id is the idempotency key
-- a function sees. `state`: pending → running → done, or back to pending with `run_at` in the future
-- after a failure, or dead after the function's last attempt.
create table control.dispatch_events (
  id            bigserial primary key,
  function_name text not null references control.dispatch_functions (name) on delete cascade,
  source        text not null default 'trigger' check (source in ('trigger', 'schedule', 'manual')),
  table_schema  text,
  table_name    text,
  op            text check (op in ('insert', 'update', 'delete')),
  row_id        text,
  new_row       jsonb,
  old_row       jsonb,
  state         text not null default 'pending' check (state in ('pending', 'running', 'done', 'dead')),
  attempts      integer not null default 0,
  run_at        timestamptz not null default now(),
  created_at    timestamptz not null default clock_timestamp(),
  claimed_by    text,
  claimed_at    timestamptz,
  -- Set when a node claims the event and hands it to the sandbox (the start of this attempt).
  started_at    timestamptz,
  finished_at   timestamptz,
  last_error    text,
  last_stack    text
);
create index dispatch_events_ready_idx on control.dispatch_events (run_at, id) where state = 'pending';
create index dispatch_events_running_idx on control.dispatch_events (claimed_by) where state = 'running';
create index dispatch_events_fn_idx on control.dispatch_events (function_name, state, id desc);

-- Every node that runs, with its heartbeat and lease. A node whose lease expired is dead: the master
-- hands its running events back to the queue.
create table control.dispatch_nodes (
  node_id       text primary key,
  host          text not null,
  pid           integer not null,
  bind          text not null,
  started_at    timestamptz not null default now(),
  heartbeat_at  timestamptz not null default now(),
  lease_until   timestamptz not null,
  stopped_at    timestamptz
);

-- Exactly one row: who is master until when. A node becomes master only through a conditional UPDATE
-- that succeeds when the lease is free, expired, or already its own: no election.
create table control.dispatch_leases (
  name        text primary key,
  holder      text,
  lease_until timestamptz not null default '-infinity',
  term        bigint not null default 0
);
insert into control.dispatch_leases (name) values ('master');

-- Cron schedules: the master enqueues an event for the function at each due time.
create table control.dispatch_schedules (
  id            bigserial primary key,
  function_name text not null references control.dispatch_functions (name) on delete cascade,
  cron          text not null,
  enabled       boolean not null default true,
  next_run_at   timestamptz,
  last_run_at   timestamptz,
  created_at    timestamptz not null default now()
);

-- Records a change as one pending event per enabled matching trigger, then nudges the nodes.
create function control.dispatch_record() returns trigger language plpgsql as $$
declare
  v_op text := lower(tg_op);
  v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  v_n integer;
begin
  insert into control.dispatch_events (function_name, table_schema, table_name, op, row_id, new_row, old_row)
  select t.function_name, tg_table_schema, tg_table_name, v_op,
         coalesce(v_new ->> 'id', v_old ->> 'id'), v_new, v_old
    from control.dispatch_triggers t
    join control.dispatch_functions f on f.name = t.function_name and f.enabled
   where t.table_schema = tg_table_schema and t.table_name = tg_table_name
     and t.enabled and v_op = any (t.ops);
  get diagnostics v_n = row_count;
  if v_n > 0 then
    perform pg_notify('wharf_dispatch', '');
  end if;
  return null;
end $$;

-- Attaches the recording trigger to a table (idempotent). Called by the admin API when a trigger is
-- created; callable by hand too: select control.dispatch_install('app', 'users').
create function control.dispatch_install(p_schema text, p_table text) returns void language plpgsql as $$
begin
  execute format('drop trigger if exists wharf_dispatch on %I.%I', p_schema, p_table);
  execute format(
    'create trigger wharf_dispatch after insert or update or delete on %I.%I '
    'for each row execute function control.dispatch_record()', p_schema, p_table);
end $$;

-- Detaches it.
create function control.dispatch_uninstall(p_schema text, p_table text) returns void language plpgsql as $$
begin
  execute format('drop trigger if exists wharf_dispatch on %I.%I', p_schema, p_table);
end $$;

-- Nudges nodes when an event is enqueued by other means (schedule, manual retry).
create function control.dispatch_nudge() returns trigger language plpgsql as $$
begin
  perform pg_notify('wharf_dispatch', '');
  return null;
end $$;
create trigger dispatch_events_nudge after update of state on control.dispatch_events
  for each row when (new.state = 'pending' and old.state = 'dead')
  execute function control.dispatch_nudge();
