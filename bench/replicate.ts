/**
 * `deno task bench:replicate`: the replicate worker against PostgreSQL's own logical replication
 * (publication + subscription into a second database), on one Postgres server, in one run.
 *
 * Workload, the same for both (each gets its own source database): `BENCH_ROWS` (default 1,000,000)
 * inserts across three tables in transactions of 10,000 rows, then a `BENCH_CHANGES` (default 200,000)
 * mix of updates (3/4) and deletes (1/4) in transactions of 5,000. The clock runs from the first insert
 * until the slot's confirmed position passes the source's last WAL position (both acknowledge only what
 * their target committed), then the three tables are compared by checksum. Peak lag is the largest
 * `pg_current_wal_lsn() - confirmed_flush_lsn` seen; peak RSS is the worker process's (VmHWM) and, for
 * the peer, the apply worker backend's.
 *
 * After the last round's workload, each contender gets `LATENCY_CHANGES` single-row changes one at a time
 * (inserts, then updates), each timed from its commit until the target's table shows it: the JSON line's
 * `change_p50_ms` / `change_p99_ms` and `peer_change_…`.
 *
 * `BENCH_ROUNDS` (default 5) interleaved rounds, each contender first in every other round, each in fresh
 * databases after a checkpoint; the JSON line gives every round's ratio (`ratios`) and the median round's
 * figures (`ratio` is its ratio): this machine's noise moves a single round's ratio by a tenth either way.
 *
 * The peer gets its best: `streaming = on` for large transactions, `synchronous_commit = off` on the
 * subscription, `binary = true` (values sent with the types' binary send functions and read with their
 * receive functions: measured in seven interleaved pairs, about 1 s less CPU in the apply worker and 7 %
 * less time than the default text format; `BENCH_PEER_BINARY=0` gives the peer text), a target without
 * extra indexes. Ours runs as a separate process with its defaults but for the batch files' format:
 * binary (`REPLICATE_FILE_FORMAT=binary`), like the peer; `BENCH_FORMAT=csv` gives it CSV, the default.
 */
import { CreateBucketCommand } from "@aws-sdk/client-s3";
import { fileURLToPath as fromFileUrl } from "node:url";
import { join } from "node:path";
import { connectPostgres, dropReplicationSlot, type Sql } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { freePort } from "../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS, startS3 } from "../shared/stack/s3.ts";
import { abortableSleep } from "../shared/worker.ts";
import { s3Client } from "../workers/replicate/s3.ts";
import {
  alternate,
  benchPostgres,
  cpuMsOf,
  formatTable,
  medianRound,
  peakRssMiB,
  percentile,
  procStat,
  report,
  roundRow,
  type Row,
} from "./_util.ts";

const ROWS = Number(Deno.env.get("BENCH_ROWS") ?? 1_000_000);
const CHANGES = Number(Deno.env.get("BENCH_CHANGES") ?? 200_000);
const PEER_BINARY = Deno.env.get("BENCH_PEER_BINARY") !== "0";
/** The worker's batch file format (`REPLICATE_FILE_FORMAT`). */
const FORMAT = Deno.env.get("BENCH_FORMAT") === "csv" ? "csv" : "binary";
/** Interleaved rounds (each contender first in every other one); the ratio is the median round's. */
const ROUNDS = Math.max(1, Number(Deno.env.get("BENCH_ROUNDS") ?? 5));
/** Single-row changes timed one at a time after the last round's workload (see `changeLatency`). */
const LATENCY_CHANGES = 20;
const TABLES = ["t1", "t2", "t3"];
const MAIN = fromFileUrl(new URL("../workers/replicate/main.ts", import.meta.url));
/** Extra `deno run` flags for the worker (e.g. `--cpu-prof --cpu-prof-dir=…` to profile it). */
const WORKER_FLAGS = (Deno.env.get("BENCH_WORKER_FLAGS") ?? "").split(/\s+/).filter(Boolean);
/** `BENCH_ONLY=wharf` skips the peer (for quick iterations; the ratio is then 0). */
const ONLY = Deno.env.get("BENCH_ONLY");
const log = createLogger("bench-replicate", { level: "error" });
const say = (s: string) => console.error(`[bench] ${s}`);

