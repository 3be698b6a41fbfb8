/**
 * The event tables: a queue of pending and running events whose claims are HOT updates, a history of
 * finished ones, the `dispatch_events` view over both (readable and writable as the old table was), the
 * upgrade of a schema installed with the single events table, and the release of a dead node's events
 * exactly once per lease expiry.
 */
import assert from "node:assert/strict";
import { createTestDatabase, type TestDatabase, waitFor } from "../../shared/testing/mod.ts";
import { startTestNode } from "../../workers/dispatch/_testing.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { connectPostgres } from "../../shared/db.ts";
import { HISTORY_DELETE_BATCH, trimHistory } from "../../workers/dispatch/node.ts";

const count = async (db: TestDatabase, table: string) =>
  (await db.sql`select count(*)::int as n from ${db.sql("control")}.${db.sql(table)}`)[0].n as number;

type Conn = Awaited<ReturnType<TestDatabase["sql"]["reserve"]>>;

/** `public.<table>`, whose inserts queue events for a no-op function, and a live node `node` to claim as. */
async function noopTableAndNode(conn: Conn, table: string, node: string): Promise<void> {
  await conn`create table ${conn("public")}.${conn(table)} (id int primary key)`;
  await conn`insert into control.dispatch_functions (name, code) values ('noop', 'export default () => {}')`;
  await conn`insert into control.dispatch_triggers (table_schema, table_name, function_name)
             values ('public', ${table}, 'noop')`;
  await conn`select control.dispatch_install('public', ${table})`;
  await conn`insert into control.dispatch_nodes (node_id, host, pid, bind, lease_until)
             values (${node}, 'h', 1, 'b', now() + interval '1 hour')`;
}

/** Sequential and index scans of the queue so far (`conn`'s statistics flushed first). */
async function queueScans(conn: Conn): Promise<{ seq: number; idx: number }> {
  await conn`select pg_stat_force_next_flush()`;
  await conn`select pg_stat_clear_snapshot()`;
  const [s] = await conn`select seq_scan::int as seq, idx_scan::int as idx
                           from pg_stat_user_tables where relid = 'control.dispatch_queue'::regclass`;
  return s as { seq: number; idx: number };
}

Deno.test("finished events move from the queue to the history, and claims are HOT updates of the queue", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.items (id int primary key)`;
  await db.sql`insert into control.dispatch_functions (name, code, max_attempts, backoff_ms)
               values ('fine', 'export default () => {}', 5, 500),
                      ('bad', 'export default () => { throw new Error("no") }', 1, 1)`;
  await db.sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
               values ('public', 'items', 'fine'), ('public', 'items', 'bad')`;
  await db.sql`select control.dispatch_install('public', 'items')`;
  await db.sql`insert into public.items select g from generate_series(1, 40) g`;
  assert.equal(await count(db, "dispatch_queue"), 80);
  const [before] = await db.sql`select n_tup_upd::int as upd, n_tup_hot_upd::int as hot
                                  from pg_stat_user_tables where relid = 'control.dispatch_queue'::regclass`;
  {
    await using node = startTestNode(db);
    // At least: delivery is at least once, and a node stalled past its short test lease has its events
    // released and runs them again. The history below still holds each event once.
    await waitFor(
      "all finished",
      () => Promise.resolve(node.status.done >= 40 && node.status.failed >= 40),
    );
    await waitFor("all written", async () => (await count(db, "dispatch_history")) === 80);
  }
  assert.equal(await count(db, "dispatch_queue"), 0);
  const rows = await db.sql`select function_name, state, count(*)::int as n,
                                   bool_and(started_at >= created_at and finished_at >= started_at) as timed,
                                   bool_and(last_error is not distinct from
                                            case when state = 'dead' then 'no' end) as errors
                              from control.dispatch_events group by 1, 2 order by 1`;
  assert.deepEqual(rows.map((r) => ({ ...r })), [
    { function_name: "bad", state: "dead", n: 40, timed: true, errors: true },
    { function_name: "fine", state: "done", n: 40, timed: true, errors: true },
  ]);
  // Statistics reach the view a moment late.
  const [after] = await waitFor("statistics", async () => {
    await db.sql`select pg_stat_force_next_flush()`;
    const r = await db.sql`select n_tup_upd::int as upd, n_tup_hot_upd::int as hot
                             from pg_stat_user_tables where relid = 'control.dispatch_queue'::regclass`;
    return r[0].upd - before.upd >= 80 && r;
  });
  // Every event was claimed once, and a claim changes no indexed column, so it can be a HOT update (no
  // index entry). Postgres makes one HOT only while the page has room for the new version: a burst of
  // claims on the same pages before they are pruned makes some ordinary updates, so half at least. With
  // an index on a column a claim changes (state, claimed_by), none would be.
  assert.ok(
    after.hot - before.hot >= 40,
    `HOT updates: ${after.hot - before.hot} of ${after.upd - before.upd}`,
  );
});

