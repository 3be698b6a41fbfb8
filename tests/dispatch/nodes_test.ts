import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";

const MAIN = fromFileUrl(new URL("../../workers/dispatch/main.ts", import.meta.url));

function spawnNode(url: string): Deno.ChildProcess {
  const keep = ["HOME", "PATH", "DENO_DIR", "TMPDIR", "LANG"];
  const env: Record<string, string> = {};
  for (const k of keep) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-worker-options", MAIN],
    clearEnv: true,
    env: {
      ...env,
      DATABASE_URL: url,
      OPS_PORT: "0",
      DISPATCH_LEASE_MS: "1000",
      DISPATCH_POLL_MS: "200",
      DISPATCH_CONCURRENCY: "4",
      WHARF_LOG_LEVEL: "warn",
    },
    stdout: "null",
    stderr: "null",
  }).spawn();
}

Deno.test("three nodes with the master killed by SIGKILL mid-run execute every event at least once, with one master at a time", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await sql`create table public.jobs (id int primary key)`;
  await sql`create table public.runs (event_id bigint, node text, at timestamptz default clock_timestamp())`;
  await sql`insert into control.dispatch_functions (name, code, max_attempts, backoff_ms) values ('work',
    ${`export default async (e, db) => {
      await new Promise((r) => setTimeout(r, 30));
      await db.sql\`insert into public.runs (event_id) values (\${e.id})\`;
    }`}, 10, 50)`;
  await sql`insert into control.dispatch_triggers (table_schema, table_name, function_name) values ('public', 'jobs', 'work')`;
  await sql`select control.dispatch_install('public', 'jobs')`;

  const nodes = [spawnNode(db.url), spawnNode(db.url), spawnNode(db.url)];
  const alive = new Set(nodes);
  try {
    // Wait for all three to register and one to lead.
    const end0 = performance.now() + 30_000;
    while (performance.now() < end0) {
      const [n] = await sql`select count(*)::int as n from control.dispatch_nodes`;
      const [l] = await sql`select holder from control.dispatch_leases where lease_until > now()`;
      if (n.n === 3 && l?.holder) break;
      await abortableSleep(100);
    }
    const TOTAL = 400;
    await sql`insert into public.jobs select generate_series(1, ${TOTAL})`;

    // Watch the lease: at every sample at most one live holder, and the lease row is the only way to lead.
    const holders: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const rows = await sql`select holder from control.dispatch_leases where lease_until > now()`;
        assert.ok(rows.length <= 1);
        if (rows[0]?.holder && holders.at(-1) !== rows[0].holder) holders.push(rows[0].holder);
        await abortableSleep(50);
      }
    })();

    // Kill the master by pid once some work is done.
    const end1 = performance.now() + 30_000;
    while (performance.now() < end1) {
      const [r] = await sql`select count(*)::int as n from public.runs`;
      if (r.n >= 40) break;
      await abortableSleep(50);
    }
    const [lease] = await sql`select holder from control.dispatch_leases`;
    const [master] = await sql`select pid from control.dispatch_nodes where node_id = ${lease.holder}`;
    const victim = nodes.find((n) => n.pid === master.pid)!;
    assert.ok(victim, "the master is one of the spawned nodes");
    const [running] = await sql`select count(*)::int as n from control.dispatch_events where state <> 'done'`;
    assert.ok(running.n > 0, "the kill happens mid-run");
    victim.kill("SIGKILL");
    await victim.status;
    alive.delete(victim);

    const end2 = performance.now() + 90_000;
    let states: Record<string, number> = {};
    while (performance.now() < end2) {
      const rows = await sql`select state, count(*)::int as n from control.dispatch_events group by state`;
      states = Object.fromEntries(rows.map((r) => [r.state, r.n]));
      if (states.done === TOTAL) break;
      await abortableSleep(200);
    }
    watching = false;
    await watcher;
    assert.deepEqual(states, { done: TOTAL });
    const [missing] = await sql`
      select count(*)::int as n from control.dispatch_events e
       where not exists (select 1 from public.runs r where r.event_id = e.id)`;
    assert.equal(missing.n, 0, "every event ran at least once");
    // Events the killed node had claimed were released after its lease expired and run again.
    const [again] = await sql`select count(*)::int as n from control.dispatch_events where attempts >= 2`;
    assert.ok(again.n > 0, "some events were released from the killed node");
    // Leadership moved off the killed node to a survivor.
    const [after] = await sql`select holder from control.dispatch_leases where lease_until > now()`;
    assert.ok(after?.holder && after.holder !== lease.holder);
    assert.ok(holders.length >= 2);
  } finally {
    for (const n of alive) {
      try {
        n.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await Promise.all(nodes.map((n) => n.status));
  }
});
