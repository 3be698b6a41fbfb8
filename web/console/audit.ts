/**
 * The audit log: who changed what, when, and through which door (console session, API token, login
 * form). Every non-GET request to the admin API is recorded, with its status, so refused changes show
 * too.
 */
import type { Context, Next } from "hono";
import type { Sql } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";

/** One audit entry. */
export interface AuditEntry {
  admin: string;
  via: "session" | "token" | "login";
  action: string;
  target?: string;
  status?: number;
  details?: Record<string, unknown>;
  requestId?: string;
}

const SECRET_KEY = /pass(word)?|secret|token|authorization|cookie|key$/i;
const MAX_STRING = 20_000;

/** Copies a request body for the log: secrets replaced, long strings cut. */
export function redactDetails(value: unknown, depth = 0): unknown {
  if (depth > 6) return "…";
  if (typeof value === "string") {
    return value.length > MAX_STRING ? value.slice(0, MAX_STRING) + `… (${value.length} chars)` : value;
  }
  if (Array.isArray(value)) return value.slice(0, 100).map((v) => redactDetails(v, depth + 1));
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY.test(k) ? "[redacted]" : redactDetails(v, depth + 1);
    }
    return out;
  }
  return value;
}

/** Writes one entry. */
export async function recordAudit(sql: Sql, e: AuditEntry): Promise<void> {
  await sql`
    insert into control.console_audit (admin, via, action, target, status, details, request_id)
    values (${e.admin}, ${e.via}, ${e.action}, ${e.target ?? null}, ${e.status ?? null},
            ${sql.json((e.details ?? {}) as Parameters<Sql["json"]>[0])}, ${e.requestId ?? null})`;
}

const log = createLogger("audit");

/**
 * Middleware for the admin API (after authentication): records every change request with the admin,
 * the route, the path, the status and the (redacted) JSON body. A failure to write the record is logged
 * and does not change the response, which has already been decided.
 */
export function auditChanges(options: { sql?: Sql }) {
  return async function auditChangesMiddleware(c: Context, next: Next) {
    const method = c.req.method;
    if (method === "GET" || method === "HEAD" || method === "OPTIONS" || !options.sql) return await next();
    let body: unknown;
    if ((c.req.header("content-type") ?? "").includes("json")) {
      try {
        body = await c.req.json();
      } catch {
        body = undefined;
      }
    }
    let failed: unknown;
    try {
      await next();
    } catch (e) {
      failed = e;
      throw e;
    } finally {
      const status = failed
        ? (typeof (failed as { status?: unknown }).status === "number"
          ? (failed as { status: number }).status
          : (failed instanceof Error && failed.name === "ZodError" ? 400 : 500))
        : c.res.status;
      await recordAudit(options.sql, {
        admin: c.get("admin") ?? "unknown",
        via: c.get("via") ?? "token",
        action: `${method} ${c.req.routePath}`,
        target: c.req.path,
        status,
        details: body === undefined ? {} : { body: redactDetails(body) },
        requestId: c.get("requestId"),
      }).catch((e) => log.error("cannot write audit record", { error: e }));
    }
  };
}
