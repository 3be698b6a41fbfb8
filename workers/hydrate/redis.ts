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
    registry: string,
    stagePrefix: string,
    gen: string,
    meta: string,
    cursor: string,
    count: number,
    all: "0" | "1",
  ): Promise<[string, number]>;
}

/** A hydrate Redis connection. */
export interface HydrateRedis {
  client: Redis & HydrateCommands;
  /** Number of times the connection became ready (1 after the first connect). */
  epoch(): number;
  close(): Promise<void>;
}

/**
 * Moves a generation into place, walking the mapping's registry with HSCAN inside the script: a key
 * registered with this generation gets its staged value renamed over the live one (a staged key is
 * whole, so a hash is replaced whole); a key registered with an older generation belongs to a row that
 * is gone, so it and its registry entry are deleted. With `all` = 1 the whole registry is walked in one
 * call, so the switch is atomic for readers (a script runs alone); otherwise one HSCAN step per call,
 * and the caller passes the returned cursor back. When the walk ends, the generation is published in
 * the same call. An empty stage prefix means the values were written in place (a first load), so there
 * is nothing to rename. Returns `{ next cursor, keys removed }`.
 */
export const FLIP_LUA = `
local reg, stage, gen, meta = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local cursor, count, all = ARGV[5], ARGV[6], ARGV[7] == '1'
local removed = 0
repeat
  local res = redis.call('HSCAN', reg, cursor, 'COUNT', count)
  cursor = res[1]
  local e = res[2]
  for i = 1, #e, 2 do
    local k, g = e[i], tonumber(e[i + 1])
    if g == gen then
      if stage ~= '' and redis.call('EXISTS', stage .. k) == 1 then
        redis.call('RENAME', stage .. k, k)
      end
    elseif g < gen then
      redis.call('DEL', k)
      redis.call('HDEL', reg, k)
      removed = removed + 1
    end
  end
until cursor == '0' or not all
if cursor == '0' then
  redis.call('HSET', meta, 'generation', ARGV[3])
  redis.call('HDEL', meta, 'staging')
end
return {cursor, removed}
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
  let lastErrorLog = 0;
  client.on("ready", () => {
    epoch++;
    if (epoch > 1) log.warn("redis reconnected", { epoch });
  });
  client.on("error", (e: Error) => {
    if (Date.now() - lastErrorLog > 5_000) {
      lastErrorLog = Date.now();
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

/** The names of hydrate's own keys for one mapping, under the control prefix. */
export function controlKeys(prefix: string, mapping: string) {
  const base = `${prefix}${mapping}:`;
  return {
    /** Hash: key → generation that last wrote it. Tells which keys a mapping owns. */
    registry: base + "registry",
    /** Hash: `generation` (published), `staging` (a generation being loaded). */
    meta: base + "meta",
    /** Prefix of the staged keys of generation `gen`. */
    stage: (gen: string) => `${base}stage:${gen}:`,
  };
}

/** Escapes glob characters so that `text` matches itself in a SCAN MATCH pattern. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => "\\" + c);
}
