-- The history's event-list index in ascending id order.
--
-- `dispatch_history_fn_idx` was `(function_name, state, id desc)`: every finished event's entry went to the
-- left end of its function's range, where a btree splits a full page in the middle, so the index grew to
-- twice the size of its entries (7.2 MB per 100,000 done events of one function, against 4.0 MB in ascending
-- order, where a full page at the right end is split there) and each insert found its page by a full
-- descent. Ascending, the event list's `order by id desc` reads it backwards, as fast.
--
-- `control.dispatch_history_index(schema)` rebuilds it in a schema whose history is at most 256 MiB (an
-- index build blocks writes to the history while it runs, that is, finished events); a larger history keeps
-- its index until an operator rebuilds it at a quiet moment, without blocking:
--   create index concurrently dispatch_history_fn_idx_asc on <schema>.dispatch_history (function_name, state, id);
--   drop index concurrently <schema>.dispatch_history_fn_idx;
--   alter index <schema>.dispatch_history_fn_idx_asc rename to dispatch_history_fn_idx;
-- The migration rebuilds it in `control`; nodes do it in their schema when they start.
create or replace function control.dispatch_history_index(p_schema text) returns boolean
language plpgsql as $fn$
declare
  v_def text;
  v_bytes bigint;
begin
  if p_schema !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' then
    raise exception 'Cannot install dispatch as % is not a plain identifier', p_schema
      using errcode = '22023';
  end if;
  -- The same lock as the installs: nodes starting together rebuild one at a time.
  perform pg_advisory_xact_lock(727001020);
  select pg_get_indexdef(i.indexrelid), pg_relation_size(i.indrelid) into v_def, v_bytes
    from pg_index i
    join pg_class ic on ic.oid = i.indexrelid
    join pg_namespace n on n.oid = ic.relnamespace
   where n.nspname = p_schema and ic.relname = 'dispatch_history_fn_idx';
  if v_def is null or v_def !~ 'id DESC\)$' or v_bytes > 256 * 1024 * 1024 then
    return false;
  end if;
  execute format('drop index %1$I.dispatch_history_fn_idx;
                  create index dispatch_history_fn_idx on %1$I.dispatch_history (function_name, state, id)',
                 p_schema);
  return true;
end $fn$;

select control.dispatch_history_index('control');
