/**
 * The hydrate loop: one leader at a time (a lease row in `control.hydrate_leader`) runs full syncs when they are due and
 * applies recorded changes as soon as a NOTIFY (or the poll) says there are some.
 *
 * States of one iteration: lead? → load mappings → purge deleted ones → full syncs due (first start,
 * period, "resync now", Redis reconnected, table truncated) → drain changes → wait for a nudge. Errors
 * never end the loop: they are logged with the mapping, written to the stats row, and the loop backs
 * off and tries again, so a Postgres or Redis restart costs a few retries and ends with an exact state
 * (the full sync after a Redis reconnection rewrites everything and removes what is gone).
 */
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import type { Registry } from "../../shared/metrics.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";
import { ensureDefaultMappings, loadMappings, loadMappingsFile, type Mapping } from "./mapping.ts";
import type { HydrateRedis } from "./redis.ts";
import {
  applyNextChanges,
  fullSyncGroup,
  publishedGeneration,
  purgeMapping,
  sourceGroupKey,
  type SyncDeps,
} from "./sync.ts";
import { HydrateMetrics, writeChangeStats, writeErrorStats, writeLagStats, writeSyncStats } from "./stats.ts";

/** Settings of {@linkcode runHydrate}. */
export interface HydrateOptions {
  sql: Sql;
  redis: HydrateRedis;
  log: Logger;
  metrics: Registry;
  controlPrefix: string;
  batchRows: number;
  atomicFlipKeys: number;
  /** Default full-sync period in seconds. */
  periodSeconds: number;
  /** Longest wait between two looks at the change table when no NOTIFY arrives. */
  pollMs: number;
  /** Full syncs of different mappings run at once. */
  syncConcurrency: number;
  /** Changes applied per Redis transaction. */
  changeBatch: number;
  /** A JSON file of mappings stored at start. */
  mappingsFile?: string;
  /** Store merflow's default mappings when none exist (default true). */
  defaultMappings: boolean;
  /** This copy's id (the lease holder). */
  instanceId: string;
  /** How long the leader lease lasts without renewal. */
  leaseMs: number;
}

/** What the worker reports to `control.worker_instances`. */
export interface HydrateStatus {
  leader: boolean;
  mappings: number;
  full_syncs: number;
  changes_applied: number;
  last_error?: string;
}

