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
import { abortableSleep, Waker } from "../../shared/worker.ts";
import { nextRun, parseCron } from "./cron.ts";
import { SandboxPool, type WireEvent } from "./sandbox.ts";
import { OutcomeWriter } from "./outcomes.ts";
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
  /**
   * Events claimed ahead of a free slot (default: `concurrency`), so a claim fetches a batch and one
   * round trip feeds many starts. They are locked by this node until started; a graceful stop hands
   * them back, a crash leaves them to the lease-expiry release.
   */
  prefetch?: number;
  /** Polling interval when no notification arrives. */
  pollMs: number;
  /**
   * How long finished (`done`) events stay in the history, in hours after they were created (0: for
   * ever). The master deletes older ones a batch at a time; dead events stay until retried or deleted.
   */
  historyHours?: number;
  trustedKeys: CryptoKey[];
}

/** What a node reports. */
export interface NodeStatus {
  master: boolean;
  running: number;
  done: number;
  failed: number;
  /** Sandbox workers started since the node started (each costs about 25 ms of CPU). */
  workersStarted?: number;
}

/**
 * The NOTIFY channel of a dispatch schema: `wharf_dispatch` for `control`, `wharf_dispatch_<schema>` for
 * one installed elsewhere, so nodes of one schema are not woken by another's events.
 */
export function channelFor(schema: string): string {
  return schema === "control" ? "wharf_dispatch" : `wharf_dispatch_${schema.toLowerCase()}`;
}

/**
 * Makes sure dispatch's tables, functions and triggers exist in `schema` (idempotent; `control` comes
 * with the migrations). Nodes starting together serialise on an advisory lock inside the function.
 */
export async function installSchema(sql: Sql, schema: string): Promise<void> {
  if (schema === "control") return;
  await sql`select control.dispatch_install_schema(${schema})`;
  await sql`select control.dispatch_install_claim_after(${schema})`;
  await sql`select control.dispatch_history_index(${schema})`;
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
  /** The tuple id of the event's running version, handed back with its outcome. */
  at: string;
  function_name: string;
  source: string;
  table_schema: string | null;
  table_name: string | null;
  op: string | null;
  row_id: string | null;
  /** The rows as JSON text: parsed in the sandbox, and only if the function reads them. */
  new_row: string | null;
  old_row: string | null;
  attempts: number;
  /** Null when the function was deleted after the event was recorded. */
  code: string | null;
  signature: string | null;
  timeout_ms: number;
  max_attempts: number;
  backoff_ms: number;
  /** `performance.now()` when the claim returned. */
  claimedAt: number;
  /** The event's `run_at` in microseconds since the epoch (null if infinite): the claim cursor's key. */
  run_at_us: string | null;
}

/**
 * Where a node's next claim starts in the ready index `(run_at, id)`: after the last event it claimed, so
 * that a claim does not step over the entries finished events leave until vacuum (sql/0028). A claim that
 * comes back short has also looked from the head; so does one at least every {@linkcode FROM_HEAD_MS}, so
 * that an event behind the cursor (handed back, released, or committed late with an earlier `run_at`)
 * waits no longer than that while a backlog keeps every claim full.
 */
interface ClaimCursor {
  runAtUs: bigint | null;
  id: bigint | null;
  fromHeadAt: number;
}

const FROM_HEAD_MS = 1_000;

