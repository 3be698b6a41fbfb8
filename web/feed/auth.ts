/**
 * Passwords, access tokens and refresh tokens of the image feed.
 *
 * - Passwords: argon2id at OWASP's minimum (19 MiB, t=2, p=1); the hash string carries salt and
 *   parameters, so raising them later keeps old hashes verifiable.
 * - Access tokens: HS256 JWTs signed with `jose`, the algorithm pinned on verify (so `alg: none` and
 *   RS/HS confusion are refused), `iss`/`aud`/`exp` checked, short lived.
 * - Refresh tokens: 32 random bytes, stored as SHA-256 digests, rotated on every use; a used token seen
 *   again revokes its whole family (it was copied).
 */
import { type Algorithm, hash, verify } from "@node-rs/argon2";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import type { Context, Next } from "hono";
import type { Sql } from "../../shared/db.ts";
import { WharfError } from "../../shared/errors.ts";

/** OWASP's minimum argon2id parameters (memory in KiB). */
export const ARGON2_OPTIONS = {
  // Algorithm.Argon2id: the package declares it as a const enum, which isolated modules cannot read.
  algorithm: 2 as Algorithm,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const;

/** Hashes a password with argon2id. */
export function hashPassword(password: string): Promise<string> {
  return hash(password, ARGON2_OPTIONS);
}

let dummyHash: Promise<string> | undefined;

/**
 * Verifies `password` against `stored`; with no stored hash (unknown user) it still spends one argon2
 * verification, so response time does not tell which usernames exist.
 */
export async function verifyPassword(stored: string | undefined, password: string): Promise<boolean> {
  if (!stored) {
    dummyHash ??= hashPassword(crypto.randomUUID());
    await verify(await dummyHash, password).catch(() => false);
    return false;
  }
  try {
    return await verify(stored, password);
  } catch {
    return false;
  }
}

/** What signs and checks access tokens. */
export interface TokenSettings {
  secret: string;
  issuer: string;
  audience: string;
  accessTtlS: number;
  refreshTtlS: number;
}

const ALG = "HS256";

function key(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

/** Signs an access token for user `userId`. */
export async function signAccessToken(t: TokenSettings, userId: string, username: string): Promise<string> {
  return await new SignJWT({ username })
    .setProtectedHeader({ alg: ALG, typ: "JWT" })
    .setSubject(userId)
    .setIssuer(t.issuer)
    .setAudience(t.audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + t.accessTtlS)
    .setJti(crypto.randomUUID())
    .sign(key(t.secret));
}

/** Verifies an access token; every failure is the same 401 (the reason goes nowhere the caller sees). */
export async function verifyAccessToken(t: TokenSettings, token: string): Promise<{ userId: string }> {
  try {
    const { payload } = await jwtVerify(token, key(t.secret), {
      algorithms: [ALG],
      issuer: t.issuer,
      audience: t.audience,
      requiredClaims: ["exp", "sub", "iat"],
    });
    if (!payload.sub || !/^\d{1,19}$/.test(payload.sub)) throw new Error("bad subject");
    return { userId: payload.sub };
  } catch (e) {
    const expired = e instanceof joseErrors.JWTExpired;
    throw new WharfError(401, expired ? "Access token expired" : "Invalid access token", {
      code: expired ? "token_expired" : "invalid_token",
    });
  }
}

function toBase64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function digest(token: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
}

/** Issues a new refresh token in `family` (a new family at login) and stores its digest. */
export async function issueRefreshToken(
  sql: Sql,
  t: TokenSettings,
  userId: string,
  family: string = crypto.randomUUID(),
): Promise<string> {
  const token = toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
  await sql`
    insert into app.refresh_tokens (token_hash, user_id, family, expires_at)
    values (${await digest(token)}, ${userId}, ${family}, now() + make_interval(secs => ${t.refreshTtlS}))`;
  return token;
}

/**
 * Uses a refresh token up and returns the user and family for the next one. A token used before revokes
 * its family; unknown, expired, revoked tokens and disabled users get 401.
 */
export async function rotateRefreshToken(
  sql: Sql,
  token: string,
): Promise<{ userId: string; family: string }> {
  const h = await digest(token);
  const fail = () => new WharfError(401, "Invalid refresh token", { code: "invalid_token" });
  return await sql.begin(async (tx) => {
    // The row lock makes two concurrent uses of one token a reuse: the second sees used_at set.
    const [row] = await tx`
      select r.user_id::text as user_id, r.family::text as family, r.used_at, r.revoked_at,
             r.expires_at < now() as expired, u.disabled_at
        from app.refresh_tokens r join app.users u on u.id = r.user_id
       where r.token_hash = ${h}
         for update of r`;
    if (!row) throw fail();
    if (row.used_at && !row.revoked_at) {
      await tx`update app.refresh_tokens set revoked_at = now()
                where family = ${row.family as string} and revoked_at is null`;
      return null;
    }
    if (row.revoked_at || row.expired || row.disabled_at) throw fail();
    await tx`update app.refresh_tokens set used_at = now() where token_hash = ${h}`;
    return { userId: row.user_id as string, family: row.family as string };
  }).then((r) => {
    if (!r) throw fail();
    return r;
  });
}

/** Revokes every refresh token of `userId` (logout everywhere). */
export async function revokeUserTokens(sql: Sql, userId: string): Promise<number> {
  const r = await sql`update app.refresh_tokens set revoked_at = now()
                       where user_id = ${userId} and revoked_at is null`;
  return r.count;
}

/** Variables the auth middleware sets. */
export type AuthVars = { userId: string };

/**
 * Requires `Authorization: Bearer <access token>` from a user who is not disabled; sets `userId`.
 */
export function requireUser(options: { sql: Sql; tokens: TokenSettings }) {
  return async function requireUserMiddleware(c: Context, next: Next) {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
    if (!m) throw new WharfError(401, "Authentication required", { code: "unauthorized" });
    const { userId } = await verifyAccessToken(options.tokens, m[1]);
    const [u] = await options.sql`select disabled_at from app.users where id = ${userId}`;
    if (!u || u.disabled_at) throw new WharfError(401, "Invalid access token", { code: "invalid_token" });
    c.set("userId", userId);
    await next();
  };
}
