-- Claims start after the node's last claimed event instead of at the head of the ready index.
--
-- A claim reads the ready index `(run_at, id)` in order from its first entry. The entries of finished events
-- stay in it until vacuum removes them (a claim's update is HOT and a finished event's delete leaves its
-- entry), and autovacuum comes at most once a minute: every claim in between stepped over all of them, page
-- by page, before it found a pending event. Measured (EXPLAIN ANALYZE of the claim's scan, 100,000 events
-- queued): 13 buffers and 0.2 ms with none finished, 780–840 buffers and 1.7 ms with 50,000 finished (6–7
-- µs per claimed event at 250 per claim), 15 buffers again after a VACUUM; started after the last claimed
-- event, 18 buffers and 0.3 ms. Under a steady load the dead entries pile up for a whole autovacuum cycle.
--
-- `<schema>.dispatch_claim(node, limit, done, done_at, done_start_ms, outcomes, after_us, after_id)`:
-- - records the outcomes as the 0026 function does (it calls it with a limit of 0, after the same guard);
-- - claims the first due pending events after the cursor `(run_at, id)` the node passes (`run_at` as
--   microseconds since the epoch, exact where a JSON or JavaScript date would keep only milliseconds and
--   start the scan at the head again), and when there are fewer than the limit, goes on from the head of the
--   index: an event behind the cursor (handed back, released by the master, committed late with an earlier
--   `run_at`) is found then, or when the node passes no cursor, which it does at least once a second;
-- - returns each event's `run_at` in microseconds (`run_at_us`), from which the node takes its next cursor.
-- The 0026 function stays as it was, for the outcome-only writes and for nodes of the previous release.
create or replace function control.dispatch_install_claim_after(p_schema text) returns void language plpgsql as $install$
begin
  -- Checks the name, takes the install lock, and (re)creates the 0026 function this one calls.
  perform control.dispatch_install_claim(p_schema);
  execute format($fn$
    create or replace function %1$I.dispatch_claim(p_node text, p_limit integer, p_done bigint[],
                                                   p_done_at tid[], p_done_start_ms double precision[],
                                                   p_outcomes jsonb, p_after_us bigint, p_after_id bigint)
    returns table (id bigint, at tid, run_at_us bigint, function_name text, source text, table_schema text,
                   table_name text, op text, row_id text, new_row jsonb, old_row jsonb, attempts integer)
    language plpgsql
    rows 64
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_hashjoin = off
    set enable_mergejoin = off
    as $body$
    #variable_conflict use_column
    declare
      v_run_at timestamptz := '-infinity';
      v_id bigint := -9223372036854775808;
      v_got bigint := 0;
      v_n bigint;
    begin
      if p_limit > 0 then
        perform from %1$I.dispatch_nodes n where n.node_id = p_node and not n.released for share;
        if not found then
          return;
        end if;
      end if;
      perform from %1$I.dispatch_claim(p_node, 0, p_done, p_done_at, p_done_start_ms, p_outcomes);
      if p_limit <= 0 then
        return;
      end if;
      if p_after_us is not null and p_after_id is not null then
        v_run_at := timestamptz 'epoch' + p_after_us * interval '1 microsecond';
        v_id := p_after_id;
      end if;
      loop
        -- The first due pending events after (v_run_at, v_id), where the index scan starts; as in 0026,
        -- locked, then updated through the tuple ids of the versions locked (a HOT update). The second
        -- round, from the head, does not see the first one's events as pending any more.
        return query
          update %1$I.dispatch_queue e
             set state = 'running', claimed_by = p_node, claimed_at = clock_timestamp(),
                 started_at = clock_timestamp(), attempts = e.attempts + 1
           where e.ctid = any (array(
             select q.ctid from %1$I.dispatch_queue q
              where q.state = 'pending' and q.run_at <= clock_timestamp() and (q.run_at, q.id) > (v_run_at, v_id)
              order by q.run_at, q.id
              limit p_limit - v_got
              for update skip locked))
          returning e.id, e.ctid,
                    case when isfinite(e.run_at) then (extract(epoch from e.run_at) * 1000000)::bigint end,
                    e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id, e.new_row,
                    e.old_row, e.attempts;
        get diagnostics v_n = row_count;
        v_got := v_got + v_n;
        exit when v_got >= p_limit or v_run_at = '-infinity';
        v_run_at := '-infinity';
        v_id := -9223372036854775808;
      end loop;
    end $body$
  $fn$, p_schema);
end $install$;

select control.dispatch_install_claim_after('control');
