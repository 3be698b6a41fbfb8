/**
 * The replicate worker's settings: a JSON file (`REPLICATE_CONFIG`, keys named like the variables
 * below) overlaid by the environment, validated with zod. Credentials (source and target URLs, S3 keys)
 * may come from either; they are never logged.
 */
import { z } from "zod";
import { boolVar, loadConfig, urlVar } from "../../shared/config.ts";
import { WharfError } from "../../shared/errors.ts";

const Name = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, "must be lower case letters, digits and _");

/** The settings schema (keys are environment variable names). */
export const ReplicateConfig = z.object({
  DATABASE_URL: urlVar(["postgres:", "postgresql:"]),
  REPLICATE_PIPELINE: Name.default("main"),
  REPLICATE_SOURCE_URL: urlVar(["postgres:", "postgresql:"]).optional(),
  REPLICATE_SLOT: Name.optional(),
  REPLICATE_PUBLICATION: Name.optional(),
  REPLICATE_TARGET: z.enum(["postgres", "redshift"]).default("postgres"),
  REPLICATE_TARGET_URL: urlVar(["postgres:", "postgresql:", "redshift:"]),
  REPLICATE_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "must be an S3 bucket name"),
  REPLICATE_BATCH_ROWS: z.coerce.number().int().min(1).max(10_000_000).default(50_000),
  REPLICATE_BATCH_MS: z.coerce.number().int().min(10).max(600_000).default(250),
  REPLICATE_FILE_FORMAT: z.enum(["csv", "binary"]).default("csv"),
  REPLICATE_SPOOL_DIR: z.string().optional(),
  REPLICATE_SPOOL_MEMORY_MB: z.coerce.number().int().min(0).max(65_536).default(64),
  REPLICATE_WAL_WARN_BYTES: z.coerce.number().int().min(0).default(1024 ** 3),
  REDSHIFT_IAM_ROLE: z.string().optional(),
  S3_ENDPOINT: z.string().optional(),
  S3_REGION: z.string().default("us-east-1"),
  S3_ACCESS_KEY_ID: z.string().optional(),
  S3_SECRET_ACCESS_KEY: z.string().optional(),
  S3_FORCE_PATH_STYLE: boolVar.default(false),
}).superRefine((c, ctx) => {
  if (c.REPLICATE_FILE_FORMAT === "binary" && c.REPLICATE_TARGET !== "postgres") {
    ctx.addIssue({
      code: "custom",
      path: ["REPLICATE_FILE_FORMAT"],
      message: "binary batch files are for a Postgres target: Redshift's COPY reads CSV only",
    });
  }
});

/** Parsed settings. */
export type ReplicateSettings = z.infer<typeof ReplicateConfig>;

/** Reads the JSON file named by `REPLICATE_CONFIG` (if any) and overlays `env` on it. */
export function replicateEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const path = env.REPLICATE_CONFIG;
  if (!path) return env;
  let file: unknown;
  try {
    file = JSON.parse(Deno.readTextFileSync(path));
  } catch (e) {
    throw new WharfError(400, "Cannot read the replicate config file: it must be a JSON object", {
      cause: e,
    });
  }
  if (!file || typeof file !== "object" || Array.isArray(file)) {
    throw new WharfError(400, "Cannot read the replicate config file: it must be a JSON object");
  }
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(file)) if (v !== null && v !== undefined) out[k] = String(v);
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") out[k] = v;
  return out;
}

/** Loads and validates the settings from file + env. */
export function loadReplicateConfig(env: Record<string, string | undefined>): ReplicateSettings {
  return loadConfig(ReplicateConfig, replicateEnv(env));
}