Deno.test("the events view is writable: inserts, retries and deletes land in the right table", async () => {
  await using db = await createTestDatabase();
  await db.sql`insert into control.dispatch_functions (name, code) values ('f', 'export default () => {}')`;
  const [dead] = await db.sql`insert into control.dispatch_events (function_name, state, last_error, attempts)
                              values ('f', 'dead', 'boom', 3) returning id::text, state, source, created_at`;
  assert.equal(dead.state, "dead");
  assert.equal(dead.source, "trigger");
  assert.ok(dead.created_at);
  assert.equal(await count(db, "dispatch_history"), 1);

  // A manual retry moves it back to the queue (and nudges the nodes).
  const retried = await db.sql`update control.dispatch_events set state = 'pending', attempts = 0
                                where id = ${dead.id} and state = 'dead' returning id`;
  assert.equal(retried.length, 1);
  assert.equal(await count(db, "dispatch_history"), 0);
  const [q] = await db.sql`select state, attempts, last_error from control.dispatch_queue`;
  assert.deepEqual({ ...q }, { state: "pending", attempts: 0, last_error: "boom" });
  // In place within the queue, then out of it.
  await db.sql`update control.dispatch_events set run_at = now() + interval '1 hour' where id = ${dead.id}`;
  assert.equal(await count(db, "dispatch_queue"), 1);
  await db.sql`delete from control.dispatch_events where id = ${dead.id}`;
  assert.equal(await count(db, "dispatch_queue"), 0);
  await assert.rejects(
    db.sql`insert into control.dispatch_events (function_name, state) values ('f', 'lost')`,
    /is not pending, running, done or dead/,
  );
});

Deno.test("deleting a function deletes its events; an event whose function is gone ends dead with the reason", async () => {
  await using db = await createTestDatabase();
  await db.sql`insert into control.dispatch_functions (name, code) values ('f', 'export default () => {}'),
                                                                         ('g', 'export default () => {}')`;
  await db
    .sql`insert into control.dispatch_events (function_name, state) values ('f', 'pending'), ('f', 'done'),
                                                                                ('g', 'done')`;
  await db.sql`delete from control.dispatch_functions where name = 'f'`;
  assert.deepEqual(
    (await db.sql`select function_name from control.dispatch_events`).map((r) => r.function_name),
    [
      "g",
    ],
  );
  await db.sql`insert into control.dispatch_queue (function_name, source) values ('ghost', 'manual')`;
  await using _node = startTestNode(db);
  const [e] = await waitFor("dead", async () => {
    const r = await db
      .sql`select state, last_error from control.dispatch_events where function_name = 'ghost'`;
    return r[0]?.state === "dead" && r;
  });
  assert.equal(e.last_error, "Function no longer exists");
});

