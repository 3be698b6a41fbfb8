/**
 * The operator console, mounted at `/console`: the login form, logout, and every page of the registry
 * behind the session guard (HTML rendered on the server; islands only where a page is interactive).
 */
import { type Context, Hono } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { getConnInfo } from "hono/deno";
import { trimTrailingSlash } from "hono/trailing-slash";
import type { VNode } from "preact";
import { z } from "zod";
import type { AppEnv, AppOptions } from "../../app.tsx";
import { renderPage } from "../../app.tsx";
import type { Sql } from "../../../shared/db.ts";
import { errorResponseBody, WharfError } from "../../../shared/errors.ts";
import { createLogger } from "../../../shared/log.ts";
import { Layout } from "../../components/Layout.tsx";
import { checkLogin, createSession, deleteSession, randomToken } from "../../console/auth.ts";
import { timingSafeEqual } from "../../middleware/admin_auth.ts";
import { recordAudit } from "../../console/audit.ts";
import {
  checkCsrf,
  clearSessionCookie,
  consoleSession,
  type ConsoleSessionOptions,
  loadSession,
  setSessionCookie,
} from "../../middleware/console_session.ts";
import type { PageKit } from "./page.ts";
import { CONSOLE_PAGES } from "./pages.ts";

/** What the console is built from. */
export interface ConsoleOptions extends AppOptions {
  /** The islands script URL (versioned). */
  islandsSrc: string;
}

/** The login form's own CSRF cookie (double submit: no session exists yet to hold a token). */
const LOGIN_COOKIE = "wharf_login";

const LoginForm = z.object({
  name: z.string().trim().min(1).max(64),
  password: z.string().min(1).max(1024),
  next: z.string().optional(),
});

/** Only paths inside the console are followed after login (no open redirect). */
function safeNext(next: string | undefined): string {
  return next && /^\/console(\/[^\s\\]*)?(\?[^\s\\]*)?$/.test(next) && !next.startsWith("//")
    ? next
    : "/console";
}

