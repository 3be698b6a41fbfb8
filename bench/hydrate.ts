/**
 * `deno task bench:hydrate`: Postgres → Redis with merflow's default mapping (key `{id}` → email, key
 * `{username}` → password hash) over `BENCH_ROWS` rows (default 1,000,000).
 *
 * Full sync: the hydrate worker process (its first load into an empty Redis, then a second full sync
 * that stages a new generation and flips it) against what a careful operator scripts by hand:
 * `psql -c "\copy (select …) to stdout" | resp-gen | redis-cli --pipe`, where resp-gen is a small C
 * program compiled here (mawk when no C compiler is found) that turns each row into two SET commands.
 * Both load the same empty Redis; throughput is rows per second, start to last reply (for the worker
 * from its stats rows: first sync start to last sync end, process start-up excluded). Peak RSS is the
 * worker process's VmHWM.
 *
 * `BENCH_CPU_PROF=<dir>` writes a V8 CPU profile of the worker there.
 *
 * Incremental: `BENCH_UPDATES_PER_S` (default 1000) single-row UPDATEs per second for `BENCH_SECONDS`
 * (default 30), each on a distinct row; latency is from just before the UPDATE is sent to the moment a
 * Redis keyspace notification for the key arrives (so commit time is included).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { connectPostgres } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { startPostgres } from "../shared/stack/postgres.ts";
import { startRedis } from "../shared/stack/redis.ts";
import { freePort } from "../shared/stack/process.ts";
import { abortableSleep } from "../shared/worker.ts";
import { saveMapping, validateMapping } from "../workers/hydrate/mapping.ts";
import { cpuMsOf, peakRssMiB, percentile, report, type Row } from "./_util.ts";

const N = Number(Deno.env.get("BENCH_ROWS") ?? 1_000_000);
const RATE = Number(Deno.env.get("BENCH_UPDATES_PER_S") ?? 1_000);
const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? 30);
const MAIN = fileURLToPath(new URL("../workers/hydrate/main.ts", import.meta.url));
const log = createLogger("bench-hydrate", { level: "error" });
const say = (s: string) => console.error(`[bench:hydrate] ${s}`);

const RESP_GEN_C = String.raw`
#include <stdio.h>
#include <string.h>
/* COPY text rows "id\temail\tusername\tpassword\n" -> SET id email, SET username password (RESP). */
static void set(const char *k, size_t kl, const char *v, size_t vl) {
  printf("*3\r\n$3\r\nSET\r\n$%zu\r\n", kl); fwrite(k, 1, kl, stdout);
  printf("\r\n$%zu\r\n", vl); fwrite(v, 1, vl, stdout); fputs("\r\n", stdout);
}
int main(void) {
  static char buf[1 << 16]; static char out[1 << 20];
  setvbuf(stdout, out, _IOFBF, sizeof out);
  while (fgets(buf, sizeof buf, stdin)) {
    char *f[4]; size_t l[4]; char *p = buf;
    for (int i = 0; i < 4; i++) { f[i] = p; char *e = strchr(p, i == 3 ? '\n' : '\t'); if (!e) e = p + strlen(p); l[i] = e - p; p = e + 1; }
    set(f[0], l[0], f[1], l[1]); set(f[2], l[2], f[3], l[3]);
  }
  return 0;
}`;

const MAWK = String.raw`BEGIN { FS = "\t"; ORS = "" }
{ printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length($1), $1, length($2), $2, length($3), $3, length($4), $4 }`;

async function has(cmd: string): Promise<boolean> {
  try {
    return (await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

async function buildGenerator(dir: string): Promise<string> {
  if (await has("gcc")) {
    await Deno.writeTextFile(join(dir, "resp_gen.c"), RESP_GEN_C);
    const out = await new Deno.Command("gcc", {
      args: ["-O2", "-o", join(dir, "resp_gen"), join(dir, "resp_gen.c")],
    }).output();
    if (out.success) return join(dir, "resp_gen");
  }
  await Deno.writeTextFile(join(dir, "resp_gen.awk"), MAWK);
  return `mawk -f ${join(dir, "resp_gen.awk")}`;
}

const dir = await Deno.makeTempDir({ prefix: "wharf-bench-hydrate-" });
const password = crypto.randomUUID();
const pg = await startPostgres({
  dir: join(dir, "pg"),
  port: freePort(),
  user: "bench",
  password,
  ephemeral: true,
});
const redisSrv = await startRedis({ dir: join(dir, "redis"), port: freePort() });
const url = pg.urlFor("postgres");
const sql = connectPostgres(url, { max: 12 });
const redis = new Redis(redisSrv.url);
let worker: Deno.ChildProcess | undefined;
try {
  await migrate(sql, { log });
  say(`loading ${N} rows`);
  await sql`create table public.bench_users (id bigint generated always as identity primary key,
    email text unique not null, username text unique not null, password text not null)`;
  await sql`insert into public.bench_users (email, username, password)
    select 'user' || g || '@example.com', 'user' || g, '$argon2id$v=19$m=65536,t=3,p=4$' || md5(g::text)
      from generate_series(1, ${N}) g`;
  await sql`vacuum analyze public.bench_users`;

  // Baseline: psql \copy | resp-gen | redis-cli --pipe.
  const gen = await buildGenerator(dir);
  const psql = join(pg.binDir, "psql");
  const pipeline =
    `${psql} -X -q -c "\\copy (select id, email, username, password from public.bench_users) to stdout"` +
    ` | ${gen} | redis-cli -h 127.0.0.1 -p ${redisSrv.port} --pipe`;
  await redis.flushall();
  say("baseline: psql \\copy | resp-gen | redis-cli --pipe");
  // CPU of the servers (Postgres with its backends, Redis) and of the pipeline's own processes (bash's
  // `times`): figures that other load on the machine moves far less than wall time.
  const servers = () => ({ pg: cpuMsOf(pg.process.pid, true), redis: cpuMsOf(redisSrv.process.pid) });
  const sb = servers();
  const tb = performance.now();
  const out = await new Deno.Command("bash", {
    args: ["-o", "pipefail", "-c", `${pipeline}; rc=$?; times; exit $rc`],
    env: {
      PGHOST: "127.0.0.1",
      PGPORT: String(pg.port),
      PGUSER: "bench",
      PGPASSWORD: password,
      PGDATABASE: "postgres",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const baselineS = (performance.now() - tb) / 1000;
  const sb2 = servers();
  const pipeOut = new TextDecoder().decode(out.stdout);
  // `times` prints the shell's user/system time, then its children's: "0m1.234s 0m0.567s".
  const childTimes = pipeOut.trim().split("\n").at(-1)!.match(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/);
  const pipelineCpuMs = childTimes
    ? (Number(childTimes[1]) * 60 + Number(childTimes[2]) + Number(childTimes[3]) * 60 +
      Number(childTimes[4])) *
      1000
    : NaN;
  if (!out.success || !/errors: 0, replies: \d+/.test(pipeOut)) {
    throw new Error(`The baseline failed: ${new TextDecoder().decode(out.stderr)} ${pipeOut}`);
  }
  const baselineKeys = await redis.dbsize();
  if (baselineKeys !== 2 * N) throw new Error(`The baseline wrote ${baselineKeys} keys, not ${2 * N}`);
  await redis.flushall();

  // wharf: the worker process with the default mapping's two mappings over the bench table.
  for (const name of ["users_email", "users_password"]) {
    const m = await validateMapping(sql, {
      name,
      source: { schema: "public", table: "bench_users" },
      key_template: name === "users_email" ? "{id}" : "{username}",
      value: { shape: "string", column: name === "users_email" ? "email" : "password" },
    });
    await sql.begin((tx) => saveMapping(tx, m, false));
  }
  say("wharf: hydrate worker, first full sync");
  const sw = servers();
  worker = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      // BENCH_CPU_PROF=<dir>: a V8 CPU profile of the worker, written when it stops.
      ...(Deno.env.get("BENCH_CPU_PROF")
        ? ["--cpu-prof", `--cpu-prof-dir=${Deno.env.get("BENCH_CPU_PROF")}`]
        : []),
      MAIN,
    ],
    env: {
      DATABASE_URL: url,
      REDIS_URL: redisSrv.url,
      OPS_PORT: "0",
      HYDRATE_DEFAULT_MAPPINGS: "false",
      HYDRATE_PERIOD_S: "86400",
      HYDRATE_POLL_MS: "1000",
      WHARF_LOG_LEVEL: "warn",
      ...(Deno.env.get("HYDRATE_BATCH_ROWS")
        ? { HYDRATE_BATCH_ROWS: Deno.env.get("HYDRATE_BATCH_ROWS")! }
        : {}),
    },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const syncWindow = async (after: Date) => {
    for (;;) {
      const [s] = await sql<{ n: number; secs: number; rows: number }[]>`
        select count(*)::int as n, extract(epoch from max(last_sync_finished_at) - min(last_sync_started_at)) as secs,
               sum(last_sync_rows)::int as rows
          from control.hydrate_stats where last_sync_started_at >= ${after}`;
      if (s.n === 2) {
        const per = await sql`select mapping, last_sync_duration_ms from control.hydrate_stats order by 1`;
        say(per.map((x) => `${x.mapping} ${Math.round(x.last_sync_duration_ms)} ms`).join(", "));
        return Number(s.secs);
      }
      await abortableSleep(100);
    }
  };
  const firstS = await syncWindow(new Date(Date.now() - 60_000));
  const sw2 = servers();
  // From the worker's start (its start-up included) to the end of its first load.
  const workerCpuMs = cpuMsOf(worker.pid);
  const rssFirst = peakRssMiB(worker.pid);
  const keys1 = await redis.dbsize();
  if (keys1 !== 2 * N + 4) throw new Error(`wharf wrote ${keys1} keys, not ${2 * N} (+4 of its own)`);
  say("wharf: second full sync (staged generation and flip)");
  const t2 = new Date();
  await sql`update control.hydrate_mappings set resync_requested_at = now()`;
  await sql`select pg_notify('wharf_hydrate', 'resync')`;
  const secondS = await syncWindow(t2);

  // Incremental: RATE updates per second on distinct rows, latency to the keyspace event.
  say(`incremental: ${RATE} updates/s for ${SECONDS} s`);
  await redis.config("SET", "notify-keyspace-events", "K$");
  const sub = new Redis(redisSrv.url);
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  await sub.psubscribe("__keyspace@0__:*");
  sub.on("pmessage", (_p: string, channel: string, event: string) => {
    if (event !== "set") return;
    const key = channel.slice("__keyspace@0__:".length);
    const t = sentAt.get(key);
    if (t !== undefined) {
      lat.push(performance.now() - t);
      sentAt.delete(key);
    }
  });
  const total = RATE * SECONDS;
  const tick = 10;
  const perTick = Math.max(1, Math.round(RATE * tick / 1000));
  const t0 = performance.now();
  const pending: Promise<unknown>[] = [];
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * RATE) + perTick);
    if (sent < due) {
      // The rows of one tick in one statement (each row is its own change and its own Redis write).
      const ids: number[] = [];
      const now = performance.now();
      while (sent < due) {
        ids.push(++sent);
        sentAt.set(String(sent), now);
      }
      // postgres.js queries are lazy: execute() sends it now rather than when awaited.
      pending.push(
        sql`update public.bench_users set email = 'v2-' || id || '@example.com' where id = any(${ids})`
          .execute(),
      );
    }
    if (pending.length > 1_000) await Promise.all(pending.splice(0));
    await abortableSleep(tick);
  }
  await Promise.all(pending);
  const offered = total / ((performance.now() - t0) / 1000);
  const end = performance.now() + 30_000;
  while (sentAt.size && performance.now() < end) await abortableSleep(50);
  const lost = sentAt.size;
  sub.disconnect();
  const rss = peakRssMiB(worker.pid);

  const load = (system: string, run: string, secs: number, clientMs: number, a: typeof sb, b: typeof sb) => ({
    system,
    run,
    rows_per_s: N / secs,
    secs,
    client_cpu_s: clientMs / 1000,
    redis_cpu_s: (b.redis - a.redis) / 1000,
    pg_cpu_s: (b.pg - a.pg) / 1000,
  });
  const rows: Row[] = [
    load("baseline psql|resp|redis-cli --pipe", "full (empty Redis)", baselineS, pipelineCpuMs, sb, sb2),
    load("wharf hydrate", "full, first load", firstS, workerCpuMs, sw, sw2),
    { system: "wharf hydrate", run: "full, staged + flip", rows_per_s: N / secondS, secs: secondS },
  ];
  console.log(
    `incremental: ${lat.length} updates at ${Math.round(offered)}/s, p50 ${
      percentile(lat, 50).toFixed(1)
    } ms, ` +
      `p99 ${percentile(lat, 99).toFixed(1)} ms, not seen ${lost}; worker peak RSS ${rss.toFixed(0)} MiB`,
  );
  report("hydrate", rows, {
    ratio: Number(((N / firstS) / (N / baselineS)).toFixed(3)),
    rows: N,
    rows_per_s: Math.round(N / firstS),
    peer_rows_per_s: Math.round(N / baselineS),
    staged_rows_per_s: Math.round(N / secondS),
    // CPU seconds of everything a full load took (client processes, Redis, Postgres): ours ÷ baseline's.
    cpu_ratio: Number(
      (
        (pipelineCpuMs + sb2.redis - sb.redis + sb2.pg - sb.pg) /
        (workerCpuMs + sw2.redis - sw.redis + sw2.pg - sw.pg)
      ).toFixed(3),
    ),
    rss_mb: Math.round(rss),
    rss_first_load_mb: Math.round(rssFirst),
    p50_ms: Number(percentile(lat, 50).toFixed(2)),
    p99_ms: Number(percentile(lat, 99).toFixed(2)),
    updates: lat.length,
    updates_not_seen: lost,
  });
} finally {
  if (worker) {
    try {
      worker.kill("SIGTERM");
    } catch { /* exited */ }
    await worker.status;
  }
  redis.disconnect();
  await sql.end({ timeout: 5 });
  await redisSrv.stop();
  await pg.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