Deno.test("a schema installed with the single events table is upgraded with its events and ids kept", async () => {
  await using db = await createTestDatabase();
  // The layout of migrations 0020/0021, in a schema of its own.
  await db.sql.unsafe(`
    create schema legacy;
    create table legacy.dispatch_functions (name text primary key, code text not null, signature text,
      timeout_ms integer not null default 5000, max_attempts integer not null default 5,
      backoff_ms integer not null default 500, enabled boolean not null default true,
      created_at timestamptz not null default now(), updated_at timestamptz not null default now());
    create table legacy.dispatch_events (
      id bigserial primary key,
      function_name text not null references legacy.dispatch_functions (name) on delete cascade,
      source text not null default 'trigger', table_schema text, table_name text, op text, row_id text,
      new_row jsonb, old_row jsonb, state text not null default 'pending', attempts integer not null default 0,
      run_at timestamptz not null default now(), created_at timestamptz not null default clock_timestamp(),
      claimed_by text, claimed_at timestamptz, started_at timestamptz, finished_at timestamptz,
      last_error text, last_stack text);
    create table legacy.dispatch_nodes (node_id text primary key, host text not null, pid integer not null,
      bind text not null, started_at timestamptz not null default now(),
      heartbeat_at timestamptz not null default now(), lease_until timestamptz not null, stopped_at timestamptz);
    insert into legacy.dispatch_functions (name, code) values ('f', 'export default () => {}');
    insert into legacy.dispatch_events (function_name, state, new_row, last_error)
      values ('f', 'pending', '{"a": 1}', null), ('f', 'running', null, null), ('f', 'done', null, null),
             ('f', 'dead', null, 'boom');
  `);
  await db.sql`select control.dispatch_install_schema('legacy')`;
  const rows = await db
    .sql`select id::int, state, new_row, last_error from legacy.dispatch_events order by id`;
  assert.deepEqual(rows.map((r) => ({ ...r })), [
    { id: 1, state: "pending", new_row: { a: 1 }, last_error: null },
    { id: 2, state: "running", new_row: null, last_error: null },
    { id: 3, state: "done", new_row: null, last_error: null },
    { id: 4, state: "dead", new_row: null, last_error: "boom" },
  ]);
  assert.equal((await db.sql`select count(*)::int as n from legacy.dispatch_queue`)[0].n, 2);
  assert.equal((await db.sql`select count(*)::int as n from legacy.dispatch_history`)[0].n, 2);
  const [next] = await db
    .sql`insert into legacy.dispatch_events (function_name) values ('f') returning id::int`;
  assert.equal(next.id, 5);
  const [kind] = await db.sql`select relkind from pg_class where oid = 'legacy.dispatch_events'::regclass`;
  assert.equal(kind.relkind, "v");
  // Installing again changes nothing.
  await db.sql`select control.dispatch_install_schema('legacy')`;
  assert.equal((await db.sql`select count(*)::int as n from legacy.dispatch_events`)[0].n, 5);
});

Deno.test("a dead node's events are released once per lease expiry, and its node is marked released", async () => {
  await using db = await createTestDatabase();
  await db.sql`insert into control.dispatch_functions (name, code) values ('f', 'export default () => {}')`;
  await db.sql`insert into control.dispatch_nodes (node_id, host, pid, bind, lease_until)
               values ('gone', 'h', 1, 'x:1', now() - interval '1 second')`;
  await db.sql`insert into control.dispatch_events (function_name, source, state, claimed_by, attempts)
               values ('f', 'manual', 'running', 'gone', 1)`;
  await using _node = startTestNode(db);
  await waitFor("released and done", async () => {
    const r = await db.sql`select state from control.dispatch_events`;
    return r[0].state === "done";
  });
  const [gone] = await db.sql`select released from control.dispatch_nodes where node_id = 'gone'`;
  assert.equal(gone.released, true);
});

