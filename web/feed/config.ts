/**
 * Settings of the image feed (web API and imgproc), from clean names or the `.env` names the image-feed
 * backend used before (`POSTGRESS_HOST`, `JWT_SECRET`, `AWS_MEDIA_BUCKET`, `AWS_SQS_QUEUE`…), so an
 * existing deployment's environment keeps working. A clean name wins when both are set.
 */
import { z } from "zod";
import { boolVar, loadConfig, urlVar } from "../../shared/config.ts";
import { normalizeFeedEnv, S3Config } from "./s3_config.ts";

export { FEED_ENV_ALIASES, normalizeFeedEnv, S3Config, type S3Settings } from "./s3_config.ts";

/** The web API's settings. */
export const FeedConfig = S3Config.extend({
  DATABASE_URL: urlVar(["postgres:", "postgresql:"]),
  REDIS_URL: urlVar(["redis:", "rediss:"]),
  FEED_JWT_SECRET: z.string().min(32, "must be at least 32 characters"),
  FEED_JWT_ISSUER: z.string().default("wharf"),
  FEED_JWT_AUDIENCE: z.string().default("wharf-feed"),
  FEED_ACCESS_TTL_S: z.coerce.number().int().min(30).max(86_400).default(900),
  FEED_REFRESH_TTL_S: z.coerce.number().int().min(60).max(90 * 86_400).default(30 * 86_400),
  FEED_MAX_UPLOAD_BYTES: z.coerce.number().int().min(1024).max(100 * 1024 * 1024).default(10 * 1024 * 1024),
  FEED_LOGIN_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(10_000).default(10),
  FEED_LOGIN_WINDOW_S: z.coerce.number().int().min(1).max(86_400).default(900),
  FEED_SIGNED_URL_TTL_S: z.coerce.number().int().min(10).max(7 * 86_400).default(900),
  /** Which API parts this process serves: both by default, or one when they run as separate services. */
  FEED_SERVE: z.enum(["all", "users", "feeds"]).default("all"),
  /** How long a listed page may be served from memory (dropped at once on any change); 0 turns it off. */
  FEED_PAGE_CACHE_MS: z.coerce.number().int().min(0).max(60_000).default(5_000),
  /** Behind a proxy that appends `X-Forwarded-For` (the gateway, an Ingress): rate limits use its entry. */
  FEED_TRUST_PROXY: boolVar.default(false),
  /** Redis key prefix (rate limits). */
  FEED_REDIS_PREFIX: z.string().default("wharf:feed:"),
});
/** Parsed {@linkcode FeedConfig}. */
export type FeedSettings = z.infer<typeof FeedConfig>;

/** Loads the web API's settings from `env` (old names accepted). */
export function loadFeedConfig(env: Record<string, string | undefined>): FeedSettings {
  return loadConfig(FeedConfig, normalizeFeedEnv(env));
}

/** True when `env` holds what the feed API needs to start (a JWT secret and a database). */
export function feedConfigured(env: Record<string, string | undefined>): boolean {
  const n = normalizeFeedEnv(env);
  return Boolean(n.FEED_JWT_SECRET && n.DATABASE_URL && n.REDIS_URL);
}
