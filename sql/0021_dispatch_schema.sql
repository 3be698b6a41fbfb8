-- Dispatch in a chosen schema, and set-based recording of changes.
--
-- `control.dispatch_install_schema(name)` creates dispatch's tables, functions and triggers in any schema
-- (idempotent; identifiers quoted with %I), so a node started with DISPATCH_SCHEMA=name finds its own
-- configuration there. `control` itself is installed by the same function, so both stay alike.
--
-- Recording: inserts and deletes are recorded by statement-level triggers over transition tables (one
-- INSERT ... SELECT per statement instead of one per row); updates keep a row-level trigger, since only it
-- pairs each old row with its new row.

-- Every schema dispatch is installed in; the admin API serves only these.
create table control.dispatch_schemas (
  name         text primary key check (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
  installed_at timestamptz not null default now()
);

create function control.dispatch_install_schema(p_schema text) returns void language plpgsql as $install$
declare
  v_channel text := case when p_schema = 'control' then 'wharf_dispatch'
                         else 'wharf_dispatch_' || lower(p_schema) end;
  v_tag text := case when p_schema = 'control' then 'wharf_dispatch'
                     else 'wharf_dispatch_' || left(md5(p_schema), 10) end;
begin
  if p_schema !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' then
    raise exception 'Cannot install dispatch as % is not a plain identifier', p_schema
      using errcode = '22023';
  end if;
  -- Nodes starting together install at once: one at a time.
  perform pg_advisory_xact_lock(727001020);

  execute format('create schema if not exists %I', p_schema);
  execute format($ddl$
    create table if not exists %1$I.dispatch_functions (
      name         text primary key check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
      code         text not null,
      signature    text,
      timeout_ms   integer not null default 5000 check (timeout_ms between 10 and 600000),
      max_attempts integer not null default 5 check (max_attempts between 1 and 100),
      backoff_ms   integer not null default 500 check (backoff_ms between 1 and 3600000),
      enabled      boolean not null default true,
      created_at   timestamptz not null default now(),
      updated_at   timestamptz not null default now()
    );
    create table if not exists %1$I.dispatch_triggers (
      id           bigserial primary key,
      table_schema text not null,
      table_name   text not null,
      function_name text not null references %1$I.dispatch_functions (name) on delete cascade,
      ops          text[] not null default array['insert', 'update', 'delete']
                    check (ops <@ array['insert', 'update', 'delete'] and cardinality(ops) > 0),
      enabled      boolean not null default true,
      created_at   timestamptz not null default now(),
      unique (table_schema, table_name, function_name)
    );
    create table if not exists %1$I.dispatch_events (
      id            bigserial primary key,
      function_name text not null references %1$I.dispatch_functions (name) on delete cascade,
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
      started_at    timestamptz,
      finished_at   timestamptz,
      last_error    text,
      last_stack    text
    );
    create index if not exists dispatch_events_ready_idx on %1$I.dispatch_events (run_at, id)
      where state = 'pending';
    create index if not exists dispatch_events_running_idx on %1$I.dispatch_events (claimed_by)
      where state = 'running';
    create index if not exists dispatch_events_fn_idx on %1$I.dispatch_events (function_name, state, id desc);
    create table if not exists %1$I.dispatch_nodes (
      node_id       text primary key,
      host          text not null,
      pid           integer not null,
      bind          text not null,
      started_at    timestamptz not null default now(),
      heartbeat_at  timestamptz not null default now(),
      lease_until   timestamptz not null,
      stopped_at    timestamptz
    );
    create table if not exists %1$I.dispatch_leases (
      name        text primary key,
      holder      text,
      lease_until timestamptz not null default '-infinity',
      term        bigint not null default 0
    );
    insert into %1$I.dispatch_leases (name) values ('master') on conflict do nothing;
    create table if not exists %1$I.dispatch_schedules (
      id            bigserial primary key,
      function_name text not null references %1$I.dispatch_functions (name) on delete cascade,
      cron          text not null,
      enabled       boolean not null default true,
      next_run_at   timestamptz,
      last_run_at   timestamptz,
      created_at    timestamptz not null default now()
    );
  $ddl$, p_schema);

  -- Row-level recording (updates): one event per enabled matching trigger, then a nudge.
  execute format($fn$
    create or replace function %1$I.dispatch_record() returns trigger language plpgsql as $body$
    declare
      v_op text := lower(tg_op);
      v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
      v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
      v_n integer;
    begin
      insert into %1$I.dispatch_events (function_name, table_schema, table_name, op, row_id, new_row, old_row)
      select t.function_name, tg_table_schema, tg_table_name, v_op,
             coalesce(v_new ->> 'id', v_old ->> 'id'), v_new, v_old
        from %1$I.dispatch_triggers t
        join %1$I.dispatch_functions f on f.name = t.function_name and f.enabled
       where t.table_schema = tg_table_schema and t.table_name = tg_table_name
         and t.enabled and v_op = any (t.ops);
      get diagnostics v_n = row_count;
      if v_n > 0 then
        perform pg_notify(%2$L, '');
      end if;
      return null;
    end $body$
  $fn$, p_schema, v_channel);

  -- Statement-level recording (inserts over `dispatch_new`, deletes over `dispatch_old`).
  execute format($fn$
    create or replace function %1$I.dispatch_record_rows() returns trigger language plpgsql as $body$
    declare
      v_op text := lower(tg_op);
      v_n bigint;
    begin
      if tg_op = 'INSERT' then
        insert into %1$I.dispatch_events (function_name, table_schema, table_name, op, row_id, new_row)
        select t.function_name, tg_table_schema, tg_table_name, v_op, r.j ->> 'id', r.j
          from (select to_jsonb(n) as j from dispatch_new n) r
         cross join (select t.function_name
                       from %1$I.dispatch_triggers t
                       join %1$I.dispatch_functions f on f.name = t.function_name and f.enabled
                      where t.table_schema = tg_table_schema and t.table_name = tg_table_name
                        and t.enabled and v_op = any (t.ops)) t;
      else
        insert into %1$I.dispatch_events (function_name, table_schema, table_name, op, row_id, old_row)
        select t.function_name, tg_table_schema, tg_table_name, v_op, r.j ->> 'id', r.j
          from (select to_jsonb(o) as j from dispatch_old o) r
         cross join (select t.function_name
                       from %1$I.dispatch_triggers t
                       join %1$I.dispatch_functions f on f.name = t.function_name and f.enabled
                      where t.table_schema = tg_table_schema and t.table_name = tg_table_name
                        and t.enabled and v_op = any (t.ops)) t;
      end if;
      get diagnostics v_n = row_count;
      if v_n > 0 then
        perform pg_notify(%2$L, '');
      end if;
      return null;
    end $body$
  $fn$, p_schema, v_channel);

  -- Attaching and detaching the recording triggers on a table (idempotent).
  execute format($fn$
    create or replace function %1$I.dispatch_install(p_schema text, p_table text) returns void
    language plpgsql as $body$
    begin
      execute format('drop trigger if exists %%I on %%I.%%I', %2$L, p_schema, p_table);
      execute format('create or replace trigger %%I after insert on %%I.%%I '
        'referencing new table as dispatch_new for each statement execute function %1$I.dispatch_record_rows()',
        %3$L, p_schema, p_table);
      execute format('create or replace trigger %%I after update on %%I.%%I '
        'for each row execute function %1$I.dispatch_record()', %4$L, p_schema, p_table);
      execute format('create or replace trigger %%I after delete on %%I.%%I '
        'referencing old table as dispatch_old for each statement execute function %1$I.dispatch_record_rows()',
        %5$L, p_schema, p_table);
    end $body$
  $fn$, p_schema, v_tag, v_tag || '_ins', v_tag || '_upd', v_tag || '_del');
  execute format($fn$
    create or replace function %1$I.dispatch_uninstall(p_schema text, p_table text) returns void
    language plpgsql as $body$
    begin
      execute format('drop trigger if exists %%I on %%I.%%I', %2$L, p_schema, p_table);
      execute format('drop trigger if exists %%I on %%I.%%I', %3$L, p_schema, p_table);
      execute format('drop trigger if exists %%I on %%I.%%I', %4$L, p_schema, p_table);
      execute format('drop trigger if exists %%I on %%I.%%I', %5$L, p_schema, p_table);
    end $body$
  $fn$, p_schema, v_tag, v_tag || '_ins', v_tag || '_upd', v_tag || '_del');

  -- Nudges nodes when a dead event is put back by hand.
  execute format($fn$
    create or replace function %1$I.dispatch_nudge() returns trigger language plpgsql as $body$
    begin
      perform pg_notify(%2$L, '');
      return null;
    end $body$
  $fn$, p_schema, v_channel);
  execute format($ddl$
    create or replace trigger dispatch_events_nudge after update of state on %1$I.dispatch_events
      for each row when (new.state = 'pending' and old.state = 'dead')
      execute function %1$I.dispatch_nudge()
  $ddl$, p_schema);

  insert into control.dispatch_schemas (name) values (p_schema) on conflict do nothing;
end $install$;

select control.dispatch_install_schema('control');

-- Tables already recorded by the row-level trigger of 0020 move to the new triggers.
select control.dispatch_install(t.table_schema, t.table_name)
  from (select distinct table_schema, table_name from control.dispatch_triggers) t
  join information_schema.tables i on i.table_schema = t.table_schema and i.table_name = t.table_name;