Deno.test("a node the master released claims nothing until its heartbeat renews its lease", async () => {
  await using db = await createTestDatabase();
  await db.sql`insert into control.dispatch_functions (name, code) values ('f', 'export default () => {}')`;
  // A long lease: the next heartbeat is 20 s away.
  await using node = startTestNode(db, { nodeId: "slow-beat", leaseMs: 60_000 });
  // Master after its first heartbeat, which is the last one for a while.
  await waitFor("first heartbeat", () => Promise.resolve(node.status.master));
  await db.sql`update control.dispatch_nodes set released = true`;
  await db.sql`insert into control.dispatch_events (function_name, source) values ('f', 'manual')`;
  await abortableSleep(1_000);
  assert.equal(node.status.done, 0);
  assert.equal((await db.sql`select state from control.dispatch_events`)[0].state, "pending");
  // What a heartbeat does: the node claims again.
  await db.sql`update control.dispatch_nodes set released = false`;
  await waitFor("done", () => Promise.resolve(node.status.done === 1));
});

Deno.test("the master deletes finished events past the retention, oldest first, and keeps dead ones", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await sql`insert into control.dispatch_functions (name, code) values ('noop', 'export default () => {}')`;
  // 12 events created 10 days ago (every third of them dead), 3 created an hour ago.
  await sql`
    insert into control.dispatch_history (id, function_name, source, state, attempts, run_at, created_at,
                                          started_at, finished_at)
    select g, 'noop', 'manual', case when g % 3 = 0 then 'dead' else 'done' end, 1, t, t, t, t
      from generate_series(1, 15) g,
           lateral (select now() - case when g <= 12 then interval '10 days' else interval '1 hour' end as t) x`;
  const ids = async () =>
    (await sql<{ id: string }[]>`select id from control.dispatch_history order by id`).map((r) =>
      String(r.id)
    );
  assert.equal(await trimHistory(sql, "control", 24 * 30), 0, "nothing is older than 30 days");
  assert.equal(await trimHistory(sql, "control", 24), 8);
  assert.deepEqual(await ids(), ["3", "6", "9", "12", "13", "14", "15"]);
  assert.equal(await trimHistory(sql, "control", 24), 0, "a trimmed history costs a pass nothing");

  // A running master trims on its own, a batch of at most HISTORY_DELETE_BATCH events at a time (ids follow
  // creation order: the recent events go, and more, older ones come after them).
  await sql`delete from control.dispatch_history where id > 12`;
  await sql`
    insert into control.dispatch_history (id, function_name, source, state, attempts, run_at, created_at,
                                          started_at, finished_at)
    select 100 + g, 'noop', 'manual', 'done', 1, t, t, t, now()
      from generate_series(1, ${HISTORY_DELETE_BATCH + 10}) g, (select now() - interval '3 hours' as t) x`;
  await using _node = startTestNode(db, { nodeId: "trimmer", historyHours: 2 });
  const end = performance.now() + 10_000;
  while ((await ids()).length > 4 && performance.now() < end) await abortableSleep(100);
  assert.deepEqual(await ids(), ["3", "6", "9", "12"]);
});