async function createSource(sql: Sql): Promise<void> {
  for (const t of TABLES) {
    await sql.unsafe(
      `create table public.${t} (id bigint primary key, a int not null, b text, c timestamptz)`,
    );
  }
}

async function createTargetTables(sql: Sql): Promise<void> {
  for (const t of TABLES) {
    await sql.unsafe(
      `create table public.${t} (id bigint primary key, a int not null, b text, c timestamptz)`,
    );
  }
}

/** Runs the workload on `sql`; returns the source WAL position at its end. */
async function workload(sql: Sql): Promise<string> {
  const perTable = Math.floor(ROWS / TABLES.length);
  const step = 10_000;
  for (let start = 1; start <= perTable; start += step) {
    const end = Math.min(perTable, start + step - 1);
    await sql.begin(async (tx) => {
      for (const t of TABLES) {
        await tx.unsafe(
          `insert into public.${t} (id, a, b, c) select g, g % 1000, md5(g::text), now() from generate_series($1::bigint, $2::bigint) g`,
          [start, end],
        );
      }
    });
  }
  // Updates and deletes: CHANGES rows in all, spread over the tables, 5,000 per transaction.
  const perTx = 5_000;
  let done = 0;
  let round = 0;
  while (done < CHANGES) {
    const t = TABLES[round % TABLES.length];
    const base = 1 + (round * 7_919) % Math.max(1, perTable - perTx);
    const n = Math.min(perTx, CHANGES - done);
    const upd = Math.floor(n * 3 / 4);
    await sql.begin(async (tx) => {
      await tx.unsafe(
        `update public.${t} set a = a + 1, b = b || 'u' where id between $1::bigint and $2::bigint`,
        [base, base + upd - 1],
      );
      await tx.unsafe(`delete from public.${t} where id between $1::bigint and $2::bigint`, [
        base + upd,
        base + n - 1,
      ]);
    });
    done += n;
    round++;
  }
  const [r] = await sql`select pg_current_wal_lsn()::text as lsn`;
  return r.lsn;
}

/** CPU seconds per process of the servers (children of `parents`), keyed by pid and process title. */
function serverCpu(parents: number[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const st = procStat(e.name);
    const pid = Number(e.name);
    if (!st || (!parents.includes(st.ppid) && !parents.includes(pid))) continue;
    try {
      const title = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ").trim();
      out.set(`${pid} ${title.replace(/\(\d+\)/, "").slice(0, 60)}`, st.ms / 1000);
    } catch { /* gone */ }
  }
  return out;
}

/** Prints where the servers' CPU went between two {@linkcode serverCpu} readings. */
function sayCpu(label: string, before: Map<string, number>, after: Map<string, number>): void {
  const used = [...after].map(([k, v]) => [k.replace(/^\d+ /, ""), v - (before.get(k) ?? 0)] as const)
    .filter(([, v]) => v >= 0.05).sort((a, b) => b[1] - a[1]);
  say(`${label} server CPU s: ${used.map(([k, v]) => `${v.toFixed(2)} ${k}`).join("; ")}`);
}

async function checksums(sql: Sql): Promise<string[]> {
  const out: string[] = [];
  for (const t of TABLES) {
    const [r] = await sql.unsafe(
      `select count(*)::text || ':' || coalesce(sum(hashtext(x::text)::bigint), 0)::text as c from public.${t} x`,
    );
    out.push(r.c);
  }
  return out;
}

/**
 * One change at a time on an idle pipeline: `LATENCY_CHANGES` single-row transactions on the source
 * (inserts of new keys, then updates of them), each awaited until the target shows it, polled every
 * millisecond. Returns the milliseconds from each commit to its row on the target.
 */
