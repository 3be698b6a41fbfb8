/**
 * `deno task bench:dispatch`: events through a no-op function on one Postgres, dispatch against
 * graphile-worker running the equivalent no-op task, with one and two nodes each. Throughput is events
 * per second from the start of the batch insert (one statement each) to the last completion; latency is insert to function start
 * (database clock for dispatch, payload timestamp for graphile-worker), bulk and idle (one at a time).
 *
 * `BENCH_EVENTS` (default 100000) sets the batch size; `BENCH_CONCURRENCY` (default 24) the per-node
 * concurrency for both; `BENCH_PREFETCH` (default 500) how many events each side fetches ahead. The defaults
 * are graphile-worker's own performance guide's settings (`concurrentJobs: 24`, `maxPoolSize: 25`,
 * `localQueue: { size: 500 }`, batch delays 0): its best, measured; with 64 ahead it ran a quarter to a third slower.
 * `BENCH_ONLY=dispatch` skips graphile-worker (for quick comparisons of dispatch changes; the ratio is then 0).
 *
 * `BENCH_ROUNDS` (default 3) interleaved rounds, each side first in every other round: the ratio of each round
 * is its best dispatch throughput over its best graphile-worker throughput, and the JSON line reports the
 * median round (with every round's ratio in `ratios`), as a single round's ratio moves by a tenth either way
 * on a small shared machine. Every round runs graphile-worker's default configuration before its batched
 * one, as a single run always did: its planner's statistics of its jobs table decide its speed, and those
 * autovacuum takes during that slower run (100,000 jobs queued) are the ones under which it ran its best
 * (measured: started on a fresh install, or on statistics of its emptied table, the batched runs took 115–155
 * µs of database CPU per job instead of 50–57, at half the throughput). A run takes about nine minutes.
 */
import process from "node:process";
import { Logger as GraphileLogger, run as graphileRun } from "graphile-worker";
import { connectPostgres, type Sql } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { abortableSleep } from "../shared/worker.ts";
import { type NodeStatus, runNode } from "../workers/dispatch/node.ts";
import {
  alternate,
  benchPostgres,
  cpuMsOf,
  medianRound,
  percentile,
  report,
  roundRow,
  type Row,
} from "./_util.ts";

const N = Number(Deno.env.get("BENCH_EVENTS") ?? 100_000);
const CONC = Number(Deno.env.get("BENCH_CONCURRENCY") ?? 24);
const IDLE = 50;
/**
 * Jobs fetched ahead of a free slot, the same for both: dispatch's `prefetch` and graphile-worker's
 * `localQueue.size` (its release notes suggest at least concurrency + 1; its performance guide uses 500).
 */
const PREFETCH = Number(Deno.env.get("BENCH_PREFETCH") ?? 500);
const ONLY = Deno.env.get("BENCH_ONLY");
/** Interleaved rounds (each side first in every other one); the ratio is the median round's. */
const ROUNDS = Math.max(1, Number(Deno.env.get("BENCH_ROUNDS") ?? 3));
const quiet = new GraphileLogger(() => () => {});
const log = createLogger("bench-dispatch", { level: "error" });

function startNodes(sql: Sql, count: number) {
  const controller = new AbortController();
  const statuses: NodeStatus[] = [];
  const runs = Array.from({ length: count }, (_, i) => {
    const status: NodeStatus = { master: false, running: 0, done: 0, failed: 0 };
    statuses.push(status);
    return runNode(
      {
        sql,
        functionSql: sql,
        schema: "control",
        nodeId: `bench-${count}-${i}`,
        bind: "localhost:0",
        log,
        leaseMs: 5_000,
        concurrency: CONC,
        prefetch: PREFETCH,
        pollMs: 1_000,
        trustedKeys: [],
      },
      controller.signal,
      status,
    );
  });
  return {
    done: () => statuses.reduce((a, st) => a + st.done, 0),
    stop: async () => {
      controller.abort();
      await Promise.all(runs);
    },
  };
}