Deno.test("a burst after the queue was analyzed in a quiet moment is claimed and finished without a scan of the queue", async () => {
  await using db = await createTestDatabase();
  // Everything here runs on one connection, whose statistics are flushed before each reading.
  const conn = await db.sql.reserve();
  try {
    await noopTableAndNode(conn, "burst", "probe");
    // A quiet moment when autovacuum looks: a few events running, none pending. Then a burst.
    await conn`insert into public.burst select g from generate_series(1, 200) g`;
    await conn`update control.dispatch_queue set state = 'running', claimed_by = 'probe'`;
    await conn`analyze control.dispatch_queue`;
    await conn`insert into public.burst select g from generate_series(201, 10200) g`;
    const scans = () => queueScans(conn);
    /** What `run` did to the queue's scan counts, in a transaction rolled back afterwards. */
    const scansOf = async (run: () => Promise<unknown>) => {
      const before = await scans();
      await conn`begin`;
      const rows = await run();
      await conn`rollback`;
      const after = await scans();
      return { rows, seq: after.seq - before.seq, idx: after.idx - before.idx };
    };
    // The statement a claim's choice of events used to be: the planner, misled, reads the whole backlog.
    const plain = await scansOf(() =>
      conn`select id from control.dispatch_queue
            where state = 'pending' and run_at <= clock_timestamp()
            order by run_at, id limit 64 for update skip locked`
    );
    assert.equal(plain.seq, 1, "the setup no longer misleads the planner: this test proves nothing");

    // A node's round trip: outcomes of 64 running events (half done, by tuple id; half retried, by key), then
    // a claim of 64.
    const running = await conn<{ id: string; at: string }[]>`
      select id::text as id, ctid::text as at from control.dispatch_queue where id <= 64 order by id`;
    const doneEvs = running.filter((_, i) => i % 2);
    const retries = running.filter((_, i) => !(i % 2)).map((r) => ({
      id: Number(r.id),
      state: "pending",
      delay_ms: 60_000,
      error: null,
      stack: null,
      start_ms: 1,
    }));
    const round = await scansOf(async () => {
      const claimed = await conn`
        select id::int as id from control.dispatch_claim('probe', 64, ${doneEvs.map((r) => r.id)}::bigint[],
          ${doneEvs.map((r) => r.at)}::tid[], ${doneEvs.map(() => "1")}::float8[], ${conn.json(retries)})
         order by id`;
      const [moved] = await conn`select count(*)::int as n from control.dispatch_history`;
      const [retried] = await conn`select count(*)::int as n from control.dispatch_queue
                                    where state = 'pending' and id <= 64`;
      return { claimed: claimed.map((r) => r.id), moved: moved.n, retried: retried.n };
    });
    // The first 64 pending events in order; the done ones in the history, the others pending again.
    assert.deepEqual(round.rows, {
      claimed: Array.from({ length: 64 }, (_, i) => 201 + i),
      moved: 32,
      retried: 32,
    });
    assert.equal(round.seq, 0);
    assert.ok(round.idx >= 3, `index scans: ${round.idx}`);

    // A node working through the whole burst never scans the queue either. It has a pool of its own,
    // ended before the reading: a backend flushes its statistics when it exits.
    const before = await scans();
    const nodeSql = connectPostgres(db.url, { max: 4 });
    try {
      await using node = startTestNode(db, {
        sql: nodeSql,
        functionSql: nodeSql,
        leaseMs: 5_000,
        concurrency: 8,
        prefetch: 64,
      });
      await waitFor("the burst done", () => Promise.resolve(node.status.done >= 10_000), 60_000);
    } finally {
      await nodeSql.end();
    }
    // Claims (at most 72 events each) each scan the ready index (done events are then found by tuple id).
    const after = await waitFor("the node's statistics", async () => {
      const s = await scans();
      return s.idx - before.idx >= Math.ceil(10_000 / 72) && s;
    }, 10_000);
    assert.equal(after.seq - before.seq, 0);
    const [done] = await conn`select count(*)::int as n from control.dispatch_history where state = 'done'`;
    assert.equal(done.n, 10_000);
  } finally {
    conn.release();
  }
});

