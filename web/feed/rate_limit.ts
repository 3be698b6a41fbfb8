/**
 * A fixed-window counter in Redis, for login attempts: `INCR` then `EXPIRE` on the first hit, in one
 * MULTI so a crash between them cannot leave a counter that never expires. Shared by every web copy.
 */
import type { Redis } from "ioredis";
import { WharfError } from "../../shared/errors.ts";

/** Options for {@linkcode hitRateLimit}. */
export interface RateLimitOptions {
  redis: Redis;
  /** Full key (prefix included). */
  key: string;
  max: number;
  windowS: number;
}

/** Counts one attempt; throws 429 with `retry_after_s` when the window's budget is spent. */
export async function hitRateLimit(o: RateLimitOptions): Promise<void> {
  const res = await o.redis.multi().incr(o.key).expire(o.key, o.windowS, "NX").ttl(o.key).exec();
  if (!res) throw new WharfError(503, "Cannot check the rate limit: Redis refused the transaction");
  const count = Number(res[0][1]);
  const ttl = Number(res[2][1]);
  if (count > o.max) {
    throw new WharfError(429, "Too many login attempts; try again later", {
      code: "rate_limited",
      details: { retry_after_s: ttl > 0 ? ttl : o.windowS },
    });
  }
}

/** Forgets the attempts under `key` (after a successful login). */
export async function clearRateLimit(redis: Redis, key: string): Promise<void> {
  await redis.del(key);
}
