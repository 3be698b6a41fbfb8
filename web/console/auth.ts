/**
 * Console admins and their sessions: Argon2id password hashes, random session tokens of which only a
 * SHA-256 is stored, a per-session CSRF token (synchronizer token), and a login rate limit counted in
 * the database so that it holds across web processes.
 */
import { hash, verify } from "@node-rs/argon2";
import type { Sql } from "../../shared/db.ts";
import { timingSafeEqual } from "../middleware/admin_auth.ts";

/** How long a session lasts after login, whatever its use. */
export const SESSION_TTL_MS = 12 * 3600_000;
/** Failed logins allowed per name, and per client address, within {@linkcode LOGIN_WINDOW_MS}. */
export const LOGIN_LIMIT = { perName: 5, perClient: 20 };
/** The window of the login rate limit. */
export const LOGIN_WINDOW_MS = 15 * 60_000;

/** A logged-in admin's session, as handlers see it. */
export interface ConsoleSession {
  adminId: number;
  admin: string;
  csrfToken: string;
  tokenHash: string;
  expiresAt: Date;
}

/** Random bytes as base64url: tokens for cookies and forms. */
export function randomToken(bytes = 32): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** SHA-256 hex of a token: what the sessions table keeps. */
export async function tokenHash(token: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Hashes a password with Argon2id (the library's defaults: m=19 MiB, t=2, p=1, as OWASP suggests). */
export async function hashPassword(password: string): Promise<string> {
  return await hash(password);
}

// Verified against when the name is unknown, so that a wrong name costs as long as a wrong password and
// the timing does not tell which names exist.
let dummyHash: Promise<string> | undefined;

/**
 * Creates the admin or, when it exists, sets its password (used by the dev seed and by operators).
 * Idempotent: the hash is only replaced when the password changed.
 */
export async function upsertAdmin(sql: Sql, name: string, password: string): Promise<void> {
  if (password.length < 8) throw new Error("Cannot set an admin password shorter than 8 characters");
  const [row] = await sql<{ password_hash: string }[]>`
    select password_hash from control.console_admins where name = ${name}`;
  if (row && await verify(row.password_hash, password)) return;
  const h = await hashPassword(password);
  await sql`
    insert into control.console_admins (name, password_hash) values (${name}, ${h})
    on conflict (name) do update set password_hash = excluded.password_hash, disabled = false,
      updated_at = now()`;
}

/** Why a login was refused. */
export type LoginRefusal = "rate_limited" | "invalid";

/**
 * Checks a name and password. Counts failures per name and per client; once either is over its limit
 * in the window every attempt is refused as rate limited, without checking the password.
 */
export async function checkLogin(
  sql: Sql,
  name: string,
  password: string,
  client: string,
): Promise<{ ok: true; adminId: number } | { ok: false; reason: LoginRefusal }> {
  const windowMs = LOGIN_WINDOW_MS;
  const [counts] = await sql<{ by_name: number; by_client: number }[]>`
    select count(*) filter (where name = ${name})::int as by_name,
           count(*) filter (where client = ${client})::int as by_client
      from control.console_login_failures
     where at > now() - ${windowMs} * interval '1 millisecond'
       and (name = ${name} or client = ${client})`;
  if (counts.by_name >= LOGIN_LIMIT.perName || counts.by_client >= LOGIN_LIMIT.perClient) {
    return { ok: false, reason: "rate_limited" };
  }
  const [admin] = await sql<{ id: string; password_hash: string; disabled: boolean }[]>`
    select id, password_hash, disabled from control.console_admins where name = ${name}`;
  dummyHash ??= hashPassword(randomToken());
  const good = admin
    ? await verify(admin.password_hash, password).catch(() => false)
    : (await verify(await dummyHash, password).catch(() => false), false);
  if (!admin || !good || admin.disabled) {
    await sql`insert into control.console_login_failures (name, client) values (${name}, ${client})`;
    await sql`delete from control.console_login_failures
               where at < now() - ${windowMs * 2} * interval '1 millisecond'`;
    return { ok: false, reason: "invalid" };
  }
  await sql`delete from control.console_login_failures where name = ${name}`;
  return { ok: true, adminId: Number(admin.id) };
}

/** Opens a session; returns the token for the cookie (never stored). */
export async function createSession(sql: Sql, adminId: number, userAgent?: string): Promise<string> {
  const token = randomToken();
  await sql`
    insert into control.console_sessions (token_hash, admin_id, csrf_token, expires_at, user_agent)
    values (${await tokenHash(token)}, ${adminId}, ${randomToken()},
            now() + ${SESSION_TTL_MS} * interval '1 millisecond', ${userAgent?.slice(0, 200) ?? null})`;
  await sql`delete from control.console_sessions where expires_at < now()`;
  return token;
}

/** The live session of a cookie token, or undefined (unknown, expired, or its admin disabled). */
export async function findSession(sql: Sql, token: string): Promise<ConsoleSession | undefined> {
  if (!/^[A-Za-z0-9_-]{20,100}$/.test(token)) return undefined;
  const h = await tokenHash(token);
  const [row] = await sql<
    { admin_id: string; name: string; csrf_token: string; expires_at: Date; seen_s: number }[]
  >`
    select s.admin_id, a.name, s.csrf_token, s.expires_at,
           extract(epoch from now() - s.last_seen_at)::float8 as seen_s
      from control.console_sessions s join control.console_admins a on a.id = s.admin_id
     where s.token_hash = ${h} and not a.disabled and s.expires_at > now()`;
  if (!row) return undefined;
  // Pages poll every few seconds: note the last use at most once a minute, not on every request.
  if (row.seen_s > 60) {
    await sql`update control.console_sessions set last_seen_at = now() where token_hash = ${h}`;
  }
  return {
    adminId: Number(row.admin_id),
    admin: row.name,
    csrfToken: row.csrf_token,
    tokenHash: h,
    expiresAt: row.expires_at,
  };
}

/** Ends a session. */
export async function deleteSession(sql: Sql, session: ConsoleSession): Promise<void> {
  await sql`delete from control.console_sessions where token_hash = ${session.tokenHash}`;
}

/** True when `given` is the session's CSRF token. */
export function csrfMatches(session: ConsoleSession, given: string | undefined | null): boolean {
  return typeof given === "string" && given.length > 0 && timingSafeEqual(given, session.csrfToken);
}
