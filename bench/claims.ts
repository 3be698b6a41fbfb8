/**
 * `deno task bench:claims`: what a dispatch claim costs the database as finished events pile up in the queue's
 * ready index before vacuum. `BENCH_EVENTS` events (default 100,000) are queued by one insert, then claimed
 * `BENCH_CLAIM` at a time (default 250) and finished by the next claim, on one connection, through
 * `control.dispatch_claim`: each claim either from the head of the index (as before migration 0028) or after
 * the last event claimed (what a node does). `BENCH_ROUNDS` interleaved rounds (default 2). Figures per event:
 * wall time, database CPU, and the blocks read of the ready index and of the queue's heap (`pg_statio`).
 * Each way runs twice per round: alone, and with another session's snapshot open all along (a report, a
 * backup, autovacuum's analyze), under which the finished events' entries cannot be marked dead, so a scan
 * from the head visits the heap for each of them. Ratio: wall time per event from the head ÷ after the
 * cursor, alone, of the median round (`snapshot_held_ratios`: the same with the snapshot held).
 */
import { connectPostgres, type Sql } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { benchPostgres, cpuMsOf, medianRound, report, roundRow, type Row } from "./_util.ts";

const N = Number(Deno.env.get("BENCH_EVENTS") ?? 100_000);
const CLAIM = Number(Deno.env.get("BENCH_CLAIM") ?? 250);
const ROUNDS = Math.max(1, Number(Deno.env.get("BENCH_ROUNDS") ?? 2));
const log = createLogger("bench-claims", { level: "error" });

type Claimed = { id: string; at: string; run_at_us: string | null };

async function blocks(sql: Sql): Promise<{ index: number; heap: number }> {
  await sql`select pg_stat_force_next_flush()`;
  await sql`select pg_stat_clear_snapshot()`;
  const [b] = await sql`
    select (select idx_blks_hit + idx_blks_read from pg_statio_user_indexes
             where indexrelid = 'control.dispatch_queue_ready_idx'::regclass)::float8 as index,
           (select heap_blks_hit + heap_blks_read from pg_statio_user_tables
             where relid = 'control.dispatch_queue'::regclass)::float8 as heap`;
  return { index: b.index, heap: b.heap };
}

async function run(
  sql: Sql,
  other: Sql,
  pgPid: number,
  mode: "head" | "cursor",
  hold: boolean,
): Promise<Row> {
  await sql`truncate control.dispatch_queue, control.dispatch_history`;
  await sql`insert into public.bench_t (v) select g from generate_series(1, ${N}) g`;
  // Both start from a vacuumed queue; autovacuum is off for it, so nothing cleans it up during a run.
  await sql`vacuum analyze control.dispatch_queue`;
  const b0 = await blocks(sql);
  // Another session's open snapshot (a report, a backup, autovacuum's analyze) holds back the horizon.
  const holder = hold ? await other.reserve() : undefined;
  if (holder) {
    await holder`begin isolation level repeatable read`;
    await holder`select 1 from control.dispatch_nodes limit 1`;
  }
  const cpu0 = cpuMsOf(pgPid, true);
  const t0 = performance.now();
  let done: Claimed[] = [];
  let last: Claimed | undefined;
  let n = 0;
  for (;;) {
    const after = mode === "cursor" && last?.run_at_us ? last : undefined;
    const rows = await sql<Claimed[]>`
      select id::text as id, at::text as at, run_at_us::text as run_at_us
        from control.dispatch_claim('bench', ${CLAIM}, ${done.map((e) => e.id)}::bigint[],
               ${done.map((e) => e.at)}::tid[], ${done.map(() => "1")}::float8[], null,
               ${after?.run_at_us ?? null}::bigint, ${after?.id ?? null}::bigint)
       order by id`;
    if (!rows.length) break;
    n += rows.length;
    done = rows;
    last = rows[rows.length - 1];
  }
  await sql`select from control.dispatch_claim('bench', 0, ${done.map((e) => e.id)}::bigint[],
              ${done.map((e) => e.at)}::tid[], ${done.map(() => "1")}::float8[], null)`;
  const ms = performance.now() - t0;
  const cpu = cpuMsOf(pgPid, true) - cpu0;
  if (holder) {
    await holder`rollback`;
    holder.release();
  }
  const b1 = await blocks(sql);
  if (n !== N) throw new Error(`Claimed ${n} events of ${N}`);
  return {
    system: `${mode === "head" ? "from the head" : "after the cursor"}${hold ? ", snapshot held" : ""}`,
    us_per_event: (ms * 1000) / N,
    pg_cpu_us_per_event: (cpu * 1000) / N,
    index_blocks_per_event: (b1.index - b0.index) / N,
    heap_blocks_per_event: (b1.heap - b0.heap) / N,
  };
}

const { dir, pg } = await benchPostgres("claims");
// One connection: claims one after another, as a single node's round trips.
const sql = connectPostgres(pg.url, { max: 1 });
const other = connectPostgres(pg.url, { max: 1 });
try {
  await migrate(sql, { log });
  await sql`create table public.bench_t (id bigserial primary key, v int)`;
  await sql`insert into control.dispatch_functions (name, code) values ('noop', 'export default () => {}')`;
  await sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
            values ('public', 'bench_t', 'noop')`;
  await sql`select control.dispatch_install('public', 'bench_t')`;
  await sql`insert into control.dispatch_nodes (node_id, host, pid, bind, lease_until)
            values ('bench', 'bench', 1, 'bench', 'infinity')`;
  await sql`alter table control.dispatch_queue set (autovacuum_enabled = false)`;
  const rounds: { rows: Row[]; ratio: number; held: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 ? ["cursor", "head"] as const : ["head", "cursor"] as const;
    const rows: Record<string, Row> = {};
    for (const hold of [false, true]) {
      for (const mode of order) rows[`${mode}${hold}`] = await run(sql, other, pg.process.pid, mode, hold);
    }
    const ratio = (hold: boolean) =>
      Number(
        (Number(rows[`head${hold}`].us_per_event) / Number(rows[`cursor${hold}`].us_per_event)).toFixed(3),
      );
    rounds.push({
      rows: [rows.headfalse, rows.cursorfalse, rows.headtrue, rows.cursortrue],
      ratio: ratio(false),
      held: ratio(true),
    });
  }
  const median = medianRound(rounds);
  report("claims", rounds.flatMap((x, r) => x.rows.map((row) => roundRow(row, r, ROUNDS))), {
    ratio: median.ratio,
    ratios: rounds.map((x) => x.ratio),
    // The same with another session's snapshot open for the whole run.
    snapshot_held_ratios: rounds.map((x) => x.held),
    events: N,
    claim: CLAIM,
    us_per_event: Number(Number(median.rows[1].us_per_event).toFixed(1)),
    head_us_per_event: Number(Number(median.rows[0].us_per_event).toFixed(1)),
  });
} finally {
  await sql.end({ timeout: 5 });
  await other.end({ timeout: 5 });
  await pg.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
