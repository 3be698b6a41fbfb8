/**
 * The dispatch worker process: resolves its settings (env > args > file > default), connects, and runs a
 * node. Run several copies; one becomes master through the lease.
 *
 * Extra env: `DISPATCH_CONCURRENCY` (default 4), `DISPATCH_PREFETCH` (events claimed ahead, default the
 * concurrency), `DISPATCH_LEASE_MS` (default 5000), `DISPATCH_POLL_MS`
 * (default 1000), `DISPATCH_TRUSTED_KEYS` (base64 raw Ed25519 public keys, comma separated: when set,
 * only code signed by one of them runs), `DISPATCH_READONLY_URL` (a follower for `db.readonly`),
 * `DISPATCH_HISTORY_HOURS` (how long finished events stay in the history, default 168 = 7 days, 0 = for
 * ever).
 */
import { z } from "zod";
import { processEnv } from "../../shared/config.ts";
import { connectPostgres } from "../../shared/db.ts";
import { runWorkerMain } from "../../shared/worker.ts";
import { resolveSettings } from "./config.ts";
import { type NodeStatus, runNode } from "./node.ts";
import { importTrustedKeys } from "./sign.ts";

/** The env-only settings (the rest come from {@linkcode resolveSettings}). */
export const DispatchConfig = z.object({
  DISPATCH_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(4),
  DISPATCH_PREFETCH: z.coerce.number().int().min(1).max(10_000).optional(),
  DISPATCH_LEASE_MS: z.coerce.number().int().min(200).max(600_000).default(5_000),
  DISPATCH_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(1_000),
  DISPATCH_TRUSTED_KEYS: z.string().optional(),
  DISPATCH_READONLY_URL: z.string().optional(),
  DISPATCH_HISTORY_HOURS: z.coerce.number().min(0).max(87_600).default(168),
});

if (import.meta.main) {
  const settings = resolveSettings(processEnv(), Deno.args);
  if (!Deno.env.get("OPS_PORT")) {
    const i = settings.bind.lastIndexOf(":");
    Deno.env.set("OPS_HOST", settings.bind.slice(0, i) || "0.0.0.0");
    Deno.env.set("OPS_PORT", settings.bind.slice(i + 1));
  }
  await runWorkerMain({
    name: "dispatch",
    config: DispatchConfig,
    async run(ctx, cfg) {
      ctx.log.info("settings resolved", { sources: settings.sources, schema: settings.schema });
      const sql = connectPostgres(settings.url, { max: 4, applicationName: "wharf-dispatch" });
      const functionSql = connectPostgres(settings.url, {
        max: cfg.DISPATCH_CONCURRENCY,
        applicationName: "wharf-dispatch-fn",
      });
      const readonlySql = cfg.DISPATCH_READONLY_URL
        ? connectPostgres(cfg.DISPATCH_READONLY_URL, { max: cfg.DISPATCH_CONCURRENCY })
        : undefined;
      const status: NodeStatus = { master: false, running: 0, done: 0, failed: 0 };
      try {
        const trustedKeys = await importTrustedKeys((cfg.DISPATCH_TRUSTED_KEYS ?? "").split(","));
        ctx.reportTo(sql, () => ({ ...status }));
        ctx.ready();
        await runNode(
          {
            sql,
            functionSql,
            readonlySql,
            schema: settings.schema,
            nodeId: ctx.instanceId,
            bind: settings.bind,
            log: ctx.log,
            leaseMs: cfg.DISPATCH_LEASE_MS,
            concurrency: cfg.DISPATCH_CONCURRENCY,
            prefetch: cfg.DISPATCH_PREFETCH,
            pollMs: cfg.DISPATCH_POLL_MS,
            historyHours: cfg.DISPATCH_HISTORY_HOURS,
            trustedKeys,
          },
          ctx.signal,
          status,
        );
      } finally {
        await Promise.allSettled([
          sql.end({ timeout: 5 }),
          functionSql.end({ timeout: 5 }),
          readonlySql?.end(),
        ]);
      }
    },
  });
}