async function changeLatency(src: Sql, dst: Sql): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < LATENCY_CHANGES; i++) {
    const id = 100_000_000 + (i % (LATENCY_CHANGES / 2));
    const b = `latency ${i}`;
    await abortableSleep(100); // idle in between, as a trickle of changes finds it
    // The commit flushes its WAL: this server commits asynchronously, and the walsender sends only flushed
    // WAL, so up to the WAL writer's next round (200 ms) would be timed otherwise.
    await src.begin(async (tx) => {
      await tx`set local synchronous_commit = on`;
      if (i < LATENCY_CHANGES / 2) {
        await tx`insert into public.t1 (id, a, b, c) values (${id}, 0, ${b}, now())`;
      } else await tx`update public.t1 set b = ${b} where id = ${id}`;
    });
    const t0 = performance.now();
    for (;;) {
      const [r] = await dst`select b from public.t1 where id = ${id}`;
      if (r?.b === b) break;
      if (performance.now() - t0 > 30_000) throw new Error(`change ${i} not on the target after 30 s`);
      await abortableSleep(1);
    }
    ms.push(performance.now() - t0);
  }
  return ms;
}

/** The latency columns of a round's row: p50 and p99 of `ms`, when measured. */
function latencyColumns(ms: number[]): Row {
  if (!ms.length) return {};
  return {
    change_p50_ms: Number(percentile(ms, 50).toFixed(1)),
    change_p99_ms: Number(percentile(ms, 99).toFixed(1)),
  };
}

/** Samples lag until the slot has confirmed `endLsn`, keeping the peak. */
async function followSlot(
  admin: Sql,
  slot: string,
  end: () => string | undefined,
  rss: () => number,
): Promise<{ peakLagMiB: number; peakRss: number }> {
  let peakLag = 0;
  let peakRss = 0;
  for (;;) {
    const [s] = await admin`select (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::text as lag,
                                   ${end() ?? null}::pg_lsn <= confirmed_flush_lsn as done
                              from pg_replication_slots where slot_name = ${slot}`;
    if (s) {
      peakLag = Math.max(peakLag, Number(s.lag ?? 0));
      if (s.done) break;
    }
    const r = rss();
    if (Number.isFinite(r)) peakRss = Math.max(peakRss, r);
    // Often enough that the clock's stop is late by 25 ms on average (at 250 ms, a round's time moved by
    // up to a twentieth of a ~6 s run either way, on both sides alike).
    await abortableSleep(50);
  }
  return { peakLagMiB: peakLag / 1024 / 1024, peakRss };
}