/** Runs until `signal` aborts. */
export async function runHydrate(
  o: HydrateOptions,
  signal: AbortSignal,
  status: HydrateStatus,
): Promise<void> {
  const log = o.log;
  const metrics = new HydrateMetrics(o.metrics);
  const deps: SyncDeps = {
    sql: o.sql,
    redis: o.redis,
    controlPrefix: o.controlPrefix,
    batchRows: o.batchRows,
    atomicFlipKeys: o.atomicFlipKeys,
    signal,
  };
  let wake: () => void = () => {};
  let nudged = false;
  const nudge = () => {
    nudged = true;
    wake();
  };
  const waitNudge = async (ms: number) => {
    if (nudged) {
      nudged = false;
      return;
    }
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    wake = () => controller.abort();
    await abortableSleep(ms, controller.signal);
    signal.removeEventListener("abort", onAbort);
    wake = () => {};
    nudged = false;
  };

  const lastStart = new Map<string, number>();
  const generations = new Map<string, number>();
  const needsFull = new Set<string>();
  /** The last "resync now" request each mapping's full sync answered (compared as stored, not to a clock). */
  const resyncSeen = new Map<string, number>();
  const known = new Set<string>();
  let seenEpoch = -1;
  const unflushed = new Map<string, number>();
  let lastStatsAt = -Infinity;
  let renewedAt = -Infinity;
  let mappingsAt = 0;
  /** Loads of the mappings are numbered; an older load never replaces what a newer one read. */
  let mappingsSeq = 0;
  let mappingsShown = 0;
  let mappingsLoading = false;
  const loadAll = async () => {
    const seq = ++mappingsSeq;
    const ms = await loadMappings(o.sql);
    if (seq > mappingsShown) {
      mappingsShown = seq;
      all = ms;
    }
  };
  /** The stats write in flight, if any (it runs beside the loop, not in the way of changes). */
  let statsWrite: Promise<void> | undefined;
  let all: Mapping[] = [];
  let bootstrapped = false;
  let defaultsSettled = !o.defaultMappings;
  let listener: { unlisten(): Promise<void> } | undefined;
  /** Changes written to Redis whose rows are not deleted yet (see the drain below). */
  let appliedIds: string[] = [];
  /** When Redis last answered; a round within a second of it skips the PING. */
  let redisOkAt = -Infinity;

  // The lease is renewed by a timer as well as by the loop, so that a long full sync keeps it.
  const ensureLeader = async (): Promise<boolean> => {
    const rows = await o.sql`
      update control.hydrate_leader
         set holder = ${o.instanceId}, lease_until = now() + ${o.leaseMs} * interval '1 millisecond'
       where holder = ${o.instanceId} or lease_until < now()
      returning holder`;
    const leading = rows.length > 0;
    if (leading) renewedAt = performance.now();
    if (leading && !status.leader) log.info("leading");
    if (!leading && status.leader) log.warn("lost the lease to another copy");
    return leading;
  };
  const renew = setInterval(() => {
    if (status.leader) ensureLeader().then((l) => (status.leader = l)).catch(() => {});
  }, Math.max(100, Math.floor(o.leaseMs / 3)));

  let attempt = 0;
  try {
    while (!signal.aborted) {
      let current: string | undefined;
      try {
        if (!listener) {
          listener = await o.sql.listen("wharf_hydrate", (payload) => {
            if (payload !== "change") mappingsAt = 0;
            nudge();
          });
        }
        if (!bootstrapped) {
          if (o.mappingsFile) {
            const n = await loadMappingsFile(o.sql, o.mappingsFile);
            log.info("mappings file loaded", { mappings: n });
          }
          bootstrapped = true;
        }
        // The defaults are stored once, when there is no mapping and a users table exists; until
        // then the worker looks again each round (the users table may come later).
        if (!defaultsSettled) {
          const n = await ensureDefaultMappings(o.sql);
          if (n) log.info("default mappings stored", { mappings: n });
          const [any] = await o.sql`select 1 from control.hydrate_mappings limit 1`;
          defaultsSettled = !!any;
        }
        // While leading, the timer renews the lease; the loop renews it only when the timer fell behind,
        // so that a stream of changes does not cost a lease write per round.
        if (!status.leader || performance.now() - renewedAt > o.leaseMs / 2) {
          status.leader = await ensureLeader();
        }
        if (!status.leader) {
          await waitNudge(Math.max(o.pollMs, 1_000));
          continue;
        }
        // A reconnection bumps the epoch on its own; the PING only makes a round after a quiet spell fail
        // early (before any Postgres work) when Redis is away.
        if (performance.now() - redisOkAt >= 1_000) {
          await o.redis.client.ping();
          redisOkAt = performance.now();
        }
        if (o.redis.epoch() !== seenEpoch) {
          // A (re)connection: the Redis behind it may have restarted empty, so everything is re-checked.
          if (seenEpoch !== -1) log.warn("redis connection renewed: full sync of every mapping");
          seenEpoch = o.redis.epoch();
          generations.clear();
          for (const n of known) needsFull.add(n);
        }
        // Mappings are read again when a NOTIFY says they changed ("mappings", "resync"), before this
        // round goes on; and at least once a second in the background, so that a stream of changes
        // does not wait for that read.
        if (mappingsAt === 0) {
          mappingsAt = performance.now();
          await loadAll();
        } else if (performance.now() - mappingsAt >= 1_000 && !mappingsLoading) {
          mappingsAt = performance.now();
          mappingsLoading = true;
          loadAll().catch((e) => log.debug("mappings refresh failed", { error: e })).finally(() => {
            mappingsLoading = false;
          });
        }
        const mappings = all.filter((m) => m.enabled);
        status.mappings = mappings.length;
        for (const name of [...known]) {
          if (all.some((m) => m.name === name)) continue;
          current = name;
          const n = await purgeMapping(deps, name);
          log.info("mapping deleted: keys removed", { mapping: name, keys: n });
          known.delete(name);
          generations.delete(name);
          lastStart.delete(name);
          metrics.forget(name);
        }
        for (const m of all) known.add(m.name);

        const due: Mapping[] = [];
        for (const m of mappings) {
          current = m.name;
          if (!generations.has(m.name)) {
            const g = await publishedGeneration(deps, m.name);
            if (g) generations.set(m.name, g);
          }
          if (
            isDue(m, o.periodSeconds, lastStart.get(m.name), generations.has(m.name), needsFull, resyncSeen)
          ) {
            due.push(m);
          }
        }
        current = undefined;
        // Mappings of one table share one scan; different tables (and queries) sync side by side (each
        // mapping has its own key lists, meta and staged keys). A failed group is recorded on its
        // mappings' stats rows and retried after the back-off.
        let failure: unknown;
        const groups = new Map<string, Mapping[]>();
        for (const m of due) groups.set(sourceGroupKey(m), [...(groups.get(sourceGroupKey(m)) ?? []), m]);
        const syncGroup = async (ms: Mapping[]) => {
          const started = new Date();
          for (const m of ms) {
            lastStart.set(m.name, started.getTime());
            if (m.resyncRequestedAt) resyncSeen.set(m.name, m.resyncRequestedAt.getTime());
          }
          try {
            const results = await fullSyncGroup(deps, ms);
            for (const [i, m] of ms.entries()) {
              const r = results[i];
              generations.set(m.name, r.generation);
              needsFull.delete(m.name);
              status.full_syncs++;
              metrics.fullSync(m.name, r);
              await writeSyncStats(o.sql, m.name, started, r);
              log.info("full sync done", {
                mapping: m.name,
                rows: r.rows,
                keys_written: r.keysWritten,
                keys_removed: r.keysRemoved,
                ms: Math.round(r.durationMs),
                atomic: r.atomic,
              });
            }
          } catch (e) {
            for (const m of ms) lastStart.delete(m.name);
            if (signal.aborted) return;
            for (const m of ms) {
              metrics.error(m.name);
              await writeErrorStats(o.sql, m.name, (e as Error).message ?? String(e)).catch(() => {});
            }
            log.warn("full sync failed", { mappings: ms.map((m) => m.name), error: e });
            failure ??= e;
          }
        };
        const queue = [...groups.values()];
        await Promise.all(
          Array.from({ length: Math.min(o.syncConcurrency, queue.length) }, async () => {
            for (let g = queue.shift(); g && !signal.aborted; g = queue.shift()) await syncGroup(g);
          }),
        );
        if (failure) throw failure;

        // Drain recorded changes, oldest first. The rows of the batch just applied are deleted by the same
        // statement that reads the next batch with every mapping's projection of it (one round trip to
        // Postgres and one to Redis per batch); at most one applied batch is ever left undeleted, always
        // the oldest rows, so a crash replays it before everything newer and each change carries its
        // whole row image: the final state is the same.
        while (!signal.aborted) {
          const { refs, result: r } = await applyNextChanges(
            deps,
            mappings,
            generations,
            appliedIds,
            o.changeBatch,
          );
          appliedIds = [];
          if (!refs.length) break;
          appliedIds = refs.map((x) => x.id);
          redisOkAt = performance.now();
          for (const name of r.truncated) needsFull.add(name);
          let total = 0;
          for (const [, n] of r.applied) total += n;
          status.changes_applied += total;
          metrics.changes(r, refs);
          for (const [name, n] of r.applied) unflushed.set(name, (unflushed.get(name) ?? 0) + n);
          if (r.truncated.size) break;
          if (refs.length < o.changeBatch) break;
        }
        // With another nudge waiting, the next round's read deletes them; otherwise they go now, so that an
        // idle worker leaves no applied change behind.
        if (appliedIds.length && !nudged && !needsFull.size) {
          await o.sql`delete from control.hydrate_changes where id = any(${appliedIds}::bigint[])`;
          appliedIds = [];
        }
        // Stats rows are written at most once a second, so that a busy stream of changes costs Redis
        // writes, not control-table writes; and beside the loop, so that changes do not wait for them.
        if (performance.now() - lastStatsAt >= 1_000 && !statsWrite) {
          lastStatsAt = performance.now();
          const counts = new Map(unflushed);
          unflushed.clear();
          const shown = mappings;
          statsWrite = (async () => {
            await writeChangeStats(o.sql, counts);
            metrics.lags(shown, await writeLagStats(o.sql));
          })().catch((e) => {
            // Counted again with the next write.
            for (const [name, n] of counts) unflushed.set(name, (unflushed.get(name) ?? 0) + n);
            log.debug("stats write failed", { error: e });
          }).finally(() => {
            statsWrite = undefined;
          });
        }
        attempt = 0;
        status.last_error = undefined;
        if (!needsFull.size) await waitNudge(o.pollMs);
      } catch (e) {
        if (signal.aborted) break;
        attempt++;
        const message = (e as Error).message ?? String(e);
        status.last_error = message;
        log.warn("hydrate step failed; backing off", { mapping: current, attempt, error: e });
        metrics.error(current);
        if (current) await writeErrorStats(o.sql, current, message).catch(() => {});
        await abortableSleep(backoffMs(attempt, 200, 5_000), signal);
      }
    }
  } finally {
    clearInterval(renew);
    if (appliedIds.length) {
      await o.sql`delete from control.hydrate_changes where id = any(${appliedIds}::bigint[])`.catch(
        () => {},
      );
    }
    await statsWrite;
    if (unflushed.size) await writeChangeStats(o.sql, unflushed).catch(() => {});
    await listener?.unlisten().catch(() => {});
    if (status.leader) {
      await o.sql`update control.hydrate_leader set lease_until = '-infinity' where holder = ${o.instanceId}`
        .catch(() => {});
      status.leader = false;
    }
  }
}

/** Whether a mapping needs a full sync now. */
export function isDue(
  m: Mapping,
  defaultPeriodS: number,
  lastStartMs: number | undefined,
  loaded: boolean,
  needsFull: Set<string>,
  resyncSeen: Map<string, number>,
  now = Date.now(),
): boolean {
  if (!loaded || lastStartMs === undefined || needsFull.has(m.name)) return true;
  if (m.resyncRequestedAt && m.resyncRequestedAt.getTime() > (resyncSeen.get(m.name) ?? -Infinity)) {
    return true;
  }
  return now - lastStartMs >= (m.periodSeconds ?? defaultPeriodS) * 1000;
}
