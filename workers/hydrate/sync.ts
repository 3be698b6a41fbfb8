/**
 * Full sync, incremental apply and purge: the three ways hydrate writes Redis.
 *
 * Full sync of a mapping (generation G):
 * 1. Rows stream from Postgres through a SQL cursor (DECLARE / FETCH) inside one REPEATABLE READ, READ
 *    ONLY transaction (one snapshot, memory bounded by the batch size whatever the table size).
 * 2. Each row's value is written to a staged key `<prefix><mapping>:stage:G:<key>`, and each batch's keys
 *    are appended to the generation's key list, with pipelining (several batches in flight).
 * 3. The flip: a script deletes every key the mapping owned before (the previous generation's list, the
 *    keys incremental changes wrote since, loads that never finished) that has no staged copy (its row
 *    is gone), renames every staged key over its live key, then publishes G. When the mapping has at most
 *    `atomicFlipKeys` keys this is one script, so a reader sees the whole mapping switch at once; above
 *    that it runs in chunks, each atomic, and every key still switches whole and is never missing.
 * The first load of a mapping (it owns no keys yet) writes live keys directly: there is no previous
 * generation a reader could mix with, and it saves a rename per key.
 *
 * Incremental apply writes the live keys of a batch of recorded changes in one MULTI/EXEC. The worker
 * never runs it while a full sync is in progress; changes recorded meanwhile are applied after the flip,
 * and since each change carries the whole row image, replaying one already covered by the snapshot
 * writes the same value again.
 */
import type { ChainableCommander } from "ioredis";
import type { Sql } from "../../shared/db.ts";
import { WharfError } from "../../shared/errors.ts";
import { type Mapping, sourceColumns } from "./mapping.ts";
import { fullSyncGroupQuery, nextChangesQuery } from "./projection.ts";
import { controlKeys, globEscape, type HydrateRedis } from "./redis.ts";

/** What a sync needs. */
export interface SyncDeps {
  sql: Sql;
  redis: HydrateRedis;
  /** Prefix of hydrate's own keys (key lists, meta, staging), default `wharf:hydrate:`. */
  controlPrefix: string;
  /** Rows per cursor fetch and per Redis pipeline. */
  batchRows: number;
  /** Largest mapping whose flip is one atomic script. */
  atomicFlipKeys: number;
  /** Aborts a full sync between batches. */
  signal?: AbortSignal;
}

/** What a full sync did. */
export interface FullSyncResult {
  generation: number;
  rows: number;
  keysWritten: number;
  keysRemoved: number;
  durationMs: number;
  atomic: boolean;
}

/** Thrown when Redis reconnected during a full sync: what was staged may be gone, so the sync restarts. */
export class RedisReconnectedError extends Error {
  constructor() {
    super("Cannot finish the full sync as Redis reconnected during it");
    this.name = "RedisReconnectedError";
  }
}

const PIPELINES_IN_FLIGHT = 4;

async function hashColumnsOf(sql: Sql, m: Mapping): Promise<string[]> {
  if (m.value.shape !== "hash") return [];
  return m.value.columns ?? await sourceColumns(sql, m.source);
}

function checkEpoch(deps: SyncDeps, epoch: number) {
  if (deps.redis.epoch() !== epoch) throw new RedisReconnectedError();
}

async function execOrThrow(p: ChainableCommander): Promise<void> {
  const results = await p.exec();
  if (!results) throw new Error("Cannot write to Redis as the pipeline was discarded");
  for (const [err] of results) if (err) throw err;
}

/** Queues the writes of one key's value (and its TTL) on `p`. Returns false when there is no value. */
function queueValue(
  p: ChainableCommander,
  m: Mapping,
  target: string,
  values: (string | null)[],
  fields: string[],
  replaceHash: boolean,
): boolean {
  if (m.value.shape === "hash") {
    const args: string[] = [];
    values.forEach((v, i) => {
      if (v !== null) args.push(fields[i], v);
    });
    if (!args.length) return false;
    if (replaceHash) p.del(target);
    p.hset(target, ...args);
    if (m.ttlSeconds) p.expire(target, m.ttlSeconds);
    return true;
  }
  const v = values[0];
  if (v === null) return false;
  if (m.ttlSeconds) p.set(target, v, "EX", m.ttlSeconds);
  else p.set(target, v);
  return true;
}