async function runNative(
  pgUrl: (db: string) => string,
  admin: Sql,
  servers: number[],
  round: number,
  latency = false,
): Promise<Row> {
  const [srcDb, dstDb] = [`src_native_${round}`, `dst_native_${round}`];
  await admin.unsafe("checkpoint"); // what earlier rounds wrote is not this one's to flush
  await admin.unsafe(`create database ${srcDb}`);
  await admin.unsafe(`create database ${dstDb}`);
  const src = connectPostgres(pgUrl(srcDb), { max: 2 });
  const dst = connectPostgres(pgUrl(dstDb), { max: 2 });
  try {
    await createSource(src);
    await createTargetTables(dst);
    await src`create publication bench_pub for table public.t1, public.t2, public.t3`;
    // The subscription's connection string: same server, the source database.
    const conn = pgUrl(srcDb).replace(
      /^postgres:\/\/([^:]+):([^@]+)@([^:/]+):(\d+)\/(.+)$/,
      (_m, u, p, h, port, d) =>
        `host=${h} port=${port} user=${decodeURIComponent(u)} password=${decodeURIComponent(p)} dbname=${d}`,
    );
    // A subscription into the same cluster must not create its slot itself (the command would wait on
    // itself), so the slot is made first. CREATE SUBSCRIPTION takes no parameters; the connection string
    // is this bench's own local server.
    await src`select pg_create_logical_replication_slot('bench_sub', 'pgoutput')`;
    await dst.unsafe(
      `create subscription bench_sub connection '${conn.replaceAll("'", "''")}' publication bench_pub
         with (copy_data = false, create_slot = false, slot_name = 'bench_sub', streaming = on,
               synchronous_commit = off, binary = ${PEER_BINARY})`,
    );
    await abortableSleep(1_000);
    let endLsn: string | undefined;
    const cpuBefore = serverCpu(servers);
    const t0 = performance.now();
    let wlSecs = 0;
    const wl = workload(src).then((l) => {
      wlSecs = (performance.now() - t0) / 1000;
      endLsn = l;
    });
    const applyPid = async () => {
      const [r] =
        await dst`select pid from pg_stat_subscription where subname = 'bench_sub' and relid is null`;
      return r?.pid as number | undefined;
    };
    let pid = await applyPid();
    const follow = await followSlot(admin, "bench_sub", () => endLsn, () => (pid ? peakRssMiB(pid) : NaN));
    await wl;
    const secs = (performance.now() - t0) / 1000;
    sayCpu("peer", cpuBefore, serverCpu(servers));
    pid ??= await applyPid();
    const same = JSON.stringify(await checksums(src)) === JSON.stringify(await checksums(dst));
    const lat = latency ? await changeLatency(src, dst) : [];
    await dst`alter subscription bench_sub disable`;
    await dst`alter subscription bench_sub set (slot_name = none)`;
    await dst`drop subscription bench_sub`;
    await dropReplicationSlot(admin, "bench_sub");
    return {
      system: "postgres logical replication",
      seconds: secs,
      workload_s: wlSecs,
      tail_s: secs - wlSecs,
      worker_cpu_s: NaN,
      rows_per_s: (ROWS + CHANGES) / secs,
      peak_lag_mib: follow.peakLagMiB,
      peak_rss_mib: follow.peakRss,
      target_equals_source: same ? "yes" : "NO",
      ...latencyColumns(lat),
    };
  } finally {
    await Promise.allSettled([src.end(), dst.end()]);
    await dropDatabases(admin, [srcDb, dstDb]);
  }
}

/**
 * Before the first round, the workload twice on a database of its own, replicated by nobody. A fresh
 * server creates (and zero-fills) a new 16 MiB WAL segment file for every 16 MiB it writes, where later
 * rounds reuse the segments a checkpoint recycled (about 28 a round): without this, the first round's
 * first contender (the peer) made them all, and its source backend used 0.2–0.8 s more CPU than in the
 * later rounds.
 */
async function warmUp(pgUrl: (db: string) => string, admin: Sql): Promise<void> {
  await admin.unsafe("create database bench_warm_up");
  const sql = connectPostgres(pgUrl("bench_warm_up"), { max: 2 });
  try {
    await createSource(sql);
    // Twice, without a checkpoint between: a round writes about that much WAL (source and target).
    for (let i = 0; i < 2; i++) {
      await sql.unsafe(`truncate ${TABLES.map((t) => `public.${t}`).join(", ")}`);
      await workload(sql);
    }
  } finally {
    await sql.end();
    await dropDatabases(admin, ["bench_warm_up"]);
  }
}

/** Drops a round's databases, so that the next round's server holds only its own. */
async function dropDatabases(admin: Sql, names: string[]): Promise<void> {
  for (const n of names) await admin.unsafe(`drop database if exists ${n} with (force)`).catch(() => {});
}

