-- Dispatch events split into a hot queue and a history.
--
-- Before: one table held every event for ever, and each event wrote three full row versions (recorded,
-- claimed, finished), each with new entries in three indexes, one of them including `state`, so no update
-- could be HOT. Now:
--
-- * `dispatch_queue` holds only pending and running events. Its only indexes are the primary key and
--   `(run_at, id)`, and it leaves half of each page free (fillfactor 50), so a claim (state, claimed_by,
--   claimed_at, attempts) is a HOT update: a new row version on the same page and no index entry.
-- * `dispatch_history` holds finished events (done and dead). Finishing moves the row there in one
--   statement (`DELETE ... RETURNING` feeding an `INSERT`).
-- * `dispatch_events` is a view over both with the same columns as the old table, so reads filter and
--   sort as before; an INSTEAD OF trigger makes it writable (a row moves between the two tables when its
--   state says so), which keeps manual retries and hand-written inserts working.
--
-- Neither table has a foreign key to `dispatch_functions` (a key check per recorded and per finished
-- event): deleting a function deletes its events by a trigger, and a node records an event whose
-- function is gone as dead.
--
-- Finding the events of a dead node no longer has an index (it would make every claim a non-HOT update).
-- Instead `dispatch_nodes.released` says whether the master has already handed a dead node's events back:
-- the master scans the queue only for nodes whose lease expired and that were not released yet, holding
-- their node rows locked, and a claim takes a share lock on its own node row and claims nothing once the
-- node was released (until its heartbeat renews the lease), so no claim can slip past a release.

