-- imgproc's Postgres queue claims by its ready index, whatever the statistics say.
--
-- A claim took the first visible messages in id order, which the ready index `(visible_at, id)` does not
-- hold: the planner either walked the primary key skipping invisible and dead messages, or read every
-- visible message by the ready index and sorted them. With the table analyzed in a quiet moment (a few
-- messages, none visible), it believed one message at most was visible and chose the second: with
-- 100,000 messages waiting, 76 ms per claim, one claim per image, until autovacuum analyzed the table again.
--
-- Now messages are claimed in the ready index's own order (visible first, then oldest: a retried message
-- waits its turn behind those that became visible before it, as on SQS), through a function whose settings
-- rule out sequential and bitmap scans, sorts, and hash and merge joins: the index scan stops after the
-- claim's size, and the claimed messages are updated by key.
create function control.imgproc_claim(p_consumer text, p_limit integer, p_visibility_ms double precision)
returns table (id bigint, body text, attempts integer)
language plpgsql
rows 10
set enable_seqscan = off
set enable_bitmapscan = off
set enable_sort = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
#variable_conflict use_column
begin
  return query
    update control.imgproc_messages m
       set visible_at = now() + p_visibility_ms * interval '1 millisecond',
           attempts = m.attempts + 1,
           claimed_by = p_consumer
     where m.id = any (array(
       select q.id from control.imgproc_messages q
        where q.dead_at is null and q.visible_at <= now()
        order by q.visible_at, q.id
        limit p_limit
        for update skip locked))
    returning m.id, m.body, m.attempts;
end $$;
