/**
 * The settings imgproc shares with the web API (S3 and the buckets), and the mapping of the `.env` names
 * of the image-feed backend onto wharf's clean names. Kept apart from the web API's own settings so a
 * process that only needs S3 does not read the rest.
 */
import { z } from "zod";
import { boolVar, urlVar } from "../../shared/config.ts";

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

/** Parsed {@linkcode S3Config}. */
export type S3Settings = z.infer<typeof S3Config>;
