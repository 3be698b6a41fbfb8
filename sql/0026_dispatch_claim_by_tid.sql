-- Claims and done events reach their rows by tuple id instead of by key.
--
-- A node's round trip (`dispatch_claim_events`, 0024) found every event it touched through the primary key:
-- the claim updated the events it had just chosen and locked by id, and each done event was deleted by id.
-- That is one descent of the primary key per event, twice per event (profiled: a sixth of the database's CPU
-- in the bench went to btree descents), for rows the statement had in hand a moment before.
--
-- Now `<schema>.dispatch_claim(node, limit, done, done_at, done_start_ms, outcomes)`:
-- - the claim locks the first due pending events (the ready index, as before) and updates them by the
--   tuple id of the version it locked, and returns that version's new tuple id (`at`) with each event;
-- - done events come back as arrays (id, the `at` their claim returned, ms from claim to start), not JSON,
--   and are moved to the history through their tuple id, checked against their id, node and state;
-- - a done event not found there (the queue was rewritten meanwhile, by VACUUM FULL or CLUSTER, or the
--   caller had no `at`) is looked up by key, as before; so is every dead event and every retry
--   (`outcomes`, JSON as in 0024: they are few).
-- A tuple id cannot point at a wrong event: it is checked with the event's id, node and state, and a
-- running event's row version does not move (pruning keeps a live tuple's line pointer); an update by the
-- master's release makes a new version, which the check then refuses, as the key lookup would.
--
-- The guard is unchanged: with a limit the node's own row is share-locked first, and nothing at all happens
-- once the master released the node. The 0024 function stays where it was installed (nodes of the previous
-- release call it until they are replaced); new installs create only this one.
create or replace function control.dispatch_install_claim(p_schema text) returns void language plpgsql as $install$
begin
  if p_schema !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' then
    raise exception 'Cannot install dispatch as % is not a plain identifier', p_schema
      using errcode = '22023';
  end if;
  -- The same lock as dispatch_install_schema: nodes starting together install one at a time.
  perform pg_advisory_xact_lock(727001020);
  execute format($fn$
    create or replace function %1$I.dispatch_claim(p_node text, p_limit integer, p_done bigint[],
                                                   p_done_at tid[], p_done_start_ms double precision[],
                                                   p_outcomes jsonb)
    returns table (id bigint, at tid, function_name text, source text, table_schema text, table_name text,
                   op text, row_id text, new_row jsonb, old_row jsonb, attempts integer)
    language plpgsql
    rows 64
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_hashjoin = off
    set enable_mergejoin = off
    as $body$
    #variable_conflict use_column
    declare
      v_moved integer;
    begin
      if p_limit > 0 then
        perform from %1$I.dispatch_nodes n where n.node_id = p_node and not n.released for share;
        if not found then
          return;
        end if;
      end if;
      if cardinality(p_done) > 0 then
        -- By tuple id: a TID scan per event, no index descent. `e.id + 0` keeps the planner from probing the
        -- primary key instead, which it prefers while the queue is small.
        with finished as (
          delete from %1$I.dispatch_queue e
           using unnest(p_done, p_done_at, p_done_start_ms) as v(id, at, start_ms)
           where e.ctid = v.at and e.id + 0 = v.id and e.claimed_by = p_node and e.state = 'running'
          returning e.id, e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id, e.new_row,
                    e.old_row, e.attempts, e.run_at, e.created_at, e.claimed_by, e.claimed_at,
                    coalesce(e.claimed_at + v.start_ms * interval '1 millisecond', e.started_at) as started_at
        )
        insert into %1$I.dispatch_history (id, function_name, source, table_schema, table_name, op, row_id,
                                           new_row, old_row, state, attempts, run_at, created_at, claimed_by,
                                           claimed_at, started_at, finished_at)
        select f.id, f.function_name, f.source, f.table_schema, f.table_name, f.op, f.row_id, f.new_row,
               f.old_row, 'done', f.attempts, f.run_at, f.created_at, f.claimed_by, f.claimed_at,
               f.started_at, clock_timestamp()
          from finished f;
        get diagnostics v_moved = row_count;
        -- Not all there: all of them join the outcomes found by key below (those moved above are gone for
        -- that statement).
        if v_moved < cardinality(p_done) then
          p_outcomes := coalesce(p_outcomes, '[]'::jsonb) || (
            select jsonb_agg(jsonb_build_object('id', d.id, 'state', 'done', 'start_ms', d.start_ms))
              from unnest(p_done, p_done_start_ms) as d(id, start_ms));
        end if;
      end if;
      if p_outcomes is not null and jsonb_array_length(p_outcomes) > 0 then
        with v as (
          select * from jsonb_to_recordset(p_outcomes)
                 as v(id bigint, state text, delay_ms double precision, error text, stack text,
                      start_ms double precision)
        ), finished as (
          delete from %1$I.dispatch_queue e using v
           where e.id = v.id and v.state <> 'pending' and e.claimed_by = p_node and e.state = 'running'
          returning e.id, e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id, e.new_row,
                    e.old_row, v.state, e.attempts, e.run_at, e.created_at, e.claimed_by, e.claimed_at,
                    coalesce(e.claimed_at + v.start_ms * interval '1 millisecond', e.started_at) as started_at,
                    v.error, v.stack
        ), moved as (
          insert into %1$I.dispatch_history (id, function_name, source, table_schema, table_name, op, row_id,
                                             new_row, old_row, state, attempts, run_at, created_at, claimed_by,
                                             claimed_at, started_at, finished_at, last_error, last_stack)
          select f.id, f.function_name, f.source, f.table_schema, f.table_name, f.op, f.row_id, f.new_row,
                 f.old_row, f.state, f.attempts, f.run_at, f.created_at, f.claimed_by, f.claimed_at,
                 f.started_at, clock_timestamp(), f.error, f.stack
            from finished f
        )
        update %1$I.dispatch_queue e
           set state = 'pending', claimed_by = null,
               run_at = clock_timestamp() + v.delay_ms * interval '1 millisecond',
               started_at = coalesce(e.claimed_at + v.start_ms * interval '1 millisecond', e.started_at),
               last_error = v.error,
               last_stack = v.stack
          from v
         where e.id = v.id and v.state = 'pending' and e.claimed_by = p_node and e.state = 'running';
      end if;
      if p_limit > 0 then
        -- The first due pending events in order, skipping those other nodes hold, updated through the tuple
        -- ids of the versions locked (a TID scan). The claim changes no indexed column: a HOT update. An
        -- event whose locked version is newer than this statement's snapshot (changed by a transaction that
        -- committed meanwhile) is not visible to the update: it stays pending for the next claim.
        return query
          update %1$I.dispatch_queue e
             set state = 'running', claimed_by = p_node, claimed_at = clock_timestamp(),
                 started_at = clock_timestamp(), attempts = e.attempts + 1
           where e.ctid = any (array(
             select q.ctid from %1$I.dispatch_queue q
              where q.state = 'pending' and q.run_at <= clock_timestamp()
              order by q.run_at, q.id
              limit p_limit
              for update skip locked))
          returning e.id, e.ctid, e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id,
                    e.new_row, e.old_row, e.attempts;
      end if;
    end $body$
  $fn$, p_schema);
end $install$;

select control.dispatch_install_claim('control');
