/**
 * What the image-feed routes are built from: clients and settings, made once per process by
 * {@linkcode createFeedDeps} (or by a test, with its own database, Redis prefix and buckets).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { Redis } from "ioredis";
import type { Sql } from "../../shared/db.ts";
import { connectPostgres } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import type { TokenSettings } from "./auth.ts";
import type { FeedSettings } from "./config.ts";
import { createS3Client } from "./s3.ts";

/** The feed API's dependencies. */
export interface FeedDeps {
  sql: Sql;
  redis: Redis;
  s3: S3Client;
  cfg: FeedSettings;
  log: Logger;
}

/** The token settings out of the feed settings. */
export function tokenSettings(cfg: FeedSettings): TokenSettings {
  return {
    secret: cfg.FEED_JWT_SECRET,
    issuer: cfg.FEED_JWT_ISSUER,
    audience: cfg.FEED_JWT_AUDIENCE,
    accessTtlS: cfg.FEED_ACCESS_TTL_S,
    refreshTtlS: cfg.FEED_REFRESH_TTL_S,
  };
}

/**
 * Opens the clients. `sql` is reused when the web process already has a pool for the same database.
 * Redis connects lazily and retries on its own, so a Redis outage fails logins (503), not start-up.
 */
export function createFeedDeps(
  cfg: FeedSettings,
  log: Logger,
  sql?: Sql,
  options: { closeOnSignal?: boolean } = {},
): FeedDeps & AsyncDisposable {
  const ownSql = sql ? undefined : connectPostgres(cfg.DATABASE_URL, { applicationName: "wharf-feed" });
  const redis = new Redis(cfg.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  redis.on("error", (e: Error) => log.warn("redis error", { error: e.message }));
  const s3 = createS3Client(cfg);
  if (options.closeOnSignal) {
    // The web process stops on SIGTERM/SIGINT by draining its server, then lets the event loop run dry;
    // an open Redis connection would keep it alive. QUIT lets commands already sent finish first.
    const close = () => {
      redis.quit().catch(() => redis.disconnect());
      const t = setTimeout(() => s3.destroy(), 2_000);
      Deno.unrefTimer(t);
    };
    Deno.addSignalListener("SIGTERM", close);
    Deno.addSignalListener("SIGINT", close);
  }
  return {
    sql: sql ?? ownSql!,
    redis,
    s3,
    cfg,
    log,
    async [Symbol.asyncDispose]() {
      redis.disconnect();
      s3.destroy();
      await ownSql?.end({ timeout: 5 });
    },
  };
}