/** Deletes the staged keys a sync interrupted by a crash left behind. */
async function dropStaging(deps: SyncDeps, stagePrefix: string): Promise<void> {
  const r = deps.redis.client;
  let cursor = "0";
  do {
    const [next, keys] = await r.scan(cursor, "MATCH", globEscape(stagePrefix) + "*", "COUNT", 5_000);
    if (keys.length) await r.unlink(...keys);
    cursor = next;
  } while (cursor !== "0");
}

/**
 * True when `e` means the connection itself is gone (closed socket, server shutdown), not just the
 * statement.
 */
export function isConnectionError(e: unknown): boolean {
  const code = String((e as { code?: unknown })?.code ?? "");
  if (/^CONNECT(ION)?_/.test(code) || /^E[A-Z]+$/.test(code)) return true;
  return code.startsWith("08") || (code.startsWith("57") && code !== "57014");
}

/**
 * Runs `fn` in one REPEATABLE READ, READ ONLY transaction on a reserved connection.
 *
 * A reserved connection rather than `sql.begin()`, so that a dead connection is left alone: the pool
 * has already marked it closed and reconnects on its own, while releasing it would put it back among the
 * open ones (porsager/postgres#1199). A live one is rolled back and released as usual.
 */
export async function inSnapshot<T>(sql: Sql, fn: (tx: Sql) => Promise<T>): Promise<T> {
  const c = await sql.reserve();
  let dead = false;
  try {
    await c.unsafe("begin isolation level repeatable read read only");
    const result = await fn(c as unknown as Sql);
    await c.unsafe("commit");
    return result;
  } catch (e) {
    dead = isConnectionError(e);
    if (!dead) await c.unsafe("rollback").catch((r) => (dead = isConnectionError(r)));
    throw e;
  } finally {
    if (!dead) c.release();
  }
}

/** The published generation of a mapping (0 when it was never loaded into this Redis). */
export async function publishedGeneration(deps: SyncDeps, mapping: string): Promise<number> {
  const g = await deps.redis.client.hget(controlKeys(deps.controlPrefix, mapping).meta, "generation");
  return g ? Number(g) : 0;
}

/** Runs a full sync of `m`. See the module comment for the steps and the guarantees. */
export async function fullSync(deps: SyncDeps, m: Mapping): Promise<FullSyncResult> {
  return (await fullSyncGroup(deps, [m]))[0];
}

/** Per-mapping state of a group sync. */
interface Target {
  m: Mapping;
  ck: ReturnType<typeof controlKeys>;
  gen: number;
  genText: string;
  /** The list this generation's keys are appended to. */
  list: string;
  direct: boolean;
  /** What the mapping owned before this sync, as flip sources (`L:` list, `S:` set, `H:` hash). */
  old: string[];
  stagePrefix: string;
  hashFields: string[];
  /** Index of the key column in a result row; the values follow it. */
  offset: number;
  width: number;
  plainStrings: boolean;
  rows: number;
  keysWritten: number;
}

/**
 * Reads what a mapping owns before a new sync of it and records the sync as started: drops the staged
 * keys of a sync that never finished (its key list stays, as keys it renamed may be live), and chooses
 * between a direct first load (the mapping owns nothing) and a staged one.
 */
