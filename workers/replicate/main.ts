/**
 * The replicate worker process: one pipeline from the source's publication to the warehouse, through S3.
 * Settings: see {@link ./config.ts}. Run one copy per pipeline (the slot admits one reader at a time).
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processEnv } from "../../shared/config.ts";
import { connectPostgres } from "../../shared/db.ts";
import { runWorkerMain } from "../../shared/worker.ts";
import { loadReplicateConfig, ReplicateConfig, replicateEnv } from "./config.ts";
import { type PipelineStatus, runPipeline } from "./pipeline.ts";
import { s3Client } from "./s3.ts";
import { PostgresTarget } from "./targets/postgres.ts";
import { RedshiftTarget } from "./targets/redshift.ts";
import type { Target } from "./targets/target.ts";

/** Builds the configured target. */
export function makeTarget(
  c: ReturnType<typeof loadReplicateConfig>,
  s3: ReturnType<typeof s3Client>,
): Target {
  if (c.REPLICATE_TARGET === "redshift") {
    const auth = c.REDSHIFT_IAM_ROLE
      ? { iamRole: c.REDSHIFT_IAM_ROLE }
      : { accessKeyId: c.S3_ACCESS_KEY_ID ?? "", secretAccessKey: c.S3_SECRET_ACCESS_KEY ?? "" };
    return new RedshiftTarget(c.REPLICATE_TARGET_URL.replace(/^redshift:/, "postgres:"), s3, auth);
  }
  return new PostgresTarget(c.REPLICATE_TARGET_URL, s3);
}

/** The default spool folder of a pipeline's worker process `pid`. */
export function defaultSpoolDir(pipeline: string, pid: number, dir = tmpdir()): string {
  return join(dir, `wharf-replicate-${pipeline}-${pid}`);
}

/**
 * Removes the default spool folders that workers of `pipeline` which are gone left in `dir` (a worker
 * removes its own when it stops, but not when it is killed or told twice to stop). A process is taken for
 * gone only when /proc says so; where there is no /proc nothing is removed.
 */
export async function removeStaleSpools(pipeline: string, dir = tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  try {
    Deno.statSync("/proc/self");
  } catch {
    return removed;
  }
  const prefix = `wharf-replicate-${pipeline}-`;
  for await (const e of Deno.readDir(dir)) {
    if (!e.isDirectory || !e.name.startsWith(prefix)) continue;
    const pid = e.name.slice(prefix.length);
    if (!/^\d+$/.test(pid) || Number(pid) === Deno.pid) continue;
    try {
      Deno.statSync(`/proc/${pid}`);
      continue; // still running
    } catch { /* gone */ }
    await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
    removed.push(e.name);
  }
  return removed;
}

if (import.meta.main) {
  // The file named by REPLICATE_CONFIG is merged into the environment before the worker validates it.
  const merged = replicateEnv(processEnv());
  for (const [k, v] of Object.entries(merged)) if (v !== undefined && !Deno.env.get(k)) Deno.env.set(k, v);
  await runWorkerMain({
    name: "replicate",
    config: ReplicateConfig,
    drainTimeoutMs: 20_000,
    async run(ctx, c) {
      const control = connectPostgres(c.DATABASE_URL, { max: 3, applicationName: "wharf-replicate-control" });
      const s3 = s3Client({
        endpoint: c.S3_ENDPOINT,
        region: c.S3_REGION,
        accessKeyId: c.S3_ACCESS_KEY_ID,
        secretAccessKey: c.S3_SECRET_ACCESS_KEY,
        forcePathStyle: c.S3_FORCE_PATH_STYLE,
      });
      const target = makeTarget(c, s3);
      const status: PipelineStatus = { state: "starting", batches: 0, rowsApplied: 0 };
      if (!c.REPLICATE_SPOOL_DIR) {
        const stale = await removeStaleSpools(c.REPLICATE_PIPELINE).catch(() => []);
        if (stale.length) ctx.log.info("spool folders of stopped workers removed", { folders: stale.length });
      }
      const spoolDir = c.REPLICATE_SPOOL_DIR ?? defaultSpoolDir(c.REPLICATE_PIPELINE, Deno.pid);
      try {
        ctx.reportTo(control, () => ({ pipeline: c.REPLICATE_PIPELINE, ...status }));
        ctx.ready();
        await runPipeline(
          {
            name: c.REPLICATE_PIPELINE,
            sourceUrl: c.REPLICATE_SOURCE_URL ?? c.DATABASE_URL,
            slot: c.REPLICATE_SLOT ?? `wharf_${c.REPLICATE_PIPELINE}`,
            publication: c.REPLICATE_PUBLICATION ?? `wharf_${c.REPLICATE_PIPELINE}`,
            target,
            s3,
            bucket: c.REPLICATE_BUCKET,
            spoolDir,
            spoolMemoryBytes: c.REPLICATE_SPOOL_MEMORY_MB * 1024 * 1024,
            batchRows: c.REPLICATE_BATCH_ROWS,
            batchMs: c.REPLICATE_BATCH_MS,
            format: c.REPLICATE_FILE_FORMAT,
            walWarnBytes: c.REPLICATE_WAL_WARN_BYTES,
            control,
            log: ctx.log,
            metrics: ctx.metrics,
            progress: true,
            instanceId: ctx.instanceId,
          },
          ctx.signal,
          status,
        );
      } finally {
        await Promise.allSettled([target.close(), control.end({ timeout: 5 })]);
        await Deno.remove(spoolDir, { recursive: true }).catch(() => {});
        s3.destroy();
      }
    },
  });
}
