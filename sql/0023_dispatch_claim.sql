-- Claims always walk the ready index.
--
-- A claim wants the first due pending events in `(run_at, id)` order: an index scan that stops after
-- `limit` rows. But the planner picks that plan only while its statistics say many events are pending.
-- Analyzed in a quiet moment (a few events running, none pending), the queue looks as if `state =
-- 'pending'` matched almost nothing, and a burst that arrives next is claimed by a sequential scan of the
-- whole backlog and a sort, for every claim, until autovacuum analyzes the table again: with 50,000
-- events waiting a claim cost 270 µs per event instead of 35, and it grows with the backlog.
--
-- `dispatch_claimable` selects and locks the events in a function whose own settings rule out the
-- sequential and bitmap scans, so the only plan left is the ordered index scan, whatever the statistics.
-- It serves every installed schema: `control` with a statement planned once per connection, any other
-- (its name quoted with %I) with one planned on each call, a few dozen microseconds.
create function control.dispatch_claimable(p_schema text, p_limit integer)
returns table (id bigint)
language plpgsql
-- Few rows, as the planner of the calling statement should assume: it then updates the claimed events by
-- their key, one index probe each, rather than hashing the whole queue to join them.
rows 16
set enable_seqscan = off
set enable_bitmapscan = off
as $$
begin
  if p_schema = 'control' then
    -- The usual case, as a static statement: planned once per connection, not on every call.
    return query
      select q.id from control.dispatch_queue q
       where q.state = 'pending' and q.run_at <= clock_timestamp()
       order by q.run_at, q.id
       limit p_limit
       for update skip locked;
  else
    return query execute format(
      'select q.id from %I.dispatch_queue q
        where q.state = ''pending'' and q.run_at <= clock_timestamp()
        order by q.run_at, q.id
        limit $1
        for update skip locked', p_schema)
      using p_limit;
  end if;
end $$;