async function startGeneration(deps: SyncDeps, m: Mapping) {
  const r = deps.redis.client;
  const ck = controlKeys(deps.controlPrefix, m.name);
  const meta = await r.hgetall(ck.meta);
  if (meta.staging) await dropStaging(deps, ck.stage(meta.staging));
  // Loads that started and never published: their keys may be live, so they stay owned until a flip.
  // Only those that wrote keys are kept: an attempt that failed before its first batch leaves nothing.
  const candidates = [...new Set([...(meta.pending ?? "").split(" "), meta.staging, meta.loading])]
    .filter((g): g is string => Boolean(g));
  const pending: string[] = [];
  for (const g of candidates) if (await r.exists(ck.keys(g))) pending.push(g);
  const old: string[] = [];
  if (meta.generation) old.push("L:" + ck.keys(meta.generation), "S:" + ck.changed(meta.generation));
  for (const g of pending) old.push("L:" + ck.keys(g));
  if (await r.exists(ck.legacyRegistry)) old.push("H:" + ck.legacyRegistry);
  // A generation is a timestamp (never below any earlier one + 1), so that the key list of a crashed
  // attempt never passes for the next attempt's.
  const gen = [meta.generation, ...candidates].reduce((a, g) => Math.max(a, Number(g ?? 0) + 1), Date.now());
  const genText = String(gen);
  const direct = old.length === 0;
  const list = ck.keys(genText);
  const tx = r.multi().unlink(list).hset(ck.meta, direct ? "loading" : "staging", genText)
    .hdel(ck.meta, direct ? "staging" : "loading");
  if (pending.length) tx.hset(ck.meta, "pending", pending.join(" "));
  else tx.hdel(ck.meta, "pending");
  await execOrThrow(tx);
  return { ck, gen, genText, list, direct, old, stagePrefix: direct ? "" : ck.stage(genText) };
}

/**
 * Full sync of several mappings that read the same table, in one scan of it (merflow's default mapping
 * is two mappings over `users`). Each mapping keeps its own generation, key lists and flip; the results
 * come back in the order of `ms`. A failure fails the whole group (each mapping is then retried).
 */
export async function fullSyncGroup(deps: SyncDeps, ms: Mapping[]): Promise<FullSyncResult[]> {
  const t0 = performance.now();
  const r = deps.redis.client;
  const epoch = deps.redis.epoch();
  const targets: Target[] = [];
  let offset = 0;
  for (const m of ms) {
    const hashFields = await hashColumnsOf(deps.sql, m);
    const width = m.value.shape === "hash" ? hashFields.length : 1;
    targets.push({
      m,
      ...(await startGeneration(deps, m)),
      hashFields,
      offset,
      width,
      plainStrings: m.value.shape !== "hash" && !m.ttlSeconds,
      rows: 0,
      keysWritten: 0,
    });
    offset += 1 + width;
  }
  const q = fullSyncGroupQuery(ms, targets.map((t) => t.hashFields));

  await inSnapshot(deps.sql, async (tx) => {
    // A SQL cursor read with FETCH rather than postgres.js's `.cursor()`: when the connection drops
    // while a `.cursor()` callback is busy, postgres.js writes its next Execute to a closed socket from a
    // timer and the process dies of an uncaught TypeError. FETCH is a plain query that fails properly.
    // The next FETCH is sent while the current batch goes to Redis, so both sides stay busy.
    await tx.unsafe(`declare wharf_hydrate no scroll cursor for ${q.text}`, q.params as never[]);
    const fetchBatch = () =>
      tx.unsafe(`fetch ${deps.batchRows} from wharf_hydrate`).values() as unknown as Promise<
        (string | null)[][]
      >;
    const inflight: Promise<void>[] = [];
    let next = fetchBatch();
    for (;;) {
      const batch = await next;
      if (!batch.length) break;
      next = fetchBatch();
      next.catch(() => {}); // awaited at the top of the loop
      if (deps.signal?.aborted) {
        throw new WharfError(503, "Cannot finish the full sync as the worker is stopping");
      }
      checkEpoch(deps, epoch);
      const p = r.pipeline();
      for (const t of targets) {
        const keys: string[] = [];
        const mset: string[] = [];
        const { offset: o, stagePrefix } = t;
        for (const row of batch) {
          const key = row[o];
          if (key === null) continue;
          if (t.plainStrings) {
            const v = row[o + 1];
            if (v === null) continue;
            mset.push(stagePrefix + key, v);
          } else if (
            !queueValue(p, t.m, stagePrefix + key, row.slice(o + 1, o + 1 + t.width), t.hashFields, t.direct)
          ) continue;
          keys.push(key);
        }
        t.keysWritten += keys.length;
        t.rows += batch.length;
        if (mset.length) p.mset(...mset);
        if (keys.length) p.rpush(t.list, ...keys);
      }
      const sent = execOrThrow(p);
      // Handled here so that a failure while an older batch is awaited is not an unhandled rejection;
      // awaiting `sent` below still throws it.
      sent.catch(() => {});
      inflight.push(sent);
      if (inflight.length >= PIPELINES_IN_FLIGHT) await inflight.shift();
    }
    await Promise.all(inflight);
  });
  checkEpoch(deps, epoch);

  // The flips.
  const results: FullSyncResult[] = [];
  for (const t of targets) {
    let keysRemoved = 0;
    let atomic = true;
    checkEpoch(deps, epoch);
    if (t.direct) {
      await execOrThrow(r.multi().hset(t.ck.meta, "generation", t.genText).hdel(t.ck.meta, "loading"));
    } else {
      const sizes = await Promise.all(
        [...t.old, "L:" + t.list].map((src) => {
          const name = src.slice(2);
          return src[0] === "L" ? r.llen(name) : src[0] === "S" ? r.scard(name) : r.hlen(name);
        }),
      );
      atomic = sizes.reduce((a, b) => a + b, 0) <= deps.atomicFlipKeys;
      let phase = 1;
      let cursor = "0";
      do {
        const [next, at, removed] = await r.hydrateFlip(
          t.stagePrefix,
          t.genText,
          t.ck.meta,
          t.list,
          phase,
          cursor,
          5_000,
          atomic ? "1" : "0",
          ...t.old,
        );
        keysRemoved += removed;
        phase = next;
        cursor = at;
        if (phase !== 0) checkEpoch(deps, epoch);
      } while (phase !== 0);
    }
    checkEpoch(deps, epoch);
    results.push({
      generation: t.gen,
      rows: t.rows,
      keysWritten: t.keysWritten,
      keysRemoved,
      durationMs: performance.now() - t0,
      atomic,
    });
  }
  return results;
}

