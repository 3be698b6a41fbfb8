/**
 * The discovery worker process: one member of a self-configuring PostgreSQL cluster. It discovers the
 * members (Flux API, an HTTP JSON list, a static list or DNS), writes etcd's and Patroni's configuration,
 * starts and supervises etcd and Patroni, keeps etcd's membership in line with the source, and writes the
 * cluster's members and history to wharf's control tables when `DATABASE_URL` is set.
 *
 * Settings: see {@linkcode DiscoveryConfig} (the Flux image's variables keep their names and defaults).
 */
import { connectPostgres } from "../../shared/db.ts";
import { abortableSleep, backoffMs, runWorkerMain, type WorkerContext } from "../../shared/worker.ts";
import { DiscoveryConfig, type DiscoverySettings } from "./config.ts";
import { DiscoveryNode } from "./node.ts";
import { type DiscoverySource, sourceFromSettings } from "./sources.ts";

/**
 * This node's address: `NODE_IP`, or the first listed address that belongs to a local interface (the
 * Flux image asked the same API for its own IP).
 */
export async function findSelf(
  settings: DiscoverySettings,
  source: DiscoverySource,
  signal?: AbortSignal,
): Promise<string> {
  if (settings.NODE_IP) return settings.NODE_IP;
  const local = new Set(Deno.networkInterfaces().map((i) => i.address.toLowerCase()));
  let listed: string[] | undefined;
  for (let attempt = 0; !listed; attempt++) {
    try {
      listed = await source.discover(signal);
    } catch (e) {
      if (signal?.aborted) throw e;
      await abortableSleep(backoffMs(attempt, 500, 10_000), signal);
    }
  }
  const mine = listed.find((a) => local.has(a));
  if (!mine) {
    throw new Error("Cannot tell which listed member is this node: set NODE_IP to its address as listed");
  }
  return mine;
}

/** Runs the worker in `ctx` until it is asked to stop. */
export async function runDiscovery(ctx: WorkerContext, settings: DiscoverySettings): Promise<void> {
  const source = sourceFromSettings(settings);
  const self = await findSelf(settings, source, ctx.signal);
  const sql = settings.DATABASE_URL
    ? connectPostgres(settings.DATABASE_URL, { max: 2, applicationName: "wharf-discovery" })
    : undefined;
  const node = new DiscoveryNode({ settings, source, self, log: ctx.log.child({ member: self }), sql });
  try {
    if (sql) ctx.reportTo(sql, () => ({ member: node.name, scope: node.scope, ...node.status }));
    ctx.log.info("discovery source", { kind: source.kind, scope: node.scope, member: node.name });
    const m = {
      members: ctx.metrics.gauge("wharf_discovery_etcd_members", "etcd members at the last updater pass"),
      leader: ctx.metrics.gauge(
        "wharf_discovery_is_leader",
        "1 while this member's PostgreSQL is the primary",
      ),
      badReads: ctx.metrics.gauge(
        "wharf_discovery_bad_reads",
        "Discovery reads refused (HTTP error, bad JSON, empty)",
      ),
      removals: ctx.metrics.gauge("wharf_discovery_removals", "Members this worker removed from etcd"),
      restarts: ctx.metrics.gauge(
        "wharf_discovery_restarts",
        "Restarts of etcd or Patroni by the supervisor",
      ),
    };
    await node.start();
    ctx.ready();
    while (await ctx.sleep(1_000)) {
      const st = node.status;
      ctx.setHealth(st.phase === "running", { role: st.role });
      m.members.set(st.members);
      m.leader.set(st.role === "leader" ? 1 : 0);
      m.badReads.set(st.badReads);
      m.removals.set(st.removals);
      m.restarts.set(st.restarts);
    }
  } finally {
    await node.stop();
    await sql?.end({ timeout: 5 });
  }
}

if (import.meta.main) {
  await runWorkerMain({
    name: "discovery",
    config: DiscoveryConfig,
    drainTimeoutMs: 45_000,
    run: runDiscovery,
  });
}
