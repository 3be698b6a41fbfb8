/**
 * `deno task bench:feed`: `wrk` on `GET /api/feeds?limit=20` (10,000 feeds in Postgres, the full web app:
 * request ids, metrics, keyset query with the owner's name, JSON) against a bare Hono route on the same
 * server returning a constant JSON body of the same size, in the same run. Ratio: feed requests per second
 * ÷ bare requests per second. The list is served through the page cache (dropped on any feed change, see
 * web/feed/page_cache.ts), as in production; a third row runs the same API with the cache off.
 *
 * `BENCH_FEEDS` (10000), `BENCH_SECONDS` (5 per run), `BENCH_ROUNDS` (3, interleaved; medians reported),
 * `BENCH_CONNECTIONS` (32), `BENCH_THREADS` (2).
 */
import { CreateBucketCommand } from "@aws-sdk/client-s3";
import { join } from "node:path";
import { Hono } from "hono";
import { connectPostgres } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { run } from "../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS } from "../shared/stack/s3.ts";
import { startServices } from "../shared/stack/services.ts";
import { createApp } from "../web/app.tsx";
import { loadFeedConfig } from "../web/feed/config.ts";
import { createFeedDeps } from "../web/feed/deps.ts";
import { report, type Row } from "./_util.ts";

const FEEDS = Number(Deno.env.get("BENCH_FEEDS") ?? 10_000);
const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? 5);
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? 3);
const CONNECTIONS = Number(Deno.env.get("BENCH_CONNECTIONS") ?? 32);
const THREADS = Number(Deno.env.get("BENCH_THREADS") ?? 2);
const log = createLogger("bench-feed", { level: "error" });

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/** Runs wrk with a latency report and reads requests/s and latency percentiles (ms). */
async function wrk(url: string): Promise<WrkResult> {
  const { stdout } = await run("wrk", [
    `-t${THREADS}`,
    `-c${CONNECTIONS}`,
    `-d${SECONDS}s`,
    "--latency",
    url,
  ]);
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}\\s+([\\d.]+)(us|ms|s)`).exec(stdout);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
  };
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps, p50: ms("50%"), p99: ms("99%"), errors };
}

const dir = await Deno.makeTempDir({ prefix: "wharf-bench-feed-" });
const services = await startServices({
  dir,
  pgUser: "wharf",
  pgPassword: crypto.randomUUID(),
  ephemeral: true,
  buckets: ["bench-media", "bench-thumbs"],
});
let server: Deno.HttpServer<Deno.NetAddr> | undefined;
try {
  const url = services.postgres.url;
  const sql = connectPostgres(url, { max: 10, applicationName: "wharf-bench" });
  await migrate(sql);
  const cfg = loadFeedConfig({
    DATABASE_URL: url,
    REDIS_URL: services.redis.url,
    JWT_SECRET: crypto.randomUUID() + crypto.randomUUID(),
    S3_ENDPOINT: services.s3.endpoint,
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    FEED_MEDIA_BUCKET: "bench-media",
    FEED_THUMBNAILS_BUCKET: "bench-thumbs",
  });
  const deps = createFeedDeps(cfg, log, sql);
  await deps.s3.send(new CreateBucketCommand({ Bucket: "bench-media" })).catch(() => {});
  const users = await sql`insert into app.users (email, username, password)
    select 'u' || g || '@bench.io', 'user' || g, 'x' from generate_series(1, 50) g returning id`;
  await sql`
    insert into app.feeds (user_id, caption, media_key, content_type, size_bytes, thumbnail_status, thumbnail_key)
    select ${users[0].id}::bigint + (g % 50), 'Caption number ' || g || ' of the benchmark feed',
           'u/' || (g % 50) || '/' || md5(g::text) || '.jpg', 'image/jpeg', 100000 + g,
           case when g % 10 = 0 then 'pending' else 'ready' end,
           case when g % 10 = 0 then null else 'u/' || (g % 50) || '/' || md5(g::text) || '.jpg.thumb.jpg' end
      from generate_series(1, ${FEEDS}) g`;
  await sql`analyze app.feeds`;
  await sql`analyze app.users`;

  const app = createApp({ sql, log, feed: deps });
  const sampleRes = await app.request("/api/feeds?limit=20");
  const sample = await sampleRes.text();
  if (sampleRes.status !== 200 || JSON.parse(sample).items.length !== 20) {
    throw new Error("Cannot bench: the feed page is not 20 items");
  }
  // The peer: a bare Hono route on the same server returning a constant body of the same size. The
  // web app is mounted beside it, so both are served by one Deno.serve in one process.
  const bare = new TextEncoder().encode(sample);
  const root = new Hono();
  root.get("/bench/bare", (c) => c.body(bare, 200, { "content-type": "application/json" }));
  root.route("/", app);
  // The same API with the page cache off, to show what a page costs when it has to come from Postgres.
  const uncached = createApp({ sql, log, feed: { ...deps, cfg: { ...cfg, FEED_PAGE_CACHE_MS: 0 } } });
  root.route("/nocache", uncached);
  server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, root.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  const feedUrl = `${base}/api/feeds?limit=20`;
  const bareUrl = `${base}/bench/bare`;
  if ((await (await fetch(bareUrl)).text()).length !== sample.length) {
    throw new Error("Cannot bench: sizes differ");
  }

  // Warm both paths (JIT, the connection pool) before timing.
  for (let i = 0; i < 200; i++) {
    await (await fetch(feedUrl)).arrayBuffer();
    await (await fetch(bareUrl)).arrayBuffer();
  }
  const noCacheUrl = `${base}/nocache/api/feeds?limit=20`;
  for (let i = 0; i < 200; i++) await (await fetch(noCacheUrl)).arrayBuffer();
  // Interleaved rounds, median of each: the machine is shared, and a burst of outside load then hits
  // every contestant alike instead of one of them.
  const runs: { ours: WrkResult[]; peer: WrkResult[]; cold: WrkResult[] } = { ours: [], peer: [], cold: [] };
  for (let r = 0; r < ROUNDS; r++) {
    runs.ours.push(await wrk(feedUrl));
    runs.peer.push(await wrk(bareUrl));
    runs.cold.push(await wrk(noCacheUrl));
  }
  const median = (xs: WrkResult[]) => [...xs].sort((a, b) => a.rps - b.rps)[Math.floor(xs.length / 2)];
  const ours = median(runs.ours), peer = median(runs.peer), cold = median(runs.cold);
  const rows: Row[] = [
    {
      route: "GET /api/feeds?limit=20",
      "req/s": ours.rps,
      "p50 ms": ours.p50,
      "p99 ms": ours.p99,
      errors: ours.errors,
    },
    {
      route: "bare Hono constant JSON",
      "req/s": peer.rps,
      "p50 ms": peer.p50,
      "p99 ms": peer.p99,
      errors: peer.errors,
    },
    {
      route: "GET /api/feeds, page cache off",
      "req/s": cold.rps,
      "p50 ms": cold.p50,
      "p99 ms": cold.p99,
      errors: cold.errors,
    },
  ];
  report("feed", rows, {
    ratio: Number((ours.rps / peer.rps).toFixed(3)),
    feed_rps: Math.round(ours.rps),
    bare_rps: Math.round(peer.rps),
    feed_p99_ms: ours.p99,
    uncached_rps: Math.round(cold.rps),
    uncached_ratio: Number((cold.rps / peer.rps).toFixed(3)),
    body_bytes: sample.length,
    feeds: FEEDS,
    connections: CONNECTIONS,
    seconds: SECONDS,
    rounds: ROUNDS,
  });
  await server.shutdown();
  server = undefined;
  await deps[Symbol.asyncDispose]();
  await sql.end({ timeout: 5 });
} finally {
  await server?.shutdown();
  await services.stop();
  await Deno.remove(join(dir), { recursive: true }).catch(() => {});
}
