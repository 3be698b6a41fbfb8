/**
 * Builds the web process's Hono app: request ids, JSON errors, health and metrics, static files, and the
 * console's pages. Kept free of listening and signals so tests drive it in-process with `app.request()`.
 */
import { Hono } from "hono";
import { serveStatic } from "hono/deno";
import { render } from "preact-render-to-string";
import { fileURLToPath as fromFileUrl } from "node:url";
import type { Sql } from "../shared/db.ts";
import { errorResponseBody } from "../shared/errors.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { METRICS_CONTENT_TYPE, Registry } from "../shared/metrics.ts";
import { adminAuth } from "./middleware/admin_auth.ts";
import { dispatchAdminRoutes } from "./routes/api/admin/dispatch.ts";
import { feedConfigured, loadFeedConfig } from "./feed/config.ts";
import { createFeedDeps, type FeedDeps } from "./feed/deps.ts";
import { feedApi } from "./feed/mod.ts";
import { requestId } from "./middleware/request_id.ts";
import { auditChanges } from "./console/audit.ts";
import type { ConsoleSession } from "./console/auth.ts";
import { checkCsrf, loadSession } from "./middleware/console_session.ts";
import { consoleRoutes } from "./routes/console/mod.tsx";

/** Variables every handler can read with `c.get()`. */
export type AppEnv = {
  Variables: {
    requestId: string;
    /** Who is acting: a console admin's name, or `api-token`. */
    admin: string;
    /** How the admin authenticated, for the audit log. */
    via: "session" | "token";
    /** The console session, when the request has one. */
    session?: ConsoleSession;
    sessionLoaded?: boolean;
  };
};

/** What the app is built from. */
export interface AppOptions {
  /** The database; `/healthz` reports it when given. */
  sql?: Sql;
  log?: Logger;
  metrics?: Registry;
  /** Bearer token for `/api/admin/*` API clients (`WHARF_ADMIN_TOKEN`). */
  adminToken?: string;
  /** The process environment, for parts that read their own settings. */
  env?: Record<string, string>;
  /** Version tag appended to the islands script URL so browsers fetch a new bundle after a deploy. */
  islandsVersion?: string;
  /** The image-feed API's clients; built from `env` when it holds the feed's settings. */
  feed?: FeedDeps;
}

const STATIC_ROOT = fromFileUrl(new URL("./static/", import.meta.url));

/** Renders a Preact page as a full HTML document. */
export function renderPage(page: preact.VNode): string {
  return "<!doctype html>" + render(page);
}

/** Builds the app. */
export function createApp(options: AppOptions = {}): Hono<AppEnv> {
  const log = options.log ?? createLogger("web");
  const metrics = options.metrics ?? new Registry();
  const startedAt = new Date();
  const requests = metrics.counter("wharf_http_requests_total", "HTTP requests by method, route and status");
  const duration = metrics.histogram("wharf_http_request_duration_seconds", "HTTP request duration");
  const app = new Hono<AppEnv>();

  app.use(requestId());
  app.use(async function accessMetrics(c, next) {
    const t0 = performance.now();
    await next();
    const route = c.req.routePath || "unmatched";
    requests.inc({ method: c.req.method, route, status: c.res.status });
    duration.observe((performance.now() - t0) / 1000, { route });
  });

  app.onError((err, c) => {
    const { status, body } = errorResponseBody(err, c.get("requestId"));
    if (status >= 500) {
      log.error("request failed", { request_id: c.get("requestId"), path: c.req.path, error: err });
    }
    return c.json(body, status as 500);
  });
  app.notFound((c) => {
    const { status, body } = errorResponseBody(
      Object.assign(new Error(`No route for ${c.req.method} ${c.req.path}`), { status: 404 }),
      c.get("requestId"),
    );
    return c.json(body, status as 404);
  });

  app.get("/healthz", async (c) => {
    const uptime_s = Math.round((Date.now() - startedAt.getTime()) / 1000);
    if (!options.sql) return c.json({ status: "ok", uptime_s });
    try {
      await Promise.race([
        options.sql`select 1`,
        new Promise((_, rej) => setTimeout(() => rej(new Error("database check timed out")), 2_000)),
      ]);
      return c.json({ status: "ok", uptime_s, database: "ok" });
    } catch {
      return c.json({ status: "unavailable", uptime_s, database: "unreachable" }, 503);
    }
  });
  app.get("/metrics", (c) => c.body(metrics.render(), 200, { "content-type": METRICS_CONTENT_TYPE }));

  app.use(
    "/static/*",
    serveStatic({ root: STATIC_ROOT, rewriteRequestPath: (p) => p.replace(/^\/static/, "") }),
  );

  // The admin API: every part of wharf mounts its routes here, behind one authentication check:
  //   admin.route("/hydration", hydrationAdminRoutes(options));
  const admin = new Hono<AppEnv>();
  admin.use(adminAuth({
    token: options.adminToken,
    // A console session (with its CSRF token on changes) also opens the admin API; a request that
    // carries a bearer token is an API client and is judged by the token alone.
    async session(c) {
      if (c.req.header("authorization")) return undefined;
      const s = await loadSession(c, options.sql);
      if (!s) return undefined;
      await checkCsrf(c, s);
      return s.admin;
    },
  }));
  admin.use(auditChanges({ sql: options.sql }));
  admin.route("/", dispatchAdminRoutes(options));
  admin.get("/whoami", (c) => c.json({ admin: c.get("admin") }));
  app.route("/api/admin", admin);

  const feed = options.feed ??
    (options.env && feedConfigured(options.env)
      ? createFeedDeps(loadFeedConfig(options.env), log, options.sql, { closeOnSignal: true })
      : undefined);
  if (feed) app.route("/api", feedApi(feed));

  const islandsSrc = `/static/build/islands.js?v=${options.islandsVersion ?? startedAt.getTime()}`;
  app.get("/", (c) => c.redirect("/console", 302));
  app.route("/console", consoleRoutes({ ...options, log, islandsSrc }));

  return app;
}
