-- The image feed: users, their refresh tokens, feeds (an image in the media bucket and a thumbnail in the
-- thumbnails bucket), and the state of the thumbnail worker (imgproc).

-- Users. The hydrate worker's default mapping reads id, email, username and password (the argon2id hash
-- string, salt and parameters inside it). Email is stored lower-cased so that uniqueness ignores case.
create table app.users (
  id          bigint generated always as identity primary key,
  email       text unique not null check (email = lower(email) and length(email) <= 254),
  username    text unique not null check (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
  password    text not null,
  created_at  timestamptz not null default now(),
  -- Set by an operator: a disabled user cannot log in, refresh, or use an access token.
  disabled_at timestamptz
);

-- Refresh tokens, stored as SHA-256 digests (a stolen table row cannot be replayed). Each login starts a
-- family; every refresh uses the presented token up and issues the next of the family. A used token
-- presented again means it was copied: the whole family is revoked.
create table app.refresh_tokens (
  token_hash  bytea primary key,
  user_id     bigint not null references app.users (id) on delete cascade,
  family      uuid not null,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  used_at     timestamptz,
  revoked_at  timestamptz
);
create index refresh_tokens_family_idx on app.refresh_tokens (family);
create index refresh_tokens_user_idx on app.refresh_tokens (user_id);

-- Feeds. Pagination is by id (newest first): a keyset cursor stays stable while rows are added and deleted.
create table app.feeds (
  id               bigint generated always as identity primary key,
  user_id          bigint not null references app.users (id) on delete cascade,
  caption          text not null check (length(caption) <= 2200),
  media_key        text not null unique,
  content_type     text not null,
  size_bytes       bigint not null,
  thumbnail_status text not null default 'pending' check (thumbnail_status in ('pending', 'ready', 'failed')),
  thumbnail_key    text,
  thumbnail_error  text,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);
create index feeds_user_idx on app.feeds (user_id, id desc);
create index feeds_ready_idx on app.feeds (id desc) where thumbnail_status = 'ready';

-- The local event queue of imgproc: S3 event records from the local S3 server land here (one row per
-- record). Copies of imgproc claim rows with FOR UPDATE SKIP LOCKED; a failed row becomes visible again
-- after a backoff and is dead-lettered (dead_at set, kept for the console) after max attempts. The
-- dedupe key makes a record delivered twice one row.
create table control.imgproc_messages (
  id          bigint generated always as identity primary key,
  dedupe_key  text not null unique,
  body        text not null,
  attempts    integer not null default 0,
  visible_at  timestamptz not null default now(),
  claimed_by  text,
  last_error  text,
  dead_at     timestamptz,
  created_at  timestamptz not null default now()
);
create index imgproc_messages_ready_idx on control.imgproc_messages (visible_at, id) where dead_at is null;

-- The last event applied per object, for ordering by S3's sequencer: an event whose sequencer is not
-- greater than the one recorded here is stale (or a duplicate) and is skipped.
create table control.imgproc_objects (
  bucket      text not null,
  key         text not null,
  sequencer   text not null,
  event_name  text not null,
  applied_at  timestamptz not null default now(),
  primary key (bucket, key)
);

-- Where the bridge from the local S3 server's event log has read up to (per bucket). `epoch` names the
-- log; a new epoch (the server's log was wiped) restarts from its beginning.
create table control.imgproc_bridge (
  bucket     text primary key,
  epoch      text not null,
  position   bigint not null,
  updated_at timestamptz not null default now()
);

-- A nudge for the web processes' page caches: any change to feeds, one notification per statement
-- (Postgres folds duplicates within a transaction). The cache is dropped on it, so a cached page is never
-- older than the last committed change by more than the notification's delivery.
create function app.feeds_changed_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('wharf_feeds_changed', '');
  return null;
end $$;
create trigger feeds_changed_notify after insert or update or delete or truncate on app.feeds
  for each statement execute function app.feeds_changed_notify();
