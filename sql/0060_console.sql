-- The operator console: admins (separate from feed users), their sessions, and the audit log of every
-- change an operator makes through the console or the admin API.

create table control.console_admins (
  id            bigserial primary key,
  name          text not null unique check (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
  -- Argon2id, PHC string format ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
  password_hash text not null check (password_hash like '$argon2id$%'),
  disabled      boolean not null default false,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

-- Only the SHA-256 of a session token is stored: a copy of this table does not let anyone log in.
-- The CSRF token is per session (synchronizer token): forms and the console's fetches send it back.
create table control.console_sessions (
  token_hash   text primary key,
  admin_id     bigint not null references control.console_admins (id) on delete cascade,
  csrf_token   text not null,
  created_at   timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  expires_at   timestamptz not null,
  user_agent   text
);
create index console_sessions_admin_idx on control.console_sessions (admin_id);
create index console_sessions_expires_idx on control.console_sessions (expires_at);

-- Failed logins, counted per name and per client address to rate-limit guessing. Old rows are pruned by
-- the login handler itself.
create table control.console_login_failures (
  id     bigserial primary key,
  name   text not null,
  client text not null,
  at     timestamptz not null default now()
);
create index console_login_failures_name_idx on control.console_login_failures (name, at);
create index console_login_failures_client_idx on control.console_login_failures (client, at);

-- Who changed what, when: one row per change request (the admin API and console logins/logouts),
-- with the HTTP status so refused changes are visible too.
create table control.console_audit (
  id      bigserial primary key,
  at      timestamptz not null default now(),
  admin   text not null,
  -- How the operator authenticated: a console session or the admin API bearer token.
  via     text not null check (via in ('session', 'token', 'login')),
  action  text not null,
  target  text,
  status  integer,
  details jsonb not null default '{}'::jsonb,
  request_id text
);
create index console_audit_at_idx on control.console_audit (at desc);
