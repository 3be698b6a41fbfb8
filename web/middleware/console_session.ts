import type { Context, Next } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Sql } from "../../shared/db.ts";
import { WharfError } from "../../shared/errors.ts";
import { type ConsoleSession, csrfMatches, findSession, SESSION_TTL_MS } from "../console/auth.ts";

/** Options for {@linkcode consoleSession} and the cookie helpers. */
export interface ConsoleSessionOptions {
  sql?: Sql;
  /**
   * Force the `Secure` cookie flag on or off. Default: on when the request came over TLS (the URL is
   * https, as behind a TLS-terminating Deno.serve or a proxy that keeps the scheme).
   */
  secure?: boolean;
}

/** The session cookie's name. */
export const SESSION_COOKIE = "wharf_session";
/** The header the console's fetches carry the CSRF token in; forms use the `_csrf` field. */
export const CSRF_HEADER = "x-csrf-token";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function isSecure(c: Context, o: ConsoleSessionOptions): boolean {
  return o.secure ?? new URL(c.req.url).protocol === "https:";
}

/** Sets the session cookie: HttpOnly, SameSite=Strict, Secure over TLS, path `/`. */
export function setSessionCookie(c: Context, token: string, o: ConsoleSessionOptions): void {
  setCookie(c, SESSION_COOKIE, token, {
    httpOnly: true,
    sameSite: "Strict",
    secure: isSecure(c, o),
    path: "/",
    maxAge: Math.floor(SESSION_TTL_MS / 1000),
  });
}

/** Clears the session cookie. */
export function clearSessionCookie(c: Context, o: ConsoleSessionOptions): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: isSecure(c, o), httpOnly: true, sameSite: "Strict" });
}

/** Loads the request's console session once (cached on the context). */
export async function loadSession(c: Context, sql: Sql | undefined): Promise<ConsoleSession | undefined> {
  if (c.get("sessionLoaded")) return c.get("session");
  c.set("sessionLoaded", true);
  const token = getCookie(c, SESSION_COOKIE);
  if (!token || !sql) return undefined;
  const s = await findSession(sql, token);
  if (s) c.set("session", s);
  return s;
}

/**
 * Refuses a change request (any method but GET/HEAD/OPTIONS) whose CSRF token, from the `x-csrf-token`
 * header or a form's `_csrf` field, is not the session's. SameSite=Strict already keeps other sites'
 * requests from carrying the cookie; the token is the second lock, for old browsers and same-site
 * attackers.
 */
export async function checkCsrf(c: Context, session: ConsoleSession): Promise<void> {
  if (SAFE_METHODS.has(c.req.method)) return;
  let given = c.req.header(CSRF_HEADER);
  if (!given && (c.req.header("content-type") ?? "").includes("application/x-www-form-urlencoded")) {
    const form = await c.req.parseBody();
    given = typeof form._csrf === "string" ? form._csrf : undefined;
  }
  if (!csrfMatches(session, given)) {
    throw new WharfError(403, "Cannot accept a change without the session's CSRF token", { code: "csrf" });
  }
}

/**
 * Guards the console's pages: without a session a page request is sent to the login form (JSON
 * requests get 401); with one, the admin is on `c.get("admin")` and changes need the CSRF token.
 */
export function consoleSession(o: ConsoleSessionOptions) {
  return async function consoleSessionMiddleware(c: Context, next: Next) {
    const s = await loadSession(c, o.sql);
    if (!s) {
      if (!SAFE_METHODS.has(c.req.method) || !(c.req.header("accept") ?? "").includes("text/html")) {
        throw new WharfError(401, "Console login required", { code: "unauthorized" });
      }
      const next = encodeURIComponent(c.req.path + (new URL(c.req.url).search || ""));
      return c.redirect(`/console/login?next=${next}`, 303);
    }
    await checkCsrf(c, s);
    c.set("admin", s.admin);
    c.set("via", "session");
    return await next();
  };
}
