/**
 * Settings of the image feed (web API and imgproc), from clean names or the `.env` names the image-feed
 * backend used before (`POSTGRESS_HOST`, `JWT_SECRET`, `AWS_MEDIA_BUCKET`, `AWS_SQS_QUEUE`…), so an
 * existing deployment's environment keeps working. A clean name wins when both are set.
 */
import { z } from "zod";
import { boolVar, loadConfig, urlVar } from "../../shared/config.ts";

/** Old name → clean name. */
export const FEED_ENV_ALIASES: Record<string, string> = {
  JWT_SECRET: "FEED_JWT_SECRET",
  AWS_MEDIA_BUCKET: "FEED_MEDIA_BUCKET",
  AWS_THUMBNAILS_BUCKET: "FEED_THUMBNAILS_BUCKET",
  AWS_THUMBNAILS_BASE_URL: "FEED_THUMBNAILS_BASE_URL",
  AWS_SQS_QUEUE: "IMGPROC_SQS_QUEUE",
  AWS_REGION: "S3_REGION",
  AWS_ACCESS_KEY_ID: "S3_ACCESS_KEY_ID",
  AWS_SECRET_ACCESS_KEY: "S3_SECRET_ACCESS_KEY",
};

/**
 * Maps the old names onto the clean ones and builds `DATABASE_URL` from `POSTGRESS_*` when it is not set
 * (user and password URL-encoded, so any character works).
 */
export function normalizeFeedEnv(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") out[k] = v;
  for (const [old, clean] of Object.entries(FEED_ENV_ALIASES)) {
    if (out[old] && !out[clean]) out[clean] = out[old];
  }
  if (!out.DATABASE_URL && out.POSTGRESS_HOST) {
    const user = encodeURIComponent(out.POSTGRESS_USERNAME ?? "postgres");
    const pass = out.POSTGRESS_PASSWORD ? ":" + encodeURIComponent(out.POSTGRESS_PASSWORD) : "";
    const port = out.POSTGRESS_PORT ? ":" + out.POSTGRESS_PORT : "";
    const db = encodeURIComponent(out.POSTGRESS_DATABASE ?? "postgres");
    out.DATABASE_URL = `postgres://${user}${pass}@${out.POSTGRESS_HOST}${port}/${db}`;
  }
  return out;
}

const bucketVar = z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "must be an S3 bucket name");

/** The S3 settings both the web API and imgproc use. */
export const S3Config = z.object({
  S3_ENDPOINT: urlVar(["http:", "https:"]).optional(),
  S3_REGION: z.string().default("us-east-1"),
  S3_ACCESS_KEY_ID: z.string().optional(),
  S3_SECRET_ACCESS_KEY: z.string().optional(),
  S3_FORCE_PATH_STYLE: boolVar.optional(),
  FEED_MEDIA_BUCKET: bucketVar.default("wharf-media"),
  FEED_THUMBNAILS_BUCKET: bucketVar.default("wharf-thumbnails"),
  /** When the thumbnails bucket is public (a CDN), thumbnails redirect here instead of to a signed URL. */
  FEED_THUMBNAILS_BASE_URL: urlVar(["http:", "https:"]).optional(),
});

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
  /** Redis key prefix (rate limits). */
  FEED_REDIS_PREFIX: z.string().default("wharf:feed:"),
});
/** Parsed {@linkcode FeedConfig}. */
export type FeedSettings = z.infer<typeof FeedConfig>;
/** Parsed {@linkcode S3Config}. */
export type S3Settings = z.infer<typeof S3Config>;

/** Loads the web API's settings from `env` (old names accepted). */
export function loadFeedConfig(env: Record<string, string | undefined>): FeedSettings {
  return loadConfig(FeedConfig, normalizeFeedEnv(env));
}

/** True when `env` holds what the feed API needs to start (a JWT secret and a database). */
export function feedConfigured(env: Record<string, string | undefined>): boolean {
  const n = normalizeFeedEnv(env);
  return Boolean(n.FEED_JWT_SECRET && n.DATABASE_URL && n.REDIS_URL);
}
