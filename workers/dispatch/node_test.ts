import assert from "node:assert/strict";
import { createLogger } from "../../shared/log.ts";
import { createTestDatabase, type TestDatabase, waitFor } from "../../shared/testing/mod.ts";
import { startTestNode } from "./_testing.ts";
import { OutcomeWriter } from "./outcomes.ts";
import { QUICK_WORKERS, retryDelayMs, tryAcquireMaster } from "./node.ts";
import { exportPublicKey, importTrustedKeys, signCode } from "./sign.ts";

const RECORD = `export default async (e, db) => {
  await db.sql\`insert into public.seen (event_id, payload) values (\${e.id}, \${JSON.stringify(e)}::text::jsonb)\`;
}`;

async function setup(db: TestDatabase) {
  await db.sql`create table public.seen (event_id bigint, payload jsonb)`;
  await db.sql`create table public.things (id int primary key, v text)`;
  await db
    .sql`insert into control.dispatch_functions (name, code, timeout_ms) values ('record', ${RECORD}, 60000)`;
  await db.sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
               values ('public', 'things', 'record')`;
  await db.sql`select control.dispatch_install('public', 'things')`;
}

Deno.test("a table change runs the function with table, op, id, new row and old row", async () => {
  await using db = await createTestDatabase();
  await setup(db);
  await using _node = startTestNode(db);
  await db.sql`insert into public.things values (1, 'a')`;
  await db.sql`update public.things set v = 'b' where id = 1`;
  await db.sql`delete from public.things where id = 1`;
  const rows = await waitFor("three events", async () => {
    const r = await db.sql<
      { payload: Record<string, unknown> }[]
    >`select payload from public.seen order by event_id`;
    return r.length === 3 && r;
  });
  const p = rows.map((r) => r.payload);
  assert.deepEqual(p.map((x) => [x.table, x.op, x.row_id, x.new, x.old]), [
    ["public.things", "insert", "1", { id: 1, v: "a" }, null],
    ["public.things", "update", "1", { id: 1, v: "b" }, { id: 1, v: "a" }],
    ["public.things", "delete", "1", null, { id: 1, v: "b" }],
  ]);
  const states = await waitFor("three outcomes", async () => {
    const r = await db.sql`select state, attempts from control.dispatch_events order by id`;
    return r.every((e) => e.state !== "running") && r;
  });
  assert.deepEqual(states.map((s) => [s.state, s.attempts]), [["done", 1], ["done", 1], ["done", 1]]);
});

Deno.test("a failing function is retried with backoff up to its limit, then dead with error and stack", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.tries (at timestamptz default clock_timestamp())`;
  await db
    .sql`insert into control.dispatch_functions (name, code, max_attempts, backoff_ms, timeout_ms) values
    ('flaky', ${`export default async (e, db) => { await db.sql\`insert into public.tries default values\`; throw new Error("boom " + e.attempt); }`}, 4, 100, 60000)`;
  await using _node = startTestNode(db);
  await db.sql`insert into control.dispatch_events (function_name, source) values ('flaky', 'manual')`;
  const ev = await waitFor("dead event", async () => {
    const [e] = await db.sql`select * from control.dispatch_events`;
    return e.state === "dead" && e;
  });
  assert.equal(ev.attempts, 4);
  assert.equal(ev.last_error, "boom 4");
  assert.match(ev.last_stack, /Error: boom 4/);
  const tries = await db.sql<{ at: Date }[]>`select at from public.tries order by at`;
  assert.equal(tries.length, 4);
  const gaps = tries.slice(1).map((t, i) => t.at.getTime() - tries[i].at.getTime());
  // Jittered delays are at least half of 100, 200, 400 ms.
  gaps.forEach((g, i) => assert.ok(g >= 50 * 2 ** i, `gap ${i} was ${g} ms`));
  for (let a = 1; a <= 5; a++) {
    const d = retryDelayMs(100, a);
    assert.ok(d >= 50 * 2 ** (a - 1) && d <= 100 * 2 ** (a - 1));
  }
});

Deno.test("only code signed by a trusted key runs; tampered and unsigned code is refused with a reason", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.seen (event_id bigint, payload jsonb)`;
  const pair = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
  const keys = await importTrustedKeys([await exportPublicKey(pair.publicKey)]);
  const sig = await signCode(pair.privateKey, RECORD);
  await db.sql`insert into control.dispatch_functions (name, code, signature, timeout_ms) values
    ('signed', ${RECORD}, ${sig}, 60000),
    ('tampered', ${RECORD + "\n// changed"}, ${sig}, 60000),
    ('unsigned', ${RECORD}, null, 60000)`;
  await using _node = startTestNode(db, { trustedKeys: keys });
  await db.sql`insert into control.dispatch_events (function_name, source)
               values ('signed', 'manual'), ('tampered', 'manual'), ('unsigned', 'manual')`;
  const evs = await waitFor("all settled", async () => {
    const r = await db.sql`select function_name, state, last_error from control.dispatch_events order by id`;
    return r.every((e) => e.state === "done" || e.state === "dead") && r;
  });
  assert.deepEqual(evs.map((e) => [e.function_name, e.state, e.last_error]), [
    ["signed", "done", null],
    ["tampered", "dead", "Cannot run function as its signature does not match a trusted key"],
    ["unsigned", "dead", "Cannot run function as it is not signed"],
  ]);
  assert.equal((await db.sql`select count(*)::int as n from public.seen`)[0].n, 1);
});

