/**
 * The hydrate worker process: keeps Redis in step with Postgres (`deno task worker:hydrate`).
 *
 * The Postgres URL comes from `pcred` (merflow's name), `PCRED` or `DATABASE_URL`, in that order; TLS
 * as libpq spells it (`?sslmode=verify-full&sslrootcert=/ca.pem`). Redis from `REDIS_URL` (default
 * `redis://localhost:6379`; `rediss://` for TLS with `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE`,
 * `REDIS_TLS_KEY_FILE`).
 */
import { z } from "zod";
import { boolVar, urlVar } from "../../shared/config.ts";
import { connectPostgres } from "../../shared/db.ts";
import { runWorkerMain, type WorkerDefinition } from "../../shared/worker.ts";
import { type HydrateStatus, runHydrate } from "./hydrate.ts";
import { connectRedis } from "./redis.ts";

const pgUrl = urlVar(["postgres:", "postgresql:"]);

/** The worker's settings (keys are environment variable names). */
export const HydrateConfig = z.object({
  pcred: pgUrl.optional(),
  PCRED: pgUrl.optional(),
  DATABASE_URL: pgUrl.optional(),
  REDIS_URL: urlVar(["redis:", "rediss:"]).default("redis://localhost:6379"),
  REDIS_TLS_CA_FILE: z.string().optional(),
  REDIS_TLS_CERT_FILE: z.string().optional(),
  REDIS_TLS_KEY_FILE: z.string().optional(),
  HYDRATE_MAPPINGS_FILE: z.string().optional(),
  HYDRATE_DEFAULT_MAPPINGS: boolVar.default(true),
  HYDRATE_PERIOD_S: z.coerce.number().int().min(1).max(86_400).default(300),
  HYDRATE_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(1_000),
  HYDRATE_BATCH_ROWS: z.coerce.number().int().min(10).max(100_000).default(2_000),
  HYDRATE_CHANGE_BATCH: z.coerce.number().int().min(1).max(100_000).default(2_000),
  HYDRATE_ATOMIC_FLIP_KEYS: z.coerce.number().int().min(0).max(10_000_000).default(100_000),
  HYDRATE_REDIS_PREFIX: z.string().min(1).max(200).default("wharf:hydrate:"),
  HYDRATE_SYNC_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  HYDRATE_LEASE_MS: z.coerce.number().int().min(500).max(600_000).default(15_000),
}).refine((c) => c.pcred || c.PCRED || c.DATABASE_URL, {
  message: "one of pcred, PCRED or DATABASE_URL must be set to a postgres:// URL",
  path: ["pcred"],
});

/** The worker definition (also started in-process by tests). */
export const hydrateWorker: WorkerDefinition<typeof HydrateConfig> = {
  name: "hydrate",
  config: HydrateConfig,
  drainTimeoutMs: 15_000,
  async run(ctx, cfg) {
    const url = (cfg.pcred ?? cfg.PCRED ?? cfg.DATABASE_URL)!;
    const sql = connectPostgres(url, { max: 4, applicationName: "wharf-hydrate" });
    const redis = connectRedis(cfg.REDIS_URL, {
      caFile: cfg.REDIS_TLS_CA_FILE,
      certFile: cfg.REDIS_TLS_CERT_FILE,
      keyFile: cfg.REDIS_TLS_KEY_FILE,
    }, ctx.log);
    const status: HydrateStatus = { leader: false, mappings: 0, full_syncs: 0, changes_applied: 0 };
    try {
      ctx.reportTo(sql, () => ({ ...status }));
      ctx.ready();
      await runHydrate(
        {
          sql,
          redis,
          log: ctx.log,
          metrics: ctx.metrics,
          controlPrefix: cfg.HYDRATE_REDIS_PREFIX,
          batchRows: cfg.HYDRATE_BATCH_ROWS,
          atomicFlipKeys: cfg.HYDRATE_ATOMIC_FLIP_KEYS,
          periodSeconds: cfg.HYDRATE_PERIOD_S,
          pollMs: cfg.HYDRATE_POLL_MS,
          changeBatch: cfg.HYDRATE_CHANGE_BATCH,
          syncConcurrency: cfg.HYDRATE_SYNC_CONCURRENCY,
          mappingsFile: cfg.HYDRATE_MAPPINGS_FILE,
          defaultMappings: cfg.HYDRATE_DEFAULT_MAPPINGS,
          instanceId: ctx.instanceId,
          leaseMs: cfg.HYDRATE_LEASE_MS,
        },
        ctx.signal,
        status,
      );
    } finally {
      await redis.close();
      await sql.end({ timeout: 5 });
    }
  },
};

if (import.meta.main) await runWorkerMain(hydrateWorker);