async function runWharf(
  pgUrl: (db: string) => string,
  admin: Sql,
  servers: number[],
  s3Endpoint: string,
  tmp: string,
  round: number,
  latency = false,
): Promise<Row> {
  const [srcDb, dstDb, ctlDb] = [`src_wharf_${round}`, `dst_wharf_${round}`, `ctl_wharf_${round}`];
  const bucket = `bench-warehouse-${round}`;
  await admin.unsafe("checkpoint"); // what earlier rounds wrote is not this one's to flush
  await admin.unsafe(`create database ${srcDb}`);
  await admin.unsafe(`create database ${dstDb}`);
  await admin.unsafe(`create database ${ctlDb}`);
  const src = connectPostgres(pgUrl(srcDb), { max: 2 });
  const dst = connectPostgres(pgUrl(dstDb), { max: 2 });
  const ctl = connectPostgres(pgUrl(ctlDb), { max: 2 });
  const s3 = s3Client({
    endpoint: s3Endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...LOCAL_S3_CREDENTIALS,
  });
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  let worker: Deno.ChildProcess | undefined;
  try {
    await migrate(ctl, { log });
    await createSource(src);
    await src`create publication bench_pub for table public.t1, public.t2, public.t3`;
    worker = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...WORKER_FLAGS, MAIN],
      env: {
        ...Deno.env.toObject(),
        DATABASE_URL: pgUrl(ctlDb),
        REPLICATE_SOURCE_URL: pgUrl(srcDb),
        REPLICATE_PIPELINE: "bench",
        REPLICATE_SLOT: "bench_wharf",
        REPLICATE_PUBLICATION: "bench_pub",
        REPLICATE_TARGET_URL: pgUrl(dstDb),
        REPLICATE_BUCKET: bucket,
        REPLICATE_SPOOL_DIR: join(tmp, `spool-${round}`),
        REPLICATE_FILE_FORMAT: FORMAT,
        S3_ENDPOINT: s3Endpoint,
        S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
        S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
        S3_FORCE_PATH_STYLE: "true",
        OPS_PORT: "0",
        WHARF_LOG_LEVEL: "warn",
      },
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    // Wait for the (empty) snapshot and the stream to start.
    for (;;) {
      const [p] = await ctl`select state from control.replicate_pipelines where name = 'bench'`.catch(
        () => [],
      );
      if (p?.state === "streaming") break;
      await abortableSleep(200);
    }
    let endLsn: string | undefined;
    const cpuBefore = serverCpu(servers);
    const t0 = performance.now();
    let wlSecs = 0;
    const wl = workload(src).then((l) => {
      wlSecs = (performance.now() - t0) / 1000;
      endLsn = l;
    });
    const pid = worker.pid;
    const cpu0 = cpuMsOf(pid) / 1000;
    const follow = await followSlot(admin, "bench_wharf", () => endLsn, () => peakRssMiB(pid));
    await wl;
    const secs = (performance.now() - t0) / 1000;
    const cpu = cpuMsOf(pid) / 1000 - cpu0;
    sayCpu("wharf", cpuBefore, serverCpu(servers));
    const rss = Math.max(follow.peakRss, peakRssMiB(pid));
    const same = JSON.stringify(await checksums(src)) === JSON.stringify(await checksums(dst));
    const lat = latency ? await changeLatency(src, dst) : [];
    const [b] =
      await ctl`select count(*)::int as n, avg(rows)::float as avg_rows, avg(duration_ms)::float as avg_ms
                            from control.replicate_batches where pipeline = 'bench'`;
    say(`wharf batches: ${b.n}, ${Math.round(b.avg_rows)} rows and ${Math.round(b.avg_ms)} ms on average`);
    return {
      system: "wharf replicate (S3 + COPY + merge)",
      seconds: secs,
      workload_s: wlSecs,
      tail_s: secs - wlSecs,
      worker_cpu_s: cpu,
      rows_per_s: (ROWS + CHANGES) / secs,
      peak_lag_mib: follow.peakLagMiB,
      peak_rss_mib: rss,
      target_equals_source: same ? "yes" : "NO",
      ...latencyColumns(lat),
    };
  } finally {
    if (worker) {
      worker.kill("SIGTERM");
      await worker.status;
    }
    await dropReplicationSlot(admin, "bench_wharf").catch(() => {});
    await Promise.allSettled([src.end(), dst.end(), ctl.end()]);
    await dropDatabases(admin, [srcDb, dstDb, ctlDb]);
    s3.destroy();
  }
}

