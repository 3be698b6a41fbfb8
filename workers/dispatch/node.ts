/**
 * A dispatch node: registers itself, keeps a heartbeat lease, claims pending events with
 * `FOR UPDATE SKIP LOCKED` (woken by LISTEN/NOTIFY, polling as a fallback), and runs each in the sandbox.
 *
 * Mastership is a lease row taken by a conditional UPDATE: whoever's UPDATE matches (lease free, expired,
 * or already theirs) is master until the lease runs out; there is no election. The master releases
 * events claimed by nodes whose lease expired and enqueues due schedules.
 *
 * Delivery is at least once: an event is marked done only after its function returned; a failure goes
 * back to pending with exponential backoff and jitter until the function's `max_attempts`, then to dead
 * with the error and stack.
 */
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { nextRun, parseCron } from "./cron.ts";
import { type DispatchEvent, SandboxPool } from "./sandbox.ts";
import { signatureProblem } from "./sign.ts";

/** How a node is set up. */
export interface NodeOptions {
  sql: Sql;
  /** The pool functions' queries run on. */
  functionSql: Sql;
  /** A follower for `db.readonly`, if any. */
  readonlySql?: Sql;
  schema: string;
  nodeId: string;
  bind: string;
  log: Logger;
  /** How long a heartbeat keeps the node (and the master lease) alive. */
  leaseMs: number;
  /** Events run at once. */
  concurrency: number;
  /** Polling interval when no notification arrives. */
  pollMs: number;
  trustedKeys: CryptoKey[];
}

/** What a node reports. */
export interface NodeStatus {
  master: boolean;
  running: number;
  done: number;
  failed: number;
}

/** Delay before retry number `attempt` (1-based): base · 2^(attempt-1), capped at an hour, ±50 % jitter. */
export function retryDelayMs(baseMs: number, attempt: number, random = Math.random): number {
  const ceiling = Math.min(3_600_000, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/** Tries to take or renew the master lease; true when this node holds it now. */
export async function tryAcquireMaster(sql: Sql, schema: string, nodeId: string, leaseMs: number) {
  const rows = await sql`
    update ${sql(schema)}.dispatch_leases
       set holder = ${nodeId},
           lease_until = clock_timestamp() + ${leaseMs} * interval '1 millisecond',
           term = term + case when holder is distinct from ${nodeId} then 1 else 0 end
     where name = 'master'
       and (holder = ${nodeId} or holder is null or lease_until < clock_timestamp())
    returning term`;
  return rows.length === 1;
}

interface Claimed {
  id: string;
  function_name: string;
  source: string;
  table_schema: string | null;
  table_name: string | null;
  op: string | null;
  row_id: string | null;
  new_row: unknown;
  old_row: unknown;
  attempts: number;
  code: string;
  signature: string | null;
  timeout_ms: number;
  max_attempts: number;
  backoff_ms: number;
}

/** Starts a node; resolves when `signal` aborts and in-flight events finished. */
export async function runNode(o: NodeOptions, signal: AbortSignal, status: NodeStatus): Promise<void> {
  const { sql, schema, nodeId } = o;
  const s = sql(schema);
  await sql`
    insert into ${s}.dispatch_nodes (node_id, host, pid, bind, lease_until)
    values (${nodeId}, ${Deno.hostname()}, ${Deno.pid}, ${o.bind},
            clock_timestamp() + ${o.leaseMs} * interval '1 millisecond')
    on conflict (node_id) do update set heartbeat_at = now(), lease_until = excluded.lease_until,
      stopped_at = null`;

  let wake: (() => void) | undefined;
  const nudge = () => wake?.();
  const listener = await sql.listen("wharf_dispatch", nudge);

  const heartbeat = (async () => {
    let fails = 0;
    while (!signal.aborted) {
      try {
        await sql`
          update ${s}.dispatch_nodes set heartbeat_at = clock_timestamp(),
            lease_until = clock_timestamp() + ${o.leaseMs} * interval '1 millisecond'
          where node_id = ${nodeId}`;
        const was = status.master;
        status.master = await tryAcquireMaster(sql, schema, nodeId, o.leaseMs);
        if (status.master !== was) o.log.info("master role changed", { master: status.master });
        if (status.master) await masterDuties(o);
        fails = 0;
      } catch (e) {
        fails++;
        o.log.warn("heartbeat failed", { error: e, attempt: fails });
      }
      await abortableSleep(Math.max(50, Math.floor(o.leaseMs / 3)), signal);
    }
  })();

  const inflight = new Set<Promise<void>>();
  const pool = new SandboxPool(Math.max(8, o.concurrency * 2));
  let claimFails = 0;
  while (!signal.aborted) {
    const free = o.concurrency - inflight.size;
    let got = 0;
    if (free > 0) {
      try {
        const rows = await claim(o, free);
        got = rows.length;
        claimFails = 0;
        for (const ev of rows) {
          const p = execute(o, pool, ev, status).finally(() => {
            inflight.delete(p);
            nudge();
          });
          inflight.add(p);
        }
      } catch (e) {
        claimFails++;
        o.log.warn("claim failed", { error: e, attempt: claimFails });
        await abortableSleep(Math.min(5_000, 100 * 2 ** claimFails), signal);
        continue;
      }
    }
    if (got > 0 && got === free) continue;
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, o.pollMs);
      function done() {
        clearTimeout(t);
        wake = undefined;
        signal.removeEventListener("abort", done);
        resolve();
      }
      wake = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }
  await Promise.allSettled(inflight);
  pool.close();
  await listener.unlisten().catch(() => {});
  await heartbeat;
  await sql`update ${s}.dispatch_nodes set stopped_at = now(), lease_until = now() where node_id = ${nodeId}`
    .catch(() => {});
  await sql`update ${s}.dispatch_leases set lease_until = '-infinity' where name = 'master' and holder = ${nodeId}`
    .catch(() => {});
}

async function claim(o: NodeOptions, n: number): Promise<Claimed[]> {
  const { sql } = o;
  const s = sql(o.schema);
  return await sql<Claimed[]>`
    with c as (
      select id from ${s}.dispatch_events
       where state = 'pending' and run_at <= clock_timestamp()
       order by run_at, id
       limit ${n}
       for update skip locked
    ), u as (
      update ${s}.dispatch_events e
         set state = 'running', claimed_by = ${o.nodeId}, claimed_at = clock_timestamp(),
             started_at = clock_timestamp(),
             attempts = e.attempts + 1
        from c where e.id = c.id
      returning e.*
    )
    select u.id::text as id, u.function_name, u.source, u.table_schema, u.table_name, u.op, u.row_id,
           u.new_row, u.old_row, u.attempts, f.code, f.signature, f.timeout_ms, f.max_attempts, f.backoff_ms
      from u join ${s}.dispatch_functions f on f.name = u.function_name
     order by u.id`;
}

async function execute(o: NodeOptions, pool: SandboxPool, ev: Claimed, status: NodeStatus): Promise<void> {
  const { sql } = o;
  const s = sql(o.schema);
  status.running++;
  try {
    const refused = await signatureProblem(o.trustedKeys, ev.code, ev.signature);
    if (refused) {
      status.failed++;
      await sql`
        update ${s}.dispatch_events set state = 'dead', finished_at = now(), last_error = ${refused},
          last_stack = null where id = ${ev.id} and claimed_by = ${o.nodeId}`;
      o.log.warn("function refused", { event: ev.id, function: ev.function_name, reason: refused });
      return;
    }
    const event: DispatchEvent = {
      id: ev.id,
      function: ev.function_name,
      source: ev.source,
      table: ev.table_name ? `${ev.table_schema}.${ev.table_name}` : null,
      op: ev.op,
      row_id: ev.row_id,
      new: ev.new_row,
      old: ev.old_row,
      attempt: ev.attempts,
    };
    const r = await pool.run({
      code: ev.code,
      event,
      timeoutMs: ev.timeout_ms,
      sql: o.functionSql,
      readonlySql: o.readonlySql,
    });
    if (r.ok) {
      status.done++;
      await sql`
        update ${s}.dispatch_events set state = 'done', finished_at = clock_timestamp(), last_error = null,
          last_stack = null where id = ${ev.id} and claimed_by = ${o.nodeId}`;
      return;
    }
    status.failed++;
    if (ev.attempts >= ev.max_attempts) {
      await sql`
        update ${s}.dispatch_events set state = 'dead', finished_at = clock_timestamp(),
          last_error = ${r.error}, last_stack = ${r.stack}
        where id = ${ev.id} and claimed_by = ${o.nodeId}`;
      o.log.warn("event dead", { event: ev.id, function: ev.function_name, attempts: ev.attempts });
    } else {
      const delay = retryDelayMs(ev.backoff_ms, ev.attempts);
      await sql`
        update ${s}.dispatch_events set state = 'pending', claimed_by = null,
          run_at = clock_timestamp() + ${delay} * interval '1 millisecond',
          last_error = ${r.error}, last_stack = ${r.stack}
        where id = ${ev.id} and claimed_by = ${o.nodeId}`;
    }
  } catch (e) {
    // Hand the event back (it runs again: at least once). If even that fails, it stays running under
    // this node until the node's lease expires and the master releases it.
    o.log.error("cannot record event outcome", { event: ev.id, error: e });
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        await sql`
          update ${s}.dispatch_events set state = 'pending', claimed_by = null,
            run_at = clock_timestamp() + interval '1 second'
          where id = ${ev.id} and claimed_by = ${o.nodeId} and state = 'running'`;
        break;
      } catch {
        await abortableSleep(retryDelayMs(200, attempt));
      }
    }
  } finally {
    status.running--;
  }
}