Deno.test("a function that hangs is stopped by its timeout and the node goes on with the next event", async () => {
  await using db = await createTestDatabase();
  await setup(db);
  await db.sql`insert into control.dispatch_functions (name, code, timeout_ms, max_attempts) values
    ('spin', 'export default () => { while (true) {} }', 200, 1)`;
  await using _node = startTestNode(db);
  await db.sql`insert into control.dispatch_events (function_name, source) values ('spin', 'manual')`;
  await db.sql`insert into public.things values (7, 'after')`;
  await waitFor("record ran", async () => (await db.sql`select 1 from public.seen`).length === 1);
  const [spin] = await waitFor("spin dead", async () => {
    const r = await db
      .sql`select state, last_error from control.dispatch_events where function_name = 'spin'`;
    return r[0].state === "dead" && r;
  });
  assert.equal(spin.last_error, "Function timed out after 200 ms");
});

Deno.test("a due schedule enqueues an event run by the master and gets its next run time", async () => {
  await using db = await createTestDatabase();
  await setup(db);
  await db.sql`insert into control.dispatch_schedules (function_name, cron, next_run_at)
               values ('record', '*/5 * * * *', now() - interval '1 second')`;
  await using node = startTestNode(db);
  const [seen] = await waitFor("scheduled run", async () => {
    const r = await db.sql`select payload from public.seen`;
    return r.length > 0 && r;
  });
  assert.equal(seen.payload.source, "schedule");
  assert.ok(node.status.master);
  const [s] = await db.sql`select next_run_at, last_run_at from control.dispatch_schedules`;
  assert.ok(s.last_run_at);
  assert.ok(s.next_run_at > new Date());
  assert.equal(new Date(s.next_run_at).getUTCMinutes() % 5, 0);
});

Deno.test("events claimed by a node whose lease expired are released and run by another node", async () => {
  await using db = await createTestDatabase();
  await setup(db);
  await db.sql`insert into control.dispatch_nodes (node_id, host, pid, bind, lease_until)
               values ('gone', 'h', 1, 'x:1', now() - interval '1 second')`;
  await db.sql`insert into control.dispatch_events (function_name, source, state, claimed_by, attempts)
               values ('record', 'manual', 'running', 'gone', 1)`;
  await using _node = startTestNode(db);
  const [ev] = await waitFor("released and done", async () => {
    const r = await db.sql`select state, attempts, claimed_by from control.dispatch_events`;
    return r[0].state === "done" && r;
  });
  assert.equal(ev.attempts, 2);
  assert.notEqual(ev.claimed_by, "gone");
});

Deno.test("under repeated races for an expired lease exactly one node becomes master each time", async () => {
  await using db = await createTestDatabase();
  for (let round = 0; round < 20; round++) {
    await db.sql`update control.dispatch_leases set lease_until = now() - interval '1 second'`;
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => tryAcquireMaster(db.sql, "control", `r${round}-${i}`, 60_000)),
    );
    assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
    // While the lease is held, nobody else gets it, and the holder renews it.
    const winner = results.indexOf(true);
    assert.equal(await tryAcquireMaster(db.sql, "control", `other-${round}`, 60_000), false);
    assert.equal(await tryAcquireMaster(db.sql, "control", `r${round}-${winner}`, 60_000), true);
  }
  const [l] = await db.sql`select term from control.dispatch_leases`;
  assert.equal(Number(l.term), 20);
});

