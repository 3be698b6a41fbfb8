-- A message added to imgproc's local queue wakes the waiting consumers at once (`LISTEN wharf_imgproc`,
-- workers/imgproc/pg_queue.ts): an upload's thumbnail starts as soon as its event is queued instead of at
-- the consumer's next poll (every 200 ms by default). One notice per inserting statement, and only when
-- it added a row (a record delivered twice adds none); Postgres folds equal notices of one transaction.
create function control.imgproc_messages_notify() returns trigger
language plpgsql as $$
begin
  if exists (select 1 from imgproc_added) then
    perform pg_notify('wharf_imgproc', '');
  end if;
  return null;
end $$;

create trigger imgproc_messages_notify after insert on control.imgproc_messages
  referencing new table as imgproc_added
  for each statement execute function control.imgproc_messages_notify();
