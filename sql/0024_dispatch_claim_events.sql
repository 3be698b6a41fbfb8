-- Claims and outcomes always find their events by key, whatever the statistics say.
--
-- 0023 made the choice of the first pending events immune to a misleading analyze (the queue analyzed in
-- a quiet moment, then a burst). The rest of a claim and every outcome write still joined their event ids
-- to the queue in statements the planner costed from the same statistics: believing the queue held a
-- couple of hundred rows, it hashed the ids and read the whole queue for each claim and each outcome write
-- (measured: 37 ms per claim with 100,000 events waiting, twice the database CPU per event, growing with
-- the backlog), until autovacuum analyzed the table again.
--
-- Now one function per installed schema, `<schema>.dispatch_claim_events(node, limit, outcomes)`, does a
-- node's whole round trip: it records the outcomes it is given (done and dead events move to the history,
-- retries go back to pending after their delay), then claims up to `limit` due events and returns them.
-- Its settings rule out sequential and bitmap scans and hash and merge joins, so every event is reached
-- through the primary key (or, for the choice of pending events, the ready index). Its statements are
-- static (written for the schema when the function is made), so they are planned once per connection.
--
-- With a limit it first takes a share lock on the node's own row and does nothing at all once the master
-- released the node (its lease had expired): no outcome is written and nothing is claimed, as the
-- released events already went back to the queue. The node row is locked before any event row, in the
-- order the master's release locks them. Without a limit (a flush of outcomes alone) there is no guard:
-- an outcome only ever touches an event still running under the node.
create or replace function control.dispatch_install_claim(p_schema text) returns void language plpgsql as $install$
begin
  if p_schema !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' then
    raise exception 'Cannot install dispatch as % is not a plain identifier', p_schema
      using errcode = '22023';
  end if;
  -- The same lock as dispatch_install_schema: nodes starting together install one at a time.
  perform pg_advisory_xact_lock(727001020);
  execute format($fn$
    create or replace function %1$I.dispatch_claim_events(p_node text, p_limit integer, p_outcomes jsonb)
    returns table (id bigint, function_name text, source text, table_schema text, table_name text, op text,
                   row_id text, new_row jsonb, old_row jsonb, attempts integer)
    language plpgsql
    rows 64
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_hashjoin = off
    set enable_mergejoin = off
    as $body$
    #variable_conflict use_column
    begin
      if p_limit > 0 then
        perform from %1$I.dispatch_nodes n where n.node_id = p_node and not n.released for share;
        if not found then
          return;
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
        -- The first due pending events in order, skipping those other nodes hold. The claim changes no
        -- indexed column, so it can be a HOT update.
        -- The claimed events are then updated by key (`= any` of an array: an index probe each, never a
        -- join the planner could turn around).
        return query
          update %1$I.dispatch_queue e
             set state = 'running', claimed_by = p_node, claimed_at = clock_timestamp(),
                 started_at = clock_timestamp(), attempts = e.attempts + 1
           where e.id = any (array(
             select q.id from %1$I.dispatch_queue q
              where q.state = 'pending' and q.run_at <= clock_timestamp()
              order by q.run_at, q.id
              limit p_limit
              for update skip locked))
          returning e.id, e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id,
                    e.new_row, e.old_row, e.attempts;
      end if;
    end $body$
  $fn$, p_schema);
end $install$;

select control.dispatch_install_claim('control');

-- Replaced by dispatch_claim_events.
drop function control.dispatch_claimable(text, integer);