/** Polls `f` until true; gives up (naming `what`) after ten minutes so a stall never hangs the run. */
async function waitUntil(f: () => Promise<boolean>, what: string): Promise<void> {
  const end = performance.now() + 600_000;
  while (!(await f())) {
    if (performance.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await abortableSleep(20);
  }
}

async function benchDispatch(sql: Sql, nodes: number): Promise<Row> {
  await sql`truncate control.dispatch_queue, control.dispatch_history, control.dispatch_nodes`;
  await sql`update control.dispatch_leases set holder = null, lease_until = '-infinity'`;
  const { done, stop } = startNodes(sql, nodes);
  try {
    await abortableSleep(300);
    // Idle latency: one event at a time.
    for (let i = 0; i < IDLE; i++) {
      await sql`insert into public.bench_t (v) values (${i})`;
      await waitUntil(() => Promise.resolve(done() === i + 1), "dispatch idle event");
    }
    const idle = await sql<{ ms: number }[]>`
      select extract(epoch from started_at - created_at) * 1000 as ms from control.dispatch_history`;
    await sql`truncate control.dispatch_queue, control.dispatch_history`;
    // Counted before the insert: nodes may finish events before this code resumes after the commit.
    const before = done();
    const cpu0 = cpuMs();
    const t0 = performance.now();
    await sql`insert into public.bench_t (v) select g from generate_series(1, ${N}) g`;
    const tc = performance.now();
    await waitUntil(() => Promise.resolve(done() - before >= N), "dispatch batch");
    const secs = (performance.now() - t0) / 1000;
    const bulk = await sql<{ ms: number }[]>`
      select extract(epoch from started_at - created_at) * 1000 as ms from control.dispatch_history`;
    return row(
      "dispatch",
      nodes,
      N / secs,
      idle.map((r) => Number(r.ms)),
      bulk.map((r) => Number(r.ms)),
      tc - t0,
      cpu0,
    );
  } finally {
    await stop();
  }
}

/**
 * CPU time used so far (ms) by this process (all threads, sandbox workers included) and by the Postgres
 * server (postmaster and its backends), from /proc. Per event it does not depend on what else the
 * machine runs, unlike wall-clock throughput.
 */
function cpuMs(): { client: number; pg: number } {
  const client = process.cpuUsage();
  return { client: (client.user + client.system) / 1000, pg: cpuMsOf(pg.process.pid, true) };
}

function row(
  system: string,
  nodes: number,
  eps: number,
  idle: number[],
  bulk: number[],
  insertMs: number,
  cpu0: { client: number; pg: number },
): Row {
  const cpu1 = cpuMs();
  return {
    system,
    nodes,
    events_per_s: eps,
    idle_p50_ms: percentile(idle, 50),
    idle_p99_ms: percentile(idle, 99),
    bulk_p50_ms: percentile(bulk, 50),
    bulk_p99_ms: percentile(bulk, 99),
    insert_ms: insertMs,
    client_cpu_us_per_event: (cpu1.client - cpu0.client) * 1000 / N,
    pg_cpu_us_per_event: (cpu1.pg - cpu0.pg) * 1000 / N,
  };
}

async function benchGraphile(sql: Sql, url: string, nodes: number, batched: boolean): Promise<Row> {
  const lat: number[] = [];
  let done = 0;
  const taskList = {
    noop: (payload: unknown) => {
      lat.push(Date.now() - (payload as { t: number }).t);
      done++;
      return Promise.resolve();
    },
  };
  const runners = await Promise.all(
    Array.from(
      { length: nodes },
      () =>
        graphileRun({
          logger: quiet,
          connectionString: url,
          concurrency: CONC,
          // A connection per job slot and one to spare, as its performance guide sizes the pool.
          maxPoolSize: Math.max(10, CONC + 1),
          noHandleSignals: true,
          pollInterval: 1_000,
          taskList,
          // Batched: graphile-worker's batching options, as its performance guide sets them (a local
          // queue that fetches jobs in batches, batched completion and failure). Both ways are run and
          // the better one counts: on a small machine the batching does not always win.
          ...(batched
            ? {
              preset: {
                worker: {
                  localQueue: { size: PREFETCH },
                  completeJobBatchDelay: 0,
                  failJobBatchDelay: 0,
                },
              },
            }
            : {}),
        }),
    ),
  );
  try {
    for (let i = 0; i < IDLE; i++) {
      await sql`select graphile_worker.add_job('noop', json_build_object('t', (extract(epoch from clock_timestamp()) * 1000)::bigint))`;
      await waitUntil(() => Promise.resolve(done === i + 1), "graphile-worker idle job");
    }
    const idle = lat.splice(0);
    done = 0;
    const cpu0 = cpuMs();
    const t0 = performance.now();
    // graphile-worker's own bulk path (add_jobs over an array of job specs), in one statement and one
    // transaction like the dispatch side's single INSERT. Calling add_job once per row is far slower.
    await sql`select graphile_worker.add_jobs(array(
                select row('noop', json_build_object('t', (extract(epoch from clock_timestamp()) * 1000)::bigint),
                           null, null, null, null, null, null)::graphile_worker.job_spec
                from generate_series(1, ${N})))`;
    const tc = performance.now();
    await waitUntil(() => Promise.resolve(done >= N), "graphile-worker batch");
    const secs = (performance.now() - t0) / 1000;
    return row(
      batched ? "graphile-worker batched" : "graphile-worker",
      nodes,
      N / secs,
      idle,
      lat,
      tc - t0,
      cpu0,
    );
  } finally {
    await Promise.all(runners.map((r) => r.stop()));
  }
}

const { dir, pg } = await benchPostgres("dispatch");
const sql = connectPostgres(pg.url, { max: 20 });
try {
  await migrate(sql, { log });
  await sql`create table public.bench_t (id bigserial primary key, v int)`;
  await sql`insert into control.dispatch_functions (name, code) values ('noop', 'export default () => {}')`;
  await sql`insert into control.dispatch_triggers (table_schema, table_name, function_name) values ('public', 'bench_t', 'noop')`;
  await sql`select control.dispatch_install('public', 'bench_t')`;
  const leastCpu = (rs: Row[]) =>
    Math.min(...rs.map((r) => Number(r.client_cpu_us_per_event) + Number(r.pg_cpu_us_per_event)));
  const best = (rs: Row[]) => Math.max(...rs.map((r) => Number(r.events_per_s)));
  const rounds: { ours: Row[]; peer: Row[]; ratio: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const ours: Row[] = [];
    const peer: Row[] = [];
    for (const nodes of [1, 2]) {
      const mine = async () => void ours.push(await benchDispatch(sql, nodes));
      const theirs = async () => {
        if (ONLY === "dispatch") return;
        peer.push(await benchGraphile(sql, pg.url, nodes, false));
        peer.push(await benchGraphile(sql, pg.url, nodes, true));
      };
      await alternate(r, mine, theirs);
    }
    const ratio = peer.length ? Number((best(ours) / best(peer)).toFixed(3)) : 0;
    if (ROUNDS > 1) console.error(`[bench] round ${r + 1} of ${ROUNDS}: ratio ${ratio}`);
    rounds.push({ ours, peer, ratio });
  }
  const { ours, peer, ratio } = medianRound(rounds);
  const rows = rounds.flatMap((x, r) =>
    [...x.ours, ...x.peer].sort((a, b) => Number(a.nodes) - Number(b.nodes)).map((row) =>
      roundRow(row, r, ROUNDS)
    )
  );
  report("dispatch", rows, {
    ratio,
    ratios: rounds.map((x) => x.ratio),
    events: N,
    events_per_s: Math.round(best(ours)),
    peer_events_per_s: peer.length ? Math.round(best(peer)) : null,
    // Client + server CPU per event, the least of each side's runs: a figure that other load on the
    // machine barely moves.
    cpu_us_per_event: Math.round(leastCpu(ours)),
    peer_cpu_us_per_event: peer.length ? Math.round(leastCpu(peer)) : null,
    peer: peer.length
      ? peer.reduce((a, b) => Number(b.events_per_s) > Number(a.events_per_s) ? b : a).system
      : null,
    p50_ms: ours[0].idle_p50_ms,
    p99_ms: ours[0].idle_p99_ms,
    bulk_p50_ms: ours[0].bulk_p50_ms,
    bulk_p99_ms: ours[0].bulk_p99_ms,
  });
} finally {
  await sql.end({ timeout: 5 });
  await pg.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
