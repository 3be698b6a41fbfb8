/**
 * Records event outcomes in batches: one statement per flush instead of one per event, which is most of a
 * node's database round trips under load. Done and dead events move from the queue to the history in it.
 *
 * Group commit: an outcome is written as soon as no flush is in flight; outcomes that arrive while one is
 * in flight wait for it and go out together in the next. So an idle node records each outcome at once,
 * and a busy one writes hundreds per statement. An outcome is only ever recorded after its function
 * returned (the caller adds it then), and only for an event still `running` under this node, so a flush
 * that lost a race with the master's lease-expiry release changes nothing.
 *
 * A flush that fails is retried with backoff while the node runs (the outcomes stay queued); when the
 * node stops they are tried a few more times and then dropped: the events stay `running` under the
 * stopped node, whose lease the stop ends, so the master hands them back and they run again (at least
 * once).
 */
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";

/** What became of one attempt. */
export interface Outcome {
  id: string;
  /** `done`, `dead`, or `pending` (a retry after `delayMs`). */
  state: "done" | "dead" | "pending";
  delayMs?: number;
  error?: string | null;
  stack?: string | null;
  /** Milliseconds from the claim to the function's start, to record when the attempt really started. */
  startMs?: number;
}

/** Queues outcomes and writes them in batches. */
export class OutcomeWriter {
  #queue: Outcome[] = [];
  #flushing: Promise<void> | undefined;
  #stopping = false;
  /** Statements written so far (for tests and metrics). */
  flushes = 0;

  constructor(
    readonly sql: Sql,
    readonly schema: string,
    readonly nodeId: string,
    readonly log: Logger,
    readonly maxBatch = 1_000,
  ) {}

  /** Outcomes not yet written. */
  get pending(): number {
    return this.#queue.length;
  }

  /**
   * Queues `o`. It is written by the next flush, which starts on the next turn of the event loop (so a
   * claim made meanwhile can carry it, see {@linkcode take}) or after the flush in flight.
   */
  add(o: Outcome): void {
    this.#queue.push(o);
    if (!this.#flushing) this.#flushing = this.#loop();
  }

  /**
   * Hands over up to `maxBatch` queued outcomes for a statement that records them together with a claim
   * ({@linkcode outcomeCtes}): one round trip instead of two. The caller must return them with
   * {@linkcode putBack} if that statement fails.
   */
  take(): Outcome[] {
    return this.#queue.splice(0, this.maxBatch);
  }

  /** Queues again outcomes {@linkcode take} handed over whose statement failed. */
  putBack(batch: Outcome[]): void {
    if (!batch.length) return;
    this.#queue.unshift(...batch);
    if (!this.#flushing) this.#flushing = this.#loop();
  }

  /** Writes everything queued (retrying a few times), then resolves. */
  async drain(): Promise<void> {
    this.#stopping = true;
    while (this.#flushing) await this.#flushing;
  }

  async #loop(): Promise<void> {
    // Let outcomes of the same turn join the first batch, and give a claim the chance to carry them.
    await new Promise((resolve) => setTimeout(resolve, 0));
    let fails = 0;
    while (this.#queue.length) {
      const batch = this.#queue.splice(0, this.maxBatch);
      try {
        await this.write(batch);
        this.flushes++;
        fails = 0;
      } catch (e) {
        fails++;
        this.log.error("cannot record event outcomes", { count: batch.length, error: e, attempt: fails });
        // Left running under this (stopping) node: released by the master once its lease ends.
        if (this.#stopping && fails >= 5) continue;
        this.#queue.unshift(...batch);
        await abortableSleep(backoffMs(fails, 100, 5_000));
      }
    }
    this.#flushing = undefined;
  }

  /** One statement for a batch: done or dead (moved to the history), or back to pending after a delay. */
  async write(batch: Outcome[]): Promise<void> {
    await this.sql`with ${outcomeCtes(this.sql, this.schema, this.nodeId, batch)} select 1`;
  }
}

/**
 * The common table expressions that record `batch` (to start a `WITH`; they end without a comma). Done
 * and dead events move from the queue to the history; retries stay queued, due after their delay. Only
 * events still running under `nodeId` are touched. `guarded`: the statement defines a CTE `me` first (the
 * node's own row, share-locked by a claim), and nothing is written unless it has a row; so the node row is
 * locked before any event row, in the order the master's release locks them, and a claim never waits for
 * its node row while holding event rows the release waits for.
 */
export function outcomeCtes(sql: Sql, schema: string, nodeId: string, batch: Outcome[], guarded = false) {
  const rows = batch.map((o) => ({
    id: o.id,
    state: o.state,
    delay_ms: o.delayMs ?? 0,
    error: o.error ?? null,
    stack: o.stack ?? null,
    start_ms: o.startMs ?? null,
  }));
  const s = sql(schema);
  const guard = guarded ? sql`and exists (select from me)` : sql``;
  return sql`
    v as (
      select * from jsonb_to_recordset(${sql.json(rows)})
             as v(id bigint, state text, delay_ms double precision, error text, stack text,
                  start_ms double precision)
    ), finished as (
      delete from ${s}.dispatch_queue e using v
       where e.id = v.id and v.state <> 'pending' and e.claimed_by = ${nodeId} and e.state = 'running' ${guard}
      returning e.id, e.function_name, e.source, e.table_schema, e.table_name, e.op, e.row_id, e.new_row,
                e.old_row, v.state, e.attempts, e.run_at, e.created_at, e.claimed_by, e.claimed_at,
                coalesce(e.claimed_at + v.start_ms * interval '1 millisecond', e.started_at) as started_at,
                v.error, v.stack
    ), moved as (
      insert into ${s}.dispatch_history (id, function_name, source, table_schema, table_name, op, row_id,
                                         new_row, old_row, state, attempts, run_at, created_at, claimed_by,
                                         claimed_at, started_at, finished_at, last_error, last_stack)
      select id, function_name, source, table_schema, table_name, op, row_id, new_row, old_row, state,
             attempts, run_at, created_at, claimed_by, claimed_at, started_at, clock_timestamp(), error, stack
        from finished
    ), retried as (
      update ${s}.dispatch_queue e
         set state = 'pending', claimed_by = null,
             run_at = clock_timestamp() + v.delay_ms * interval '1 millisecond',
             started_at = coalesce(e.claimed_at + v.start_ms * interval '1 millisecond', e.started_at),
             last_error = v.error,
             last_stack = v.stack
        from v
       where e.id = v.id and v.state = 'pending' and e.claimed_by = ${nodeId} and e.state = 'running' ${guard}
    )`;
}