Deno.test("done events are found by the tuple id their claim returned, by key once the queue was rewritten, and never as another event", async () => {
  await using db = await createTestDatabase();
  const conn = await db.sql.reserve();
  try {
    await noopTableAndNode(conn, "t", "n");
    await conn`insert into public.t select g from generate_series(1, 30) g`;
    const claimed = await conn<{ id: string; at: string }[]>`
      select id::text as id, at::text as at from control.dispatch_claim('n', 30, null, null, null, null) order by id`;
    assert.equal(claimed.length, 30);
    const idxScans = async () => (await queueScans(conn)).idx;
    const finish = (evs: { id: string; at: string | null }[]) =>
      conn`select from control.dispatch_claim('n', 0, ${evs.map((e) => e.id)}::bigint[],
             ${evs.map((e) => e.at)}::tid[], ${evs.map(() => "2.5")}::float8[], null)`;
    const history = async () =>
      (await conn<{ id: string }[]>`select id::text as id from control.dispatch_history order by id`).map((
        r,
      ) => r.id);

    // Through the tuple ids the claim returned: no index is read, and the start time is kept.
    const before = await idxScans();
    await finish(claimed.slice(0, 10));
    assert.equal(await idxScans() - before, 0, "done events looked up by key, not by tuple id");
    assert.deepEqual(await history(), claimed.slice(0, 10).map((e) => e.id));
    const [started] = await conn`select bool_and(started_at = claimed_at + interval '2.5 ms') as ok
                                   from control.dispatch_history`;
    assert.ok(started.ok);

    // A tuple id that holds another running event: that event is left alone, the right one found by key.
    const [a, b] = claimed.slice(10, 12);
    await finish([{ id: a.id, at: b.at }, { id: "999999", at: b.at }]);
    assert.deepEqual(await history(), [...claimed.slice(0, 10), a].map((e) => e.id));
    const [bState] = await conn`select state from control.dispatch_queue where id = ${b.id}`;
    assert.equal(bState.state, "running");

    // The queue rewritten: the tuple ids the node holds point elsewhere or nowhere; the events are found by
    // key. Unknown tuple ids (null) too.
    await conn`vacuum full control.dispatch_queue`;
    const moved = await conn<{ id: string; at: string }[]>`
      select id::text as id, ctid::text as at from control.dispatch_queue order by id`;
    const rest = claimed.slice(11);
    assert.ok(
      rest.some((e) => moved.find((m) => m.id === e.id)?.at !== e.at),
      "the rewrite moved no event: this test proves nothing",
    );
    await finish(rest.slice(0, 15));
    await finish(rest.slice(15).map((e) => ({ id: e.id, at: null })));
    assert.deepEqual(await history(), claimed.map((e) => e.id));
    assert.equal((await conn`select count(*)::int as n from control.dispatch_queue`)[0].n, 0);
  } finally {
    conn.release();
  }
});

/** Blocks of the ready index read so far (`conn`'s statistics flushed first). */
async function readyIndexBlocks(conn: Conn): Promise<number> {
  await conn`select pg_stat_force_next_flush()`;
  await conn`select pg_stat_clear_snapshot()`;
  const [s] = await conn`select (idx_blks_hit + idx_blks_read)::int as n from pg_statio_user_indexes
                          where indexrelid = 'control.dispatch_queue_ready_idx'::regclass`;
  return s.n;
}