/** The key that groups mappings reading the same table (a query mapping is alone in its group). */
export function sourceGroupKey(m: Mapping): string {
  return "table" in m.source ? `table:${m.source.schema}.${m.source.table}` : `query:${m.name}`;
}

/** A recorded change, as the worker reads it. */
export interface ChangeRef {
  id: string;
  table_schema: string;
  table_name: string;
  op: string;
  lag_ms: number;
}

/** What applying a batch of changes did, per mapping. */
export interface ApplyResult {
  applied: Map<string, number>;
  keysWritten: number;
  keysRemoved: number;
  /** Mappings whose table was truncated: they need a full sync. */
  truncated: Set<string>;
}

/** Hash fields of mappings, kept as long as the mapping object (mappings are reloaded about once a second). */
const hashFieldsCache = new WeakMap<Mapping, Promise<string[]>>();

function cachedHashColumns(sql: Sql, m: Mapping): Promise<string[]> {
  let f = hashFieldsCache.get(m);
  if (!f) {
    f = hashColumnsOf(sql, m);
    f.catch(() => hashFieldsCache.delete(m));
    hashFieldsCache.set(m, f);
  }
  return f;
}

/**
 * Reads the next `limit` recorded changes and applies them to every loaded table mapping of their
 * tables, in one MULTI/EXEC; one statement reads the changes with every mapping's projection of them
 * and deletes the changes of `done` (the previous batch, already in Redis). `generations` gives each
 * mapping's published generation, whose set of changed keys records the keys written here. The changes
 * read are returned, in id order; the caller deletes them (passing them as the next `done`).
 */