const { dir, pg } = await benchPostgres("replicate", {
  max_wal_size: "4GB",
  // The segments the warm-up made are kept for the rounds (recycled at checkpoints, not removed).
  min_wal_size: "1GB",
  logical_decoding_work_mem: "64MB",
});
const s3 = await startS3({ dir: join(dir, "s3"), port: freePort() });
const admin = connectPostgres(pg.url, { max: 2 });
const servers = [pg.process.pid, s3.process.pid];
// An interrupted bench still stops the servers it started.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, async () => {
    await Promise.allSettled([s3.stop(), pg.stop()]);
    Deno.exit(130);
  });
}
try {
  say(
    `workload: ${ROWS.toLocaleString("en-US")} inserts, then ${
      CHANGES.toLocaleString("en-US")
    } updates/deletes`,
  );
  say("warm-up: the workload twice, replicated by nobody…");
  await warmUp(pg.urlFor, admin);
  // Interleaved rounds, each contender first in every other one; the ratio is the median round's.
  const rounds: { ours: Row; peer: Row; ratio: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let peer: Row = { seconds: NaN, rows_per_s: NaN, peak_lag_mib: NaN, target_equals_source: "yes" };
    let ours: Row | undefined;
    const tag = ROUNDS > 1 ? ` (round ${r + 1} of ${ROUNDS})` : "";
    const native = async () => {
      if (ONLY === "wharf") return;
      say(`peer: PostgreSQL logical replication${tag}…`);
      peer = await runNative(pg.urlFor, admin, servers, r, r === ROUNDS - 1);
      say(`peer done in ${Number(peer.seconds).toFixed(1)} s`);
    };
    const wharf = async () => {
      say(`wharf replicate${tag}…`);
      ours = await runWharf(pg.urlFor, admin, servers, s3.endpoint, dir, r, r === ROUNDS - 1);
      say(`wharf done in ${Number(ours.seconds).toFixed(1)} s`);
    };
    await alternate(r, native, wharf);
    const ratio = ONLY === "wharf" ? 0 : Number((Number(peer.seconds) / Number(ours!.seconds)).toFixed(3));
    rounds.push({ ours: ours!, peer, ratio });
  }
  const { ours, peer, ratio } = medianRound(rounds);
  const last = rounds[rounds.length - 1];
  const rows = rounds.flatMap((x, r) =>
    (ONLY === "wharf" ? [x.ours] : [x.ours, x.peer]).map((row) => roundRow(row, r, ROUNDS))
  );
  console.log(formatTable(
    [last.ours, ...(ONLY === "wharf" ? [] : [last.peer])].map((x) => ({
      "one change at a time, idle (ms: commit → row on the target)": String(x.system),
      changes: LATENCY_CHANGES,
      p50: x.change_p50_ms,
      p99: x.change_p99_ms,
    })),
  ));
  console.log();
  report("replicate", rows, {
    ratio,
    ratios: rounds.map((x) => x.ratio),
    rows: ROWS + CHANGES,
    seconds: Number(Number(ours.seconds).toFixed(2)),
    workload_s: Number(Number(ours.workload_s).toFixed(2)),
    tail_s: Number(Number(ours.tail_s).toFixed(2)),
    worker_cpu_s: Number(Number(ours.worker_cpu_s).toFixed(2)),
    peer_seconds: Number(Number(peer.seconds).toFixed(2)),
    peer_workload_s: Number(Number(peer.workload_s).toFixed(2)),
    peer_binary: PEER_BINARY,
    format: FORMAT,
    rows_per_s: Math.round(Number(ours.rows_per_s)),
    peer_rows_per_s: Math.round(Number(peer.rows_per_s)),
    peak_lag_mib: Number(Number(ours.peak_lag_mib).toFixed(1)),
    peer_peak_lag_mib: Number(Number(peer.peak_lag_mib).toFixed(1)),
    rss_mb: Math.round(Math.max(...rounds.map((x) => Number(x.ours.peak_rss_mib)))),
    change_p50_ms: last.ours.change_p50_ms,
    change_p99_ms: last.ours.change_p99_ms,
    peer_change_p50_ms: last.peer.change_p50_ms,
    peer_change_p99_ms: last.peer.change_p99_ms,
    target_equals_source: rounds.every((x) =>
      x.ours.target_equals_source === "yes" && x.peer.target_equals_source === "yes"
    ),
  });
} finally {
  await admin.end({ timeout: 5 });
  await s3.stop();
  await pg.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
