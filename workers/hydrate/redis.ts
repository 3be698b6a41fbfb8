/**
 * The Redis side of hydrate: the connection (plain or TLS), the names of hydrate's own keys, and the
 * scripts that flip a generation atomically.
 *
 * The connection fails fast instead of queueing: with the offline queue off and no automatic resend, a
 * command issued while Redis is away rejects at once, the caller backs off, and nothing is replayed
 * half-way into a Redis that restarted empty. Every (re)connection bumps {@linkcode HydrateRedis.epoch};
 * a full sync that sees the epoch move starts over, and the worker re-syncs every mapping after a
 * reconnection, because a restarted Redis may have lost everything.
 */
import { Redis, type RedisOptions } from "ioredis";
import type { Logger } from "../../shared/log.ts";
import { WharfError } from "../../shared/errors.ts";

/** TLS material for `rediss://` (PEM file paths). */
export interface RedisTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** The scripts hydrate registers on its connection. */
export interface HydrateCommands {
  /** See {@linkcode FLIP_LUA}. */
  hydrateFlip(
    stagePrefix: string,
    gen: string,
    meta: string,
    newList: string,
    phase: number,
    cursor: string,
    count: number,
    all: "0" | "1",
    ...oldSources: string[]
  ): Promise<[number, string, number]>;
}

/** A hydrate Redis connection. */
export interface HydrateRedis {
  client: Redis & HydrateCommands;
  /** Number of times the connection became ready (1 after the first connect). */
  epoch(): number;
  close(): Promise<void>;
}

/**
 * Moves a staged generation into place. Which keys a mapping owns is recorded per generation (see
 * {@linkcode controlKeys}): the list of the keys a full sync wrote, the set of keys incremental changes
 * wrote since, and the list of a first load that never finished. The flip walks them in phases:
 *
 * 1. one phase per old source (`L:<list>`, `S:<set>`, or `H:<hash>` for the registry of older versions):
 *    a key whose staged copy does not exist belongs to a row that is gone (or has no value now), so it
 *    is deleted;
 * 2. the new generation's list: each staged key is renamed over its live key (a staged key is whole, so
 *    a hash is replaced whole, and its TTL goes with it);
 * 3. the generation is published and the old sources are deleted.
 *
 * With `all` = 1 everything happens in one call, so the switch is atomic for readers (a script runs
 * alone); otherwise each call does at most `count` entries and the caller passes the returned phase and
 * cursor back, and every key still switches whole and is never missing. Returns
 * `{ next phase (0 when done), next cursor, keys removed }`.
 */
export const FLIP_LUA = `
local stage, gen, meta, newList = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- The cursor is a list index, or a SCAN cursor kept as a string (it can exceed a Lua number's precision).
local phase, cursor, count, all = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local sources = {}
for i = 9, #ARGV do sources[#sources + 1] = ARGV[i] end
local removed = 0
local function drop(k)
  if redis.call('EXISTS', stage .. k) == 0 then removed = removed + redis.call('DEL', k) end
end
local budget = count
while phase > 0 and (all or budget > 0) do
  local n = all and 5000 or budget
  if phase <= #sources then
    local kind, name = string.sub(sources[phase], 1, 1), string.sub(sources[phase], 3)
    local done
    if kind == 'L' then
      local at = tonumber(cursor)
      local e = redis.call('LRANGE', name, at, at + n - 1)
      for i = 1, #e do drop(e[i]) end
      cursor = tostring(at + #e)
      done = #e < n
      budget = budget - #e
    else
      local res = redis.call(kind == 'S' and 'SSCAN' or 'HSCAN', name, cursor, 'COUNT', n)
      local e = res[2]
      local step = kind == 'S' and 1 or 2
      for i = 1, #e, step do drop(e[i]) end
      cursor = res[1]
      done = cursor == '0'
      budget = budget - math.max(1, #e / step)
    end
    if done then phase, cursor = phase + 1, '0' end
  elseif phase == #sources + 1 then
    local at = tonumber(cursor)
    local e = redis.call('LRANGE', newList, at, at + n - 1)
    -- A key listed twice (two rows with one key) was renamed the first time: the error is expected.
    for i = 1, #e do redis.pcall('RENAME', stage .. e[i], e[i]) end
    cursor = tostring(at + #e)
    budget = budget - #e
    if #e < n then phase, cursor = phase + 1, '0' end
  else
    redis.call('HSET', meta, 'generation', gen)
    redis.call('HDEL', meta, 'staging', 'loading', 'pending')
    for i = 1, #sources do redis.call('DEL', string.sub(sources[i], 3)) end
    phase = 0
  end
end
return {phase, cursor, removed}
`;

/** Opens a connection; `rediss://` URLs use TLS with the given CA, client certificate and key. */
export function connectRedis(url: string, tls: RedisTlsFiles, log: Logger): HydrateRedis {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new WharfError(400, "Cannot connect to Redis: REDIS_URL is not a valid URL");
  }
  const read = (path: string | undefined, what: string) => {
    if (!path) return undefined;
    try {
      return Deno.readTextFileSync(path);
    } catch (e) {
      throw new WharfError(400, `Cannot read the Redis ${what} file: ${(e as Error).message}`);
    }
  };
  const options: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5_000),
  };
  if (parsed.protocol === "rediss:") {
    options.tls = {
      ca: read(tls.caFile, "CA"),
      cert: read(tls.certFile, "client certificate"),
      key: read(tls.keyFile, "client key"),
      servername: parsed.hostname,
    };
  }
  const client = new Redis(url, options) as Redis & HydrateCommands;
  client.defineCommand("hydrateFlip", { numberOfKeys: 0, lua: FLIP_LUA });
  let epoch = 0;
  let lastErrorLog = -Infinity;
  client.on("ready", () => {
    epoch++;
    if (epoch > 1) log.warn("redis reconnected", { epoch });
  });
  client.on("error", (e: Error) => {
    if (performance.now() - lastErrorLog > 5_000) {
      lastErrorLog = performance.now();
      log.warn("redis connection error", { error: e.message });
    }
  });
  // The first connect may fail (Redis not up yet); ioredis keeps retrying in the background.
  client.connect().catch(() => {});
  return {
    client,
    epoch: () => epoch,
    async close() {
      client.disconnect();
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

/**
 * The names of hydrate's own keys for one mapping, under the control prefix.
 *
 * Which keys a mapping owns is recorded per generation, cheaply: a full sync appends each batch's keys
 * to one list (one RPUSH per batch, not one hash field per key), and incremental changes add the keys
 * they write to a set. A key recorded there whose row is gone is found by the next flip (its staged copy
 * does not exist) and deleted; a key an incremental change deleted may stay listed until then, which
 * costs nothing.
 */
export function controlKeys(prefix: string, mapping: string) {
  const base = `${prefix}${mapping}:`;
  return {
    /**
     * Hash: `generation` (published), `staging` (a staged generation being loaded), `loading` (a first
     * load being written in place; if it never finished, its keys are live and owned).
     */
    meta: base + "meta",
    /** List: the keys the full sync of generation `gen` wrote. */
    keys: (gen: string) => `${base}keys:${gen}`,
    /** Set: the keys incremental changes wrote while `gen` was published. */
    changed: (gen: string) => `${base}changed:${gen}`,
    /** Hash key → generation: how older versions recorded the keys a mapping owns (read, then removed). */
    legacyRegistry: base + "registry",
    /** Prefix of the staged keys of generation `gen`. */
    stage: (gen: string) => `${base}stage:${gen}:`,
  };
}

/** Escapes glob characters so that `text` matches itself in a SCAN MATCH pattern. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => "\\" + c);
}