/** Master-only work: release events of dead nodes, enqueue due schedules. */
async function masterDuties(o: NodeOptions): Promise<void> {
  const { sql } = o;
  const s = sql(o.schema);
  const released = await sql`
    update ${s}.dispatch_events e set state = 'pending', claimed_by = null, run_at = clock_timestamp()
      from ${s}.dispatch_nodes n
     where e.state = 'running' and e.claimed_by = n.node_id and n.lease_until < clock_timestamp()
    returning e.id`;
  if (released.length) {
    o.log.warn("released events of dead nodes", { count: released.length });
    await sql`select pg_notify('wharf_dispatch', '')`;
  }
  await sql.begin(async (tx) => {
    const due = await tx<{ id: string; function_name: string; cron: string; next_run_at: Date | null }[]>`
      select id::text as id, function_name, cron, next_run_at from ${s}.dispatch_schedules
       where enabled and (next_run_at is null or next_run_at <= clock_timestamp())
       for update skip locked`;
    const now = new Date();
    for (const d of due) {
      let next: Date | undefined;
      try {
        next = nextRun(parseCron(d.cron), now);
      } catch {
        next = undefined;
      }
      if (d.next_run_at) {
        await tx`insert into ${s}.dispatch_events (function_name, source) values (${d.function_name}, 'schedule')`;
      }
      await tx`
        update ${s}.dispatch_schedules set next_run_at = ${next ?? null},
          last_run_at = case when ${d.next_run_at !== null} then clock_timestamp() else last_run_at end,
          enabled = ${next !== undefined}
        where id = ${d.id}`;
    }
    if (due.some((d) => d.next_run_at)) await tx`select pg_notify('wharf_dispatch', '')`;
  });
}