Deno.test("a graceful stop hands back events claimed but not started, without counting an attempt", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.tries (event_id bigint)`;
  await db.sql`insert into control.dispatch_functions (name, code, timeout_ms) values ('slow',
    ${`export default async (e, db) => {
      await db.sql\`insert into public.tries values (\${e.id})\`;
      await new Promise((r) => setTimeout(r, 400));
    }`}, 60000)`;
  await db.sql`insert into control.dispatch_events (function_name, source)
               select 'slow', 'manual' from generate_series(1, 6)`;
  const node = startTestNode(db, { nodeId: "stopper", concurrency: 1, prefetch: 3 });
  await waitFor("first start", async () => (await db.sql`select 1 from public.tries`).length === 1);
  const [held] = await db.sql`select count(*)::int as n from control.dispatch_events
                              where state = 'running' and claimed_by = 'stopper'`;
  assert.equal(held.n, 4, "one running and three claimed ahead");
  await node.stop();
  const rows = await db.sql`select state, attempts, claimed_by from control.dispatch_events order by id`;
  assert.deepEqual(rows.map((r) => [r.state, r.attempts, r.claimed_by]), [
    ["done", 1, "stopper"],
    ...Array.from({ length: 5 }, () => ["pending", 0, null]),
  ]);
});

Deno.test("outcomes are written in batches and only for events still running under the node", async () => {
  await using db = await createTestDatabase();
  await db.sql`insert into control.dispatch_functions (name, code) values ('f', 'export default () => {}')`;
  await db.sql`insert into control.dispatch_events (function_name, state, claimed_by, claimed_at, attempts)
               select 'f', 'running', 'w', now(), 1 from generate_series(1, 50)`;
  // One of them was meanwhile released to another node: its late outcome must not touch it.
  await db
    .sql`update control.dispatch_events set claimed_by = 'other' where id = (select min(id) from control.dispatch_events)`;
  const ids = (await db.sql`select id::text from control.dispatch_events order by id`).map((r) =>
    r.id as string
  );
  const writer = new OutcomeWriter(db.sql, "control", "w", createLogger("t", { level: "error" }));
  ids.forEach((id, i) =>
    writer.add(
      i % 2
        ? { id, state: "done", startMs: 5 }
        : { id, state: "pending", delayMs: 60_000, error: "x", stack: "s" },
    )
  );
  await writer.drain();
  assert.equal(writer.flushes, 1);
  const rows = await db.sql`select state, claimed_by, last_error, run_at > now() as later,
                                   coalesce(started_at = claimed_at + interval '5 ms', false) as started
                              from control.dispatch_events order by id`;
  assert.deepEqual(rows[0], {
    state: "running",
    claimed_by: "other",
    last_error: null,
    later: false,
    started: false,
  });
  assert.deepEqual(rows[1], {
    state: "done",
    claimed_by: "w",
    last_error: null,
    later: false,
    started: true,
  });
  assert.deepEqual(rows[2], {
    state: "pending",
    claimed_by: null,
    last_error: "x",
    later: true,
    started: false,
  });
  assert.equal(rows.filter((r) => r.state === "done").length, 25);
});

Deno.test("a burst of a quick function runs on one sandbox worker per core, not one per free slot", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table public.burst (id int primary key)`;
  await db
    .sql`insert into control.dispatch_functions (name, code) values ('noop', 'export default () => {}')`;
  await db.sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
               values ('public', 'burst', 'noop')`;
  await db.sql`select control.dispatch_install('public', 'burst')`;
  const concurrency = QUICK_WORKERS * 8;
  await using node = startTestNode(db, { concurrency, prefetch: 256, leaseMs: 5_000 });
  // Lone events first: the node learns the function is quick.
  for (let i = 1; i <= 3; i++) {
    await db.sql`insert into public.burst values (${i})`;
    await waitFor("a lone event", () => Promise.resolve(node.status.done >= i), 10_000, 10);
  }
  const before = node.status.workersStarted ?? 0;
  await db.sql`insert into public.burst select g from generate_series(4, 5003) g`;
  await waitFor("the burst", () => Promise.resolve(node.status.done >= 5003), 60_000, 20);
  const started = (node.status.workersStarted ?? 0) - before;
  assert.ok(
    started <= QUICK_WORKERS,
    `${started} sandbox workers started for the burst (cores: ${QUICK_WORKERS})`,
  );
  // A run counts as done when its function returns; its outcome is written a moment later.
  const written = await waitFor(
    "the burst written",
    async () => {
      const [h] = await db.sql`select count(*)::int as n from control.dispatch_history where state = 'done'`;
      return h.n >= 5003 && h.n;
    },
    10_000,
    20,
  );
  assert.equal(written, 5003);
});
