/**
 * `/api/users`: register, log in (rate-limited per client and name in Redis), refresh (rotating), log
 * out, and `me`.
 */
import { Hono } from "hono";
import { WharfError } from "../../../shared/errors.ts";
import {
  hashPassword,
  issueRefreshToken,
  requireUser,
  revokeUserTokens,
  rotateRefreshToken,
  signAccessToken,
  verifyPassword,
} from "../../feed/auth.ts";
import { type FeedDeps, tokenSettings } from "../../feed/deps.ts";
import { clearRateLimit, hitRateLimit } from "../../feed/rate_limit.ts";
import { LoginBody, RefreshBody, RegisterBody } from "../../feed/schemas.ts";
import { clientAddress, jsonBody } from "../../feed/http.ts";

type Env = { Variables: { userId: string; requestId: string } };

function showUser(r: Record<string, unknown>) {
  return {
    id: String(r.id),
    email: r.email as string,
    username: r.username as string,
    created_at: (r.created_at as Date).toISOString(),
  };
}

/** The users routes, mounted at `/api/users`. */
export function usersRoutes(deps: FeedDeps): Hono<Env> {
  const { sql, redis, cfg } = deps;
  const tokens = tokenSettings(cfg);
  const app = new Hono<Env>();

  const issue = async (userId: string, username: string, family?: string) => ({
    access_token: await signAccessToken(tokens, userId, username),
    refresh_token: await issueRefreshToken(sql, tokens, userId, family),
    token_type: "Bearer" as const,
    expires_in: tokens.accessTtlS,
  });

  app.post("/", async (c) => {
    const body = RegisterBody.parse(await jsonBody(c));
    // Each registration costs an argon2 hash (19 MiB, tens of ms): limited per client like logins.
    await hitRateLimit({
      redis,
      key: `${cfg.FEED_REDIS_PREFIX}register:${clientAddress(c, cfg.FEED_TRUST_PROXY)}`,
      max: cfg.FEED_LOGIN_MAX_ATTEMPTS,
      windowS: cfg.FEED_LOGIN_WINDOW_S,
    });
    const hashed = await hashPassword(body.password);
    const rows = await sql`
      insert into app.users (email, username, password)
      values (${body.email}, ${body.username}, ${hashed})
      on conflict do nothing
      returning id, email, username, created_at`;
    if (!rows.length) {
      throw new WharfError(409, "Cannot register: the email or username is taken", { code: "user_exists" });
    }
    return c.json(showUser(rows[0]), 201);
  });

  app.post("/login", async (c) => {
    const body = LoginBody.parse(await jsonBody(c));
    const who = (body.username ?? body.email ?? "").toLowerCase();
    const peer = clientAddress(c, cfg.FEED_TRUST_PROXY);
    const limitKey = `${cfg.FEED_REDIS_PREFIX}login:${peer}:${who}`;
    const windowS = cfg.FEED_LOGIN_WINDOW_S;
    // Per name (guessing one password) and, ten times looser, per client (trying many names).
    await hitRateLimit({ redis, key: limitKey, max: cfg.FEED_LOGIN_MAX_ATTEMPTS, windowS });
    await hitRateLimit({
      redis,
      key: `${cfg.FEED_REDIS_PREFIX}login-client:${peer}`,
      max: cfg.FEED_LOGIN_MAX_ATTEMPTS * 10,
      windowS,
    });
    const [u] = body.username
      ? await sql`select id, username, password, disabled_at from app.users where username = ${body.username}`
      : await sql`select id, username, password, disabled_at from app.users where email = ${who}`;
    const ok = await verifyPassword(u?.password as string | undefined, body.password);
    if (!ok || u.disabled_at) {
      throw new WharfError(401, "Invalid credentials", { code: "invalid_credentials" });
    }
    await clearRateLimit(redis, limitKey);
    return c.json(await issue(String(u.id), u.username as string));
  });

  app.post("/refresh", async (c) => {
    const body = RefreshBody.parse(await jsonBody(c));
    const { userId, family } = await rotateRefreshToken(sql, body.refresh_token);
    const [u] = await sql`select username from app.users where id = ${userId}`;
    return c.json(await issue(userId, u.username as string, family));
  });

  app.use("/me", requireUser({ sql, tokens }));
  app.use("/logout", requireUser({ sql, tokens }));
  app.get("/me", async (c) => {
    const [u] = await sql`select id, email, username, created_at from app.users where id = ${
      c.get("userId")
    }`;
    return c.json(showUser(u));
  });
  app.post("/logout", async (c) => {
    const revoked = await revokeUserTokens(sql, c.get("userId"));
    return c.json({ revoked });
  });
  return app;
}