function clientOf(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Session cookie settings from the environment: `WHARF_COOKIE_SECURE=true|false` overrides detection. */
export function cookieOptions(options: AppOptions): ConsoleSessionOptions {
  const v = options.env?.WHARF_COOKIE_SECURE;
  return { sql: options.sql, secure: v === "true" ? true : v === "false" ? false : undefined };
}

function LoginPage(
  { error, next, name, csrf }: { error?: string; next?: string; name?: string; csrf: string },
) {
  return (
    <Layout title="Log in">
      <section class="card login">
        <h1>Console login</h1>
        <form method="post" action="/console/login" data-testid="login-form">
          <input type="hidden" name="next" value={next ?? ""} />
          <input type="hidden" name="_csrf" value={csrf} />
          <label class="field">
            <span>Name</span>
            <input name="name" autocomplete="username" required value={name ?? ""} />
          </label>
          <label class="field">
            <span>Password</span>
            <input name="password" type="password" autocomplete="current-password" required />
          </label>
          {error && <p class="error" role="alert" data-testid="login-error">{error}</p>}
          <div class="actions">
            <button type="submit">Log in</button>
          </div>
        </form>
        <p class="muted small">
          Console admins are separate from feed users. <code>deno task dev</code> prints the demo login.
        </p>
      </section>
    </Layout>
  );
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/** A lost database is a 503 with a plain message, not an internal error. */
function asUnavailable(err: unknown): unknown {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && CONNECTION_CODES.has(code)
    ? new WharfError(503, "Cannot reach the database: the console works again once it is back", {
      cause: err,
    })
    : err;
}

function wantsHtml(c: Context): boolean {
  return (c.req.header("accept") ?? "").includes("text/html");
}

/** Builds the console's routes. */
export function consoleRoutes(options: ConsoleOptions): Hono<AppEnv> {
  const log = options.log ?? createLogger("web");
  const cookie = cookieOptions(options);
  const r = new Hono<AppEnv>();
  r.use(trimTrailingSlash());
  r.use(async function consoleHeaders(c, next) {
    await next();
    // Scripts and styles only from this origin (the islands bundle), no framing, no caching of pages
    // that show operator data.
    c.header(
      "content-security-policy",
      "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; " +
        "frame-ancestors 'none'",
    );
    c.header("x-content-type-options", "nosniff");
    c.header("referrer-policy", "same-origin");
    c.header("cache-control", "no-store");
  });
  const needSql = (): Sql => {
    if (!options.sql) throw new WharfError(503, "Cannot show the console as no database is configured");
    return options.sql;
  };
  const nav = CONSOLE_PAGES.map((p) => ({ href: p.href, title: p.title }));

  const kit: PageKit = {
    sql: needSql,
    env: options.env ?? {},
    render(c, page) {
      const s = c.get("session");
      const html = renderPage(
        <Layout
          title={page.title}
          nav={nav}
          active={page.active}
          admin={s?.admin}
          csrf={s?.csrfToken}
          islandsSrc={options.islandsSrc}
        >
          {page.body}
        </Layout>,
      );
      return c.html(html, (page.status ?? 200) as 200);
    },
  };

  r.onError((thrown, c) => {
    const err = asUnavailable(thrown);
    const { status, body } = errorResponseBody(err, c.get("requestId"));
    if (status === 503) log.warn("console unavailable", { path: c.req.path, reason: body.error.message });
    else if (status >= 500) log.error("console request failed", { path: c.req.path, error: err });
    if (!wantsHtml(c)) return c.json(body, status as 500);
    const s = c.get("session");
    const page: VNode = (
      <section class="card error-page" data-testid="error-page">
        <h1>{status === 503 ? "Unavailable" : status === 404 ? "Not found" : `Error ${status}`}</h1>
        <p class="error">{body.error.message}</p>
        <p class="muted small">Request id {body.error.request_id}</p>
      </section>
    );
    return c.html(
      renderPage(
        <Layout title="Error" nav={s ? nav : undefined} admin={s?.admin} csrf={s?.csrfToken}>{page}</Layout>,
      ),
      status as 500,
    );
  });

  // Every login form carries a fresh random token that must come back both as the form field and as a
  // SameSite=Strict cookie, so another site cannot log a browser in to an account of its choosing.
  const loginPage = (
    c: Context<AppEnv>,
    p: { error?: string; next?: string; name?: string },
    status = 200,
  ) => {
    const csrf = randomToken();
    setCookie(c, LOGIN_COOKIE, csrf, {
      httpOnly: true,
      sameSite: "Strict",
      secure: cookie.secure ?? new URL(c.req.url).protocol === "https:",
      path: "/console/login",
      maxAge: 3600,
    });
    return c.html(renderPage(<LoginPage {...p} csrf={csrf} />), status as 200);
  };

  r.get("/login", async (c) => {
    const s = options.sql ? await loadSession(c, options.sql) : undefined;
    if (s) return c.redirect(safeNext(c.req.query("next")), 303);
    return loginPage(c, { next: c.req.query("next") });
  });

  r.post("/login", async (c) => {
    const sql = needSql();
    const form = await c.req.parseBody();
    const expected = getCookie(c, LOGIN_COOKIE);
    if (!expected || typeof form._csrf !== "string" || !timingSafeEqual(form._csrf, expected)) {
      return loginPage(c, { error: "The login form expired: log in again" }, 403);
    }
    const parsed = LoginForm.safeParse(form);
    if (!parsed.success) return loginPage(c, { error: "Enter a name and a password" }, 400);
    const { name, password, next } = parsed.data;
    const result = await checkLogin(sql, name, password, clientOf(c));
    if (!result.ok) {
      const limited = result.reason === "rate_limited";
      await recordAudit(sql, {
        admin: name,
        via: "login",
        action: "login refused",
        status: limited ? 429 : 401,
        requestId: c.get("requestId"),
      });
      return loginPage(c, {
        name,
        next,
        error: limited
          ? "Too many failed logins: wait a few minutes and try again"
          : "Wrong name or password",
      }, limited ? 429 : 401);
    }
    const token = await createSession(sql, result.adminId, c.req.header("user-agent"));
    setSessionCookie(c, token, cookie);
    deleteCookie(c, LOGIN_COOKIE, { path: "/console/login" });
    await recordAudit(sql, {
      admin: name,
      via: "login",
      action: "login",
      status: 303,
      requestId: c.get("requestId"),
    });
    return c.redirect(safeNext(next), 303);
  });

  r.post("/logout", async (c) => {
    const sql = needSql();
    const s = await loadSession(c, sql);
    if (s) {
      await checkCsrf(c, s);
      await deleteSession(sql, s);
      await recordAudit(sql, {
        admin: s.admin,
        via: "session",
        action: "logout",
        status: 303,
        requestId: c.get("requestId"),
      });
    }
    clearSessionCookie(c, cookie);
    return c.redirect("/console/login", 303);
  });

  const pages = new Hono<AppEnv>();
  pages.use(consoleSession(cookie));
  for (const p of CONSOLE_PAGES) p.routes(pages, kit);
  r.route("/", pages);
  return r;
}