/** Starts a node; resolves when `signal` aborts and in-flight events finished. */
export async function runNode(o: NodeOptions, signal: AbortSignal, status: NodeStatus): Promise<void> {
  const { sql, schema, nodeId } = o;
  const s = sql(schema);
  await installSchema(sql, schema);
  await sql`
    insert into ${s}.dispatch_nodes (node_id, host, pid, bind, lease_until)
    values (${nodeId}, ${Deno.hostname()}, ${Deno.pid}, ${o.bind},
            clock_timestamp() + ${o.leaseMs} * interval '1 millisecond')
    on conflict (node_id) do update set heartbeat_at = now(), lease_until = excluded.lease_until,
      stopped_at = null, released = false`;

  const waker = new Waker();
  // A nudge that arrives while the loop is not waiting (a claim in flight) must not be lost: it may be
  // the only notice of an event committed just after that claim's snapshot.
  let nudged = false;
  const nudge = () => {
    nudged = true;
    waker.wake();
  };
  const listener = await sql.listen(channelFor(schema), nudge);

  const heartbeat = (async () => {
    let fails = 0;
    while (!signal.aborted) {
      try {
        await sql`
          update ${s}.dispatch_nodes set heartbeat_at = clock_timestamp(),
            lease_until = clock_timestamp() + ${o.leaseMs} * interval '1 millisecond', released = false
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

  const pool = new SandboxPool(Math.max(8, o.concurrency * 2));
  const writer = new OutcomeWriter(sql, schema, nodeId, o.log);
  // Claimed but not started yet: at most `concurrency` more than run at once, so one claim round trip
  // fetches a batch while the previous one drains.
  const queue: Claimed[] = [];
  const prefetch = Math.max(1, o.prefetch ?? o.concurrency);
  const cap = o.concurrency + prefetch;
  // While only quick functions run, a whole batch of them takes one slot: the ceiling then leaves room for
  // the next claim beside a running batch, so the database claims while the sandbox runs instead of each
  // waiting for the other (measured: a fifth more events per second with one node, an eighth more with two).
  const quickCap = Math.max(cap, prefetch + QUICK_BATCH);
  let running = 0; // batches (slots) in flight
  let busy = 0; // events in those batches
  let slow = 0; // batches in flight of functions not known to be quick
  const inflight = new Set<Promise<void>>();
  // Events of one function go to a sandbox worker in batches (one message each way per batch); a slot
  // runs one batch, its events one after another, so at most `concurrency` events run at once. Batches
  // share the queue out among free slots, so an idle node still starts a lone event at once.
  // Recent time per event of each function (ms, moving average). Events of a function that returns in
  // well under a millisecond are batched fully: running them one after another costs nothing next to a
  // message pair. Slower ones are shared out among the free slots so they run side by side.
  const perEventMs = new Map<string, number>();
  // Quick batches in flight per function: at most QUICK_WORKERS, each on its own sandbox worker.
  const quickRunning = new Map<string, number>();
  const isQuick = (ev: Claimed) => (perEventMs.get(ev.function_name) ?? Infinity) < QUICK_MS;
  const pump = () => {
    while (running < o.concurrency && queue.length && !signal.aborted) {
      // The first event whose function may start a batch now: a quick function at its limit waits for one
      // of its batches to end (well under a millisecond for a full one) while other functions go ahead.
      let at = 0;
      while (
        at < queue.length && (quickRunning.get(queue[at].function_name) ?? 0) >= QUICK_WORKERS &&
        isQuick(queue[at])
      ) at++;
      if (at === queue.length) break;
      const first = queue[at];
      const quick = isQuick(first);
      const size = quick
        ? QUICK_BATCH
        : Math.min(MAX_BATCH, Math.ceil(queue.length / (o.concurrency - running)));
      let end = at + 1;
      while (
        end - at < size && end < queue.length && queue[end].function_name === first.function_name &&
        queue[end].code === first.code && queue[end].signature === first.signature
      ) end++;
      const batch = queue.splice(at, end - at);
      if (quick) quickRunning.set(first.function_name, (quickRunning.get(first.function_name) ?? 0) + 1);
      running++;
      busy += batch.length;
      if (!quick) slow++;
      const p = executeBatch(o, pool, writer, batch, status, signal).then(({ notStarted, msPerEvent }) => {
        // A batch cut short by a timeout hands back the events it never started, to run next.
        queue.unshift(...notStarted);
        if (msPerEvent !== undefined) {
          const prev = perEventMs.get(first.function_name);
          perEventMs.set(
            first.function_name,
            prev === undefined ? msPerEvent : prev * 0.8 + msPerEvent * 0.2,
          );
        }
      }).finally(() => {
        running--;
        busy -= batch.length;
        if (!quick) slow--;
        else quickRunning.set(first.function_name, quickRunning.get(first.function_name)! - 1);
        status.workersStarted = pool.started;
        inflight.delete(p);
        pump();
        // Wake the loop only when it would claim: not once per event.
        if (queue.length <= prefetch / 2) nudge();
      });
      inflight.add(p);
    }
  };
  let claimFails = 0;
  const cursor: ClaimCursor = { runAtUs: null, id: null, fromHeadAt: performance.now() };
  while (!signal.aborted) {
    nudged = false;
    const want = (slow === 0 && busy > 0 ? quickCap : cap) - busy - queue.length;
    // Claim when the queue is at most half full, so claims stay batches rather than one event each. While
    // only quick functions run, also wait until half the prefetch is free: a claim costs a round trip and
    // a statement whatever its size, and quick batches free their slots long before that matters.
    const least = slow > 0 || busy === 0 ? 1 : Math.ceil(prefetch / 2);
    if (queue.length <= prefetch / 2 && want >= least) {
      try {
        const rows = await claim(o, want, cursor);
        claimFails = 0;
        for (const ev of rows) queue.push(Object.assign(ev, { claimedAt: performance.now() }));
        pump();
        if (rows.length === want && !signal.aborted) continue;
      } catch (e) {
        claimFails++;
        o.log.warn("claim failed", { error: e, attempt: claimFails });
        await abortableSleep(Math.min(5_000, 100 * 2 ** claimFails), signal);
        continue;
      }
    }
    if (nudged) continue;
    await waker.sleep(o.pollMs, signal);
  }
  // Graceful stop: hand back what was claimed but not started, let the rest finish, write all outcomes.
  await handBack(o, queue.splice(0));
  await Promise.allSettled(inflight);
  await handBack(o, queue.splice(0));
  await writer.drain();
  pool.close();
  await listener.unlisten().catch(() => {});
  await heartbeat;
  await sql`update ${s}.dispatch_nodes set stopped_at = now(), lease_until = now() where node_id = ${nodeId}`
    .catch(() => {});
  await sql`update ${s}.dispatch_leases set lease_until = '-infinity' where name = 'master' and holder = ${nodeId}`
    .catch(() => {});
}

/**
 * Puts claimed events that never started back to `pending` as if never claimed (the attempt is not
 * counted). On failure they stay claimed by this node and the master releases them when its lease ends.
 */
async function handBack(o: NodeOptions, events: Claimed[]): Promise<void> {
  if (!events.length) return;
  const { sql } = o;
  const ids = events.map((e) => e.id);
  try {
    await sql`
      update ${sql(o.schema)}.dispatch_queue
         set state = 'pending', claimed_by = null, claimed_at = null, started_at = null,
             attempts = attempts - 1
       where id = any(${ids}::bigint[]) and claimed_by = ${o.nodeId} and state = 'running'`;
    await sql`select pg_notify(${channelFor(o.schema)}, '')`;
  } catch (e) {
    o.log.error("cannot hand back unstarted events", { count: ids.length, error: e });
  }
}

/**
 * Claims up to `n` due events in `<schema>.dispatch_claim` (sql/0026_dispatch_claim_by_tid.sql, and sql/0028
 * for the cursor), which chooses events by the ready index whatever the queue's statistics say, starting
 * after `cursor` (from the head when it is empty or the events after it are too few), and updates them; it
 * moves `cursor` to the last event claimed. A claim is a HOT update of the queue rows (no indexed column
 * changes). It holds a share lock on the node's own row and does nothing once the master released this node
 * (its lease had expired), so a release never misses a claim that commits after it.
 *
 * A claim carries no outcomes, though the function takes them: the {@linkcode OutcomeWriter} writes them on
 * another connection at the same time, so the node keeps two backends busy rather than one. Carried with the
 * claims, a node's whole database work ran on one backend one statement after another, and on two cores a
 * quarter of the CPU stayed idle during a burst (measured with one node: about a tenth fewer events per
 * second than with the outcomes written beside the claims).
 */
async function claim(o: NodeOptions, n: number, cursor: ClaimCursor): Promise<Claimed[]> {
  const { sql } = o;
  const s = sql(o.schema);
  if (performance.now() - cursor.fromHeadAt >= FROM_HEAD_MS) cursor.runAtUs = cursor.id = null;
  const fromHead = cursor.id === null;
  const afterUs = cursor.runAtUs?.toString() ?? null, afterId = cursor.id?.toString() ?? null;
  const rows = await sql<Claimed[]>`
    select k.id::text as id, k.at::text as at, k.run_at_us::text as run_at_us, k.function_name, k.source,
           k.table_schema, k.table_name, k.op, k.row_id, k.new_row::text as new_row, k.old_row::text as old_row,
           k.attempts,
           -- The code once per function (on its first event), not once per event.
           case when row_number() over (partition by k.function_name order by k.id) = 1 then f.code end as code,
           case when row_number() over (partition by k.function_name order by k.id) = 1 then f.signature end
             as signature,
           f.timeout_ms, f.max_attempts, f.backoff_ms
      from ${s}.dispatch_claim(${o.nodeId}, ${n}, '{}'::bigint[], '{}'::tid[], '{}'::float8[], null,
                               ${afterUs}::bigint, ${afterId}::bigint) k
      left join ${s}.dispatch_functions f on f.name = k.function_name
     order by k.id`;
  if (fromHead || rows.length < n) cursor.fromHeadAt = performance.now();
  // Every event of a function gets the code its first event carried; the cursor moves to the last one in
  // the index's order.
  const first = new Map<string, Claimed>();
  for (const ev of rows) {
    if (ev.run_at_us !== null) {
      const us = BigInt(ev.run_at_us), id = BigInt(ev.id);
      if (cursor.id === null || us > cursor.runAtUs! || (us === cursor.runAtUs && id > cursor.id)) {
        cursor.runAtUs = us;
        cursor.id = id;
      }
    }
    const f = first.get(ev.function_name);
    if (f) {
      ev.code = f.code;
      ev.signature = f.signature;
    } else first.set(ev.function_name, ev);
  }
  return rows;
}

/** The most events one sandbox message carries when they are shared out among free slots. */
const MAX_BATCH = 16;
/**
 * The most events one message carries for a quick function: they run one after another in well under
 * 32 ms, and a message pair costs more than several such calls.
 */
const QUICK_BATCH = 64;
/** Below this time per event (ms) a function's events are batched fully rather than shared out. */
const QUICK_MS = 0.5;
/**
 * Quick batches of one function running at once on a node: one per core. More would only start more
 * sandbox workers (about 25 ms of CPU each) for work that already has every core: a burst of a no-op
 * function started about ten per node, a quarter of a second of CPU per node and burst.
 */
export const QUICK_WORKERS = Math.max(1, navigator.hardwareConcurrency || 1);

/**
 * Runs a batch of claimed events of one function and queues their outcomes; returns the events that
 * never started (the batch was cut short by a timeout), which are still claimed by this node, and the
 * mean time per event that ran.
 */
async function executeBatch(
  o: NodeOptions,
  pool: SandboxPool,
  writer: OutcomeWriter,
  batch: Claimed[],
  status: NodeStatus,
  signal: AbortSignal,
): Promise<{ notStarted: Claimed[]; msPerEvent?: number }> {
  const notStarted: Claimed[] = [];
  let msPerEvent: number | undefined;
  const first = batch[0];
  status.running += batch.length;
  try {
    const refused = first.code === null
      ? "Function no longer exists"
      : await signatureProblem(o.trustedKeys, first.code, first.signature);
    if (refused) {
      for (const ev of batch) {
        status.failed++;
        writer.add({ id: ev.id, state: "dead", error: refused, startMs: performance.now() - ev.claimedAt });
      }
      o.log.warn("function refused", {
        function: first.function_name,
        events: batch.length,
        reason: refused,
      });
      return { notStarted };
    }
    const results = await pool.runBatch({
      code: first.code!,
      items: batch.map((ev) => ({ event: toEvent(ev), timeoutMs: ev.timeout_ms })),
      sql: o.functionSql,
      readonlySql: o.readonlySql,
      signal,
    });
    // Learnt from a lone event too, so an idle node already knows a function is quick when a burst comes.
    const ran = results.flatMap((r) => r.started ? [r.ms] : []);
    if (ran.length) msPerEvent = ran.reduce((a, b) => a + b, 0) / ran.length;
    results.forEach((r, i) => {
      const ev = batch[i];
      if (!r.started) {
        notStarted.push(ev);
        return;
      }
      const startMs = r.startedAt - ev.claimedAt;
      if (r.ok) {
        status.done++;
        writer.add({ id: ev.id, at: ev.at, state: "done", startMs });
        return;
      }
      status.failed++;
      if (ev.attempts >= ev.max_attempts) {
        writer.add({ id: ev.id, state: "dead", error: r.error, stack: r.stack, startMs });
        o.log.warn("event dead", { event: ev.id, function: ev.function_name, attempts: ev.attempts });
      } else {
        const delayMs = retryDelayMs(ev.backoff_ms, ev.attempts);
        writer.add({ id: ev.id, state: "pending", delayMs, error: r.error, stack: r.stack, startMs });
      }
    });
  } catch (e) {
    // Nothing above is expected to throw; if it does, the events go back to the queue (at least once).
    o.log.error("events failed in the node", { count: batch.length, error: e });
    for (const ev of batch) {
      writer.add({ id: ev.id, state: "pending", delayMs: 1_000, error: String(e), stack: null });
    }
  } finally {
    status.running -= batch.length;
  }
  return { notStarted, msPerEvent };
}

function toEvent(ev: Claimed): WireEvent {
  return {
    id: ev.id,
    function: ev.function_name,
    source: ev.source,
    table: ev.table_name ? `${ev.table_schema}.${ev.table_name}` : null,
    op: ev.op,
    row_id: ev.row_id,
    new_json: ev.new_row,
    old_json: ev.old_row,
    attempt: ev.attempts,
  };
}

/** Master-only work: release events of dead nodes, enqueue due schedules. */
/** The most finished events one retention pass deletes (a pass runs with each heartbeat of the master). */
export const HISTORY_DELETE_BATCH = 5_000;

/**
 * Deletes up to {@linkcode HISTORY_DELETE_BATCH} finished (`done`) events created more than `hours` ago,
 * oldest first; returns how many. Ids follow creation order, so the scan starts at the oldest id and stops
 * at the first event created within the retention: a pass over a history that is already trimmed reads a
 * handful of rows, not the table, and no index is needed beyond the key.
 */
export async function trimHistory(sql: Sql, schema: string, hours: number): Promise<number> {
  const s = sql(schema);
  const rows = await sql`
    with bound as (
      select coalesce(
        (select id from ${s}.dispatch_history
          where created_at >= clock_timestamp() - ${hours} * interval '1 hour' order by id limit 1),
        (select max(id) + 1 from ${s}.dispatch_history)) as id
    ), old as (
      select h.id from ${s}.dispatch_history h, bound
       where h.id < bound.id and h.state = 'done'
       order by h.id limit ${HISTORY_DELETE_BATCH}
    )
    delete from ${s}.dispatch_history h using old where h.id = old.id
    returning h.id`;
  return rows.length;
}

async function masterDuties(o: NodeOptions): Promise<void> {
  const { sql } = o;
  const s = sql(o.schema);
  if (o.historyHours) {
    const n = await trimHistory(sql, o.schema, o.historyHours);
    if (n) o.log.info("finished events past the retention deleted", { count: n, hours: o.historyHours });
  }
  // Events of nodes whose lease expired go back to the queue, once per expiry: their node rows stay
  // locked until the release commits, and claims take a share lock on their own node row, so a claim
  // either committed before the release's scan (which then sees it) or finds its node released.
  const released = await sql.begin(async (tx) => {
    const dead = await tx<{ node_id: string }[]>`
      select node_id from ${s}.dispatch_nodes
       where not released and lease_until < clock_timestamp()
       for update`;
    if (!dead.length) return [];
    const ids = dead.map((d) => d.node_id);
    const rows = await tx`
      update ${s}.dispatch_queue
         set state = 'pending', claimed_by = null, claimed_at = null, run_at = clock_timestamp()
       where state = 'running' and claimed_by = any(${ids}::text[])
      returning id`;
    await tx`update ${s}.dispatch_nodes set released = true where node_id = any(${ids}::text[])`;
    return rows;
  });
  if (released.length) {
    o.log.warn("released events of dead nodes", { count: released.length });
    await sql`select pg_notify(${channelFor(o.schema)}, '')`;
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
        await tx`insert into ${s}.dispatch_queue (function_name, source) values (${d.function_name}, 'schedule')`;
      }
      await tx`
        update ${s}.dispatch_schedules set next_run_at = ${next ?? null},
          last_run_at = case when ${d.next_run_at !== null} then clock_timestamp() else last_run_at end,
          enabled = ${next !== undefined}
        where id = ${d.id}`;
    }
    if (due.some((d) => d.next_run_at)) await tx`select pg_notify(${channelFor(o.schema)}, '')`;
  });
}