create or replace function control.dispatch_install_schema(p_schema text) returns void language plpgsql as $install$
declare
  v_channel text := case when p_schema = 'control' then 'wharf_dispatch'
                         else 'wharf_dispatch_' || lower(p_schema) end;
  v_tag text := case when p_schema = 'control' then 'wharf_dispatch'
                     else 'wharf_dispatch_' || left(md5(p_schema), 10) end;
  v_kind "char";
  v_cols text := 'id, function_name, source, table_schema, table_name, op, row_id, new_row, old_row, state, '
    'attempts, run_at, created_at, claimed_by, claimed_at, started_at, finished_at, last_error, last_stack';
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
    -- True once the master handed back the events of this node after its lease expired; a heartbeat
    -- (or a new registration) sets it false again.
    alter table %1$I.dispatch_nodes add column if not exists released boolean not null default false;
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

  -- The events table of an earlier install is emptied into the new tables below, then dropped.
  select c.relkind into v_kind
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = p_schema and c.relname = 'dispatch_events';
  execute format('create sequence if not exists %I.dispatch_events_id_seq', p_schema);
  if v_kind = 'r' then
    execute format('alter sequence %1$I.dispatch_events_id_seq owned by none;
                    alter table %1$I.dispatch_events rename to dispatch_events_before_queue', p_schema);
  end if;

  execute format($ddl$
    create table if not exists %1$I.dispatch_queue (
      id            bigint primary key default nextval(%2$L),
      function_name text not null,
      source        text not null default 'trigger' check (source in ('trigger', 'schedule', 'manual')),
      table_schema  text,
      table_name    text,
      op            text check (op in ('insert', 'update', 'delete')),
      row_id        text,
      new_row       jsonb,
      old_row       jsonb,
      state         text not null default 'pending' check (state in ('pending', 'running')),
      attempts      integer not null default 0,
      run_at        timestamptz not null default now(),
      created_at    timestamptz not null default clock_timestamp(),
      claimed_by    text,
      claimed_at    timestamptz,
      -- When the function started (this attempt).
      started_at    timestamptz,
      finished_at   timestamptz,
      last_error    text,
      last_stack    text
    ) with (fillfactor = 50);
    alter sequence %1$I.dispatch_events_id_seq owned by %1$I.dispatch_queue.id;
    -- Pending events in claim order. Running ones are in it too: an index on state or claimed_by would
    -- make claims non-HOT.
    create index if not exists dispatch_queue_ready_idx on %1$I.dispatch_queue (run_at, id);
    create table if not exists %1$I.dispatch_history (
      id            bigint primary key,
      function_name text not null,
      source        text not null check (source in ('trigger', 'schedule', 'manual')),
      table_schema  text,
      table_name    text,
      op            text check (op in ('insert', 'update', 'delete')),
      row_id        text,
      new_row       jsonb,
      old_row       jsonb,
      state         text not null check (state in ('done', 'dead')),
      attempts      integer not null,
      run_at        timestamptz not null,
      created_at    timestamptz not null,
      claimed_by    text,
      claimed_at    timestamptz,
      started_at    timestamptz,
      finished_at   timestamptz,
      last_error    text,
      last_stack    text
    );
    create index if not exists dispatch_history_fn_idx on %1$I.dispatch_history (function_name, state, id desc);
    create index if not exists dispatch_history_dead_idx on %1$I.dispatch_history (id) where state = 'dead';
  $ddl$, p_schema, quote_ident(p_schema) || '.dispatch_events_id_seq');

  if v_kind = 'r' then
    execute format($ddl$
      insert into %1$I.dispatch_queue (%2$s)
        select %2$s from %1$I.dispatch_events_before_queue where state in ('pending', 'running');
      insert into %1$I.dispatch_history (%2$s)
        select %2$s from %1$I.dispatch_events_before_queue where state in ('done', 'dead');
      drop table %1$I.dispatch_events_before_queue;
      drop function if exists %1$I.dispatch_nudge();
    $ddl$, p_schema, v_cols);
  end if;

  -- Every event, as the old table showed them.
  execute format($ddl$
    create or replace view %1$I.dispatch_events as
      select %2$s from %1$I.dispatch_queue
      union all
      select %2$s from %1$I.dispatch_history;
    alter view %1$I.dispatch_events alter column id set default nextval(%3$L);
    alter view %1$I.dispatch_events alter column source set default 'trigger';
    alter view %1$I.dispatch_events alter column state set default 'pending';
    alter view %1$I.dispatch_events alter column attempts set default 0;
    alter view %1$I.dispatch_events alter column run_at set default now();
    alter view %1$I.dispatch_events alter column created_at set default clock_timestamp();
  $ddl$, p_schema, v_cols, quote_ident(p_schema) || '.dispatch_events_id_seq');

  -- Writes through the view: the row lives in the queue while pending or running, in the history once
  -- done or dead, and moves when an UPDATE changes which. A row put back to pending nudges the nodes.
  execute format($fn$
    create or replace function %1$I.dispatch_events_write() returns trigger language plpgsql as $body$
    begin
      if tg_op in ('UPDATE', 'DELETE') then
        if old.state in ('pending', 'running') then
          if tg_op = 'UPDATE' and new.state in ('pending', 'running') then
            update %1$I.dispatch_queue set (%3$s) = (select new.*) where id = old.id;
            if not found then return null; end if;
            if new.state = 'pending' then perform pg_notify(%2$L, ''); end if;
            return new;
          end if;
          delete from %1$I.dispatch_queue where id = old.id;
        else
          if tg_op = 'UPDATE' and new.state in ('done', 'dead') then
            update %1$I.dispatch_history set (%3$s) = (select new.*) where id = old.id;
            if not found then return null; end if;
            return new;
          end if;
          delete from %1$I.dispatch_history where id = old.id;
        end if;
        -- Gone meanwhile (finished, or moved by someone else): nothing done here.
        if not found then return null; end if;
        if tg_op = 'DELETE' then return old; end if;
      end if;
      if new.state in ('pending', 'running') then
        insert into %1$I.dispatch_queue (%3$s) select new.*;
        if new.state = 'pending' then perform pg_notify(%2$L, ''); end if;
      elsif new.state in ('done', 'dead') then
        insert into %1$I.dispatch_history (%3$s) select new.*;
      else
        raise exception 'Cannot store event as its state %% is not pending, running, done or dead', new.state
          using errcode = '23514';
      end if;
      return new;
    end $body$;
    create or replace trigger dispatch_events_write instead of insert or update or delete
      on %1$I.dispatch_events for each row execute function %1$I.dispatch_events_write();
  $fn$, p_schema, v_channel, v_cols);

  -- Deleting a function deletes its events (what the foreign key's cascade did before).
  execute format($fn$
    create or replace function %1$I.dispatch_functions_gone() returns trigger language plpgsql as $body$
    begin
      delete from %1$I.dispatch_queue q using dispatch_gone g where q.function_name = g.name;
      delete from %1$I.dispatch_history h using dispatch_gone g where h.function_name = g.name;
      return null;
    end $body$;
    create or replace trigger dispatch_functions_gone after delete on %1$I.dispatch_functions
      referencing old table as dispatch_gone for each statement execute function %1$I.dispatch_functions_gone();
  $fn$, p_schema);

  -- Row-level recording (updates): one event per enabled matching trigger, then a nudge.
  execute format($fn$
    create or replace function %1$I.dispatch_record() returns trigger language plpgsql as $body$
    declare
      v_op text := lower(tg_op);
      v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
      v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
      v_n integer;
    begin
      insert into %1$I.dispatch_queue (function_name, table_schema, table_name, op, row_id, new_row, old_row)
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
        insert into %1$I.dispatch_queue (function_name, table_schema, table_name, op, row_id, new_row)
        select t.function_name, tg_table_schema, tg_table_name, v_op, r.j ->> 'id', r.j
          from (select to_jsonb(n) as j from dispatch_new n) r
         cross join (select t.function_name
                       from %1$I.dispatch_triggers t
                       join %1$I.dispatch_functions f on f.name = t.function_name and f.enabled
                      where t.table_schema = tg_table_schema and t.table_name = tg_table_name
                        and t.enabled and v_op = any (t.ops)) t;
      else
        insert into %1$I.dispatch_queue (function_name, table_schema, table_name, op, row_id, old_row)
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

  insert into control.dispatch_schemas (name) values (p_schema) on conflict do nothing;
end $install$;

-- Every installed schema (control first) moves to the new layout.
select control.dispatch_install_schema(name)
  from control.dispatch_schemas
 order by name <> 'control', name;