export async function applyNextChanges(
  deps: SyncDeps,
  mappings: Mapping[],
  generations: Map<string, number>,
  done: string[],
  limit: number,
): Promise<{ refs: ChangeRef[]; result: ApplyResult }> {
  const result: ApplyResult = { applied: new Map(), keysWritten: 0, keysRemoved: 0, truncated: new Set() };
  // Mappings not loaded yet are left out: their first full sync includes these rows.
  const live = mappings.filter((m) => "table" in m.source && m.enabled && generations.get(m.name));
  const fields = await Promise.all(live.map((m) => cachedHashColumns(deps.sql, m)));
  const q = nextChangesQuery(live, fields, done, limit);
  const rows = await deps.sql.unsafe(q.text, q.params as never[]).values() as unknown as (string | null)[][];
  const refs: ChangeRef[] = rows.map((r) => ({
    id: r[0]!,
    table_schema: r[1]!,
    table_name: r[2]!,
    op: r[3]!,
    lag_ms: Number(r[4]),
  }));
  const offsets: number[] = [];
  let at = 5;
  for (const [i, m] of live.entries()) {
    offsets.push(at);
    at += 2 + (m.value.shape === "hash" ? fields[i].length : 1);
  }
  const multi = deps.redis.client.multi();
  let queued = 0;
  for (const [r, c] of refs.entries()) {
    const row = rows[r];
    if (c.op === "truncate") {
      for (const m of mappings) {
        if ("table" in m.source && m.source.schema === c.table_schema && m.source.table === c.table_name) {
          result.truncated.add(m.name);
        }
      }
      continue;
    }
    // In change order across mappings and tables, so that the last image of a key wins.
    for (const [i, m] of live.entries()) {
      const src = m.source as { schema: string; table: string };
      if (src.schema !== c.table_schema || src.table !== c.table_name) continue;
      const o = offsets[i];
      const width = m.value.shape === "hash" ? fields[i].length : 1;
      const oldKey = row[o];
      const newKey = row[o + 1];
      const values = row.slice(o + 2, o + 2 + width);
      const changed = controlKeys(deps.controlPrefix, m.name).changed(String(generations.get(m.name)));
      result.applied.set(m.name, (result.applied.get(m.name) ?? 0) + 1);
      queued++;
      if (oldKey !== null && oldKey !== newKey) {
        multi.del(oldKey);
        multi.srem(changed, oldKey);
        result.keysRemoved++;
      }
      if (newKey === null) continue;
      if (queueValue(multi, m, newKey, values, fields[i], true)) {
        multi.sadd(changed, newKey);
        result.keysWritten++;
      } else {
        multi.del(newKey);
        multi.srem(changed, newKey);
        result.keysRemoved++;
      }
    }
  }
  if (queued) await execOrThrow(multi);
  return { refs, result };
}

/** Removes every key a mapping owns, the records of what it owns, and its meta (the mapping was deleted). */
export async function purgeMapping(deps: SyncDeps, mapping: string): Promise<number> {
  const r = deps.redis.client;
  const ck = controlKeys(deps.controlPrefix, mapping);
  const meta = await r.hgetall(ck.meta);
  if (meta.staging) await dropStaging(deps, ck.stage(meta.staging));
  const gens = [meta.generation, meta.staging, meta.loading, ...(meta.pending ?? "").split(" ")]
    .filter((g): g is string => Boolean(g));
  const records = [...gens.map(ck.keys), ...gens.map(ck.changed), ck.legacyRegistry];
  let removed = 0;
  const unlink = async (keys: string[]) => {
    if (keys.length) removed += await r.unlink(...keys);
  };
  for (const g of gens) {
    const list = ck.keys(g);
    for (let at = 0;; at += 5_000) {
      const keys = await r.lrange(list, at, at + 4_999);
      await unlink(keys);
      if (keys.length < 5_000) break;
    }
    let cursor = "0";
    do {
      const [next, keys] = await r.sscan(ck.changed(g), cursor, "COUNT", 5_000);
      await unlink(keys);
      cursor = next;
    } while (cursor !== "0");
  }
  let cursor = "0";
  do {
    const [next, entries] = await r.hscan(ck.legacyRegistry, cursor, "COUNT", 5_000);
    await unlink(entries.filter((_, i) => i % 2 === 0));
    cursor = next;
  } while (cursor !== "0");
  await r.unlink(...records, ck.meta);
  return removed;
}
