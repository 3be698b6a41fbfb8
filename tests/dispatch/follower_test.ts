import assert from "node:assert/strict";
import { join } from "node:path";
import { connectPostgres } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { migrate } from "../../shared/migrate.ts";
import { asUser, chownTo, makeReachable, serviceUser, startPostgres } from "../../shared/stack/postgres.ts";
import { freePort, run } from "../../shared/stack/process.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { type NodeStatus, runNode } from "../../workers/dispatch/node.ts";

const log = createLogger("dispatch-follower-test", { level: "error" });

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    await abortableSleep(50);
  }
  throw new Error(`Timed out waiting for ${what}`);
}

// The function reads on `db.readonly` (the follower) and writes through `db` (the primary). It records
// where each ran, and that a write through the follower is refused.
const CODE = `export default async (e, db) => {
  let row;
  for (let i = 0; i < 100 && !row; i++) {
    [row] = await db.readonly.sql\`select v from public.orders where id = \${Number(e.row_id)}\`;
    if (!row) await new Promise((r) => setTimeout(r, 20));
  }
  const [ro] = await db.readonly.sql\`select pg_is_in_recovery() as standby, current_setting('port') as port\`;
  const [rw] = await db.sql\`select pg_is_in_recovery() as standby, current_setting('port') as port\`;
  let refused = null;
  try {
    await db.readonly.sql\`insert into public.orders values (-1, 'from the follower')\`;
  } catch (err) {
    refused = err.message;
  }
  await db.sql\`insert into public.seen values (\${e.id}, \${row?.v ?? null}, \${ro.standby}, \${ro.port},
    \${rw.standby}, \${rw.port}, \${refused})\`;
}`;

Deno.test("db.readonly reads on a real streaming replica while the node and db writes use the primary", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wharf-dispatch-follower-" });
  const user = "wharf";
  const password = crypto.randomUUID();
  const primary = await startPostgres({
    dir: join(dir, "primary"),
    port: freePort(),
    user,
    password,
    ephemeral: true,
  });
  let standby: Awaited<ReturnType<typeof startPostgres>> | undefined;
  const sql = connectPostgres(primary.url, { max: 6 });
  let readonlySql: ReturnType<typeof connectPostgres> | undefined;
  const controller = new AbortController();
  let node: Promise<void> | undefined;
  try {
    await migrate(sql, { log });
    await sql`create table public.orders (id int primary key, v text)`;
    await sql`create table public.seen (event_id bigint, v text, ro_standby boolean, ro_port text,
                                        rw_standby boolean, rw_port text, refused text)`;
    await sql`insert into control.dispatch_functions (name, code, timeout_ms) values ('look', ${CODE}, 30000)`;
    await sql`insert into control.dispatch_triggers (table_schema, table_name, function_name, ops)
              values ('public', 'orders', 'look', array['insert'])`;
    await sql`select control.dispatch_install('public', 'orders')`;

    // A hot standby of the primary: pg_basebackup -R (standby.signal + primary_conninfo), then start it.
    const sdir = join(dir, "standby");
    const svc = await serviceUser();
    await Deno.mkdir(sdir, { recursive: true });
    await makeReachable(svc, sdir);
    await chownTo(svc, sdir);
    const [cmd, args] = asUser(svc, join(primary.binDir, "pg_basebackup"), [
      "-h",
      "127.0.0.1",
      "-p",
      String(primary.port),
      "-U",
      user,
      "-D",
      join(sdir, "data"),
      "-R",
      "-X",
      "stream",
      "-c",
      "fast",
    ]);
    await run(cmd, args, { env: { PGPASSWORD: password } });
    standby = await startPostgres({ dir: sdir, port: freePort(), user, password, ephemeral: true });
    readonlySql = connectPostgres(standby.url, { max: 2 });
    const [rec] = await readonlySql`select pg_is_in_recovery() as r`;
    assert.equal(rec.r, true, "the follower is a standby in recovery");
    const [rep] = await until("the standby to stream", async () => {
      const r = await sql`select state from pg_stat_replication`;
      return r.length === 1 && r[0].state === "streaming" && r;
    });
    assert.equal(rep.state, "streaming");

    const status: NodeStatus = { master: false, running: 0, done: 0, failed: 0 };
    node = runNode(
      {
        sql,
        functionSql: sql,
        readonlySql,
        schema: "control",
        nodeId: "follower-test",
        bind: "localhost:0",
        log,
        leaseMs: 2_000,
        concurrency: 2,
        pollMs: 200,
        trustedKeys: [],
      },
      controller.signal,
      status,
    );

    await sql`insert into public.orders values (1, 'one'), (2, 'two')`;
    const seen = await until("both runs", async () => {
      const r = await sql`select * from public.seen order by event_id`;
      return r.length === 2 && r;
    });
    for (const [i, s] of seen.entries()) {
      assert.equal(s.v, ["one", "two"][i], "the row was read on the follower after it replicated");
      assert.equal(s.ro_standby, true);
      assert.equal(s.ro_port, String(standby.port));
      assert.equal(s.rw_standby, false);
      assert.equal(s.rw_port, String(primary.port));
      assert.match(s.refused, /read-only transaction/);
    }
    const [done] = await until("events done", async () => {
      const r = await sql`select count(*)::int as n from control.dispatch_events where state = 'done'`;
      return r[0].n === 2 && r;
    });
    assert.equal(done.n, 2);
  } finally {
    controller.abort();
    await node;
    await readonlySql?.end({ timeout: 5 });
    await sql.end({ timeout: 5 });
    await standby?.stop();
    await primary.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
