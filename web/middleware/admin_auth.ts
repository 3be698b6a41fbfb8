import type { Context, Next } from "hono";
import { WharfError } from "../../shared/errors.ts";

/** Options for {@linkcode adminAuth}. */
export interface AdminAuthOptions {
  /** The bearer token API clients present (`WHARF_ADMIN_TOKEN`); undefined refuses every token. */
  token?: string;
  /**
   * Other ways to authenticate (the console's session cookie): returns the admin's name, or undefined.
   * Tried before the bearer token. It may throw (a missing CSRF token is a 403, not a fall back to the
   * bearer check).
   */
  session?: (c: Context) => Promise<string | undefined> | string | undefined;
}

/** Compares two strings in time that depends only on their lengths. */
export function timingSafeEqual(a: string, b: string): boolean {
  const ea = new TextEncoder().encode(a), eb = new TextEncoder().encode(b);
  let diff = ea.length ^ eb.length;
  for (let i = 0; i < Math.max(ea.length, eb.length); i++) diff |= (ea[i] ?? 0) ^ (eb[i] ?? 0);
  return diff === 0;
}

/**
 * Guards `/api/admin/*`: a request passes with a console session or with `Authorization: Bearer <token>`;
 * otherwise 401. The admin's name is on `c.get("admin")` for audit records.
 */
export function adminAuth(options: AdminAuthOptions) {
  return async function adminAuthMiddleware(c: Context, next: Next) {
    const fromSession = await options.session?.(c);
    if (fromSession) {
      c.set("admin", fromSession);
      c.set("via", "session");
      return await next();
    }
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m || !options.token || !timingSafeEqual(m[1], options.token)) {
      throw new WharfError(401, "Admin authentication required", { code: "unauthorized" });
    }
    c.set("admin", "api-token");
    c.set("via", "token");
    await next();
  };
}