Deno.test("a claim starts after the node's cursor, not at the finished events' entries, and still finds events behind it", async () => {
  await using db = await createTestDatabase();
  const conn = await db.sql.reserve();
  try {
    await noopTableAndNode(conn, "t", "n");
    // The finished events' entries stay in the index until vacuum: none runs during this test.
    await conn`alter table control.dispatch_queue set (autovacuum_enabled = false)`;
    await conn`insert into public.t select g from generate_series(1, 20000) g`;
    type Row = { id: string; at: string; run_at_us: string };
    const claim = (limit: number, done: Row[], after: Row | null) =>
      conn<Row[]>`
        select id::text as id, at::text as at, run_at_us::text as run_at_us
          from control.dispatch_claim('n', ${limit}, ${done.map((e) => e.id)}::bigint[],
                 ${done.map((e) => e.at)}::tid[], ${done.map(() => "1")}::float8[], null,
                 ${after?.run_at_us ?? null}::bigint, ${after?.id ?? null}::bigint)
         order by id`;
    // Claimed and finished in order, 500 at a time, each claim after the last one's last event.
    let done: Row[] = [];
    let last: Row | null = null;
    for (let i = 0; i < 30; i++) {
      done = await claim(500, done, last);
      assert.equal(done.length, 500);
      last = done[done.length - 1];
    }
    await claim(0, done, null);
    assert.equal(last!.id, "15000");
    // Run in a transaction rolled back: what a claim read of the ready index, and the events it took.
    const probe = async (limit: number, after: Row | null) => {
      const before = await readyIndexBlocks(conn);
      await conn`begin`;
      const rows = await claim(limit, [], after);
      await conn`rollback`;
      return { blocks: await readyIndexBlocks(conn) - before, ids: rows.map((r) => Number(r.id)) };
    };
    // The cursor first: a claim rolled back leaves row versions behind on the pages of the events it took,
    // and the next claim of the same events may then find no room for a HOT update and write index entries.
    const fromCursor = await probe(20, last);
    const fromHead = await probe(20, null);
    assert.deepEqual(fromHead.ids, fromCursor.ids);
    assert.deepEqual(fromCursor.ids, Array.from({ length: 20 }, (_, i) => 15001 + i));
    assert.ok(fromHead.blocks >= 60, `from the head: ${fromHead.blocks} blocks (the test proves nothing)`);
    assert.ok(
      fromCursor.blocks * 4 <= fromHead.blocks,
      `after the cursor: ${fromCursor.blocks} blocks, from the head: ${fromHead.blocks}`,
    );

    // An event behind the cursor (handed back): a full claim after the cursor leaves it for later, a claim
    // from the head takes it first, and so does a claim after the cursor that finds too few events there.
    const [back] = await conn<Row[]>`
      select id::text as id from control.dispatch_claim('n', 1, null, null, null, null, null, null)`;
    assert.equal(back.id, "15001");
    await conn`update control.dispatch_queue set state = 'pending', claimed_by = null where id = 15001`;
    assert.deepEqual(
      (await probe(10, { ...back, run_at_us: last!.run_at_us, id: "15001" })).ids.slice(0, 1),
      [
        15002,
      ],
    );
    assert.deepEqual((await probe(10, null)).ids.slice(0, 1), [15001]);
    const lastAhead = await probe(5010, { ...back, run_at_us: last!.run_at_us, id: "15001" });
    assert.equal(lastAhead.ids.length, 5000);
    assert.ok(lastAhead.ids.includes(15001));
  } finally {
    conn.release();
  }
});

Deno.test("while a backlog keeps every claim full, an event behind a node's cursor still runs within about a second", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.t (id int primary key)`;
  await db.sql`insert into control.dispatch_functions (name, code)
               values ('slow', 'export default () => new Promise((r) => setTimeout(r, 5))')`;
  await db.sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
               values ('public', 't', 'slow')`;
  await db.sql`select control.dispatch_install('public', 't')`;
  await db.sql`insert into public.t select g from generate_series(1, 4000) g`;
  await using node = startTestNode(db, { leaseMs: 5_000, concurrency: 2, prefetch: 4 });
  await waitFor("the node under way", () => Promise.resolve(node.status.done >= 100), 30_000);
  // Recorded an hour back: behind the node's cursor, which is at the backlog's events by now.
  const [late] = await db.sql`
    insert into control.dispatch_queue (function_name, source, run_at)
    values ('slow', 'manual', now() - interval '1 hour') returning id`;
  const t0 = performance.now();
  await waitFor(
    "the late event done",
    async () => {
      const [h] = await db
        .sql`select 1 from control.dispatch_history where id = ${late.id} and state = 'done'`;
      return Boolean(h);
    },
    30_000,
    20,
  );
  const took = performance.now() - t0;
  const [left] = await db.sql`select count(*)::int as n from control.dispatch_queue where state = 'pending'`;
  assert.ok(
    left.n >= 500,
    `the late event ran only once the backlog was nearly gone (${left.n} pending left)`,
  );
  assert.ok(took < 5_000, `the late event ran after ${Math.round(took)} ms`);
});
