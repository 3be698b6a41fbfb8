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
  /** The tuple id its claim returned (`at`): a done event is found through it, without an index. */
  at?: string;
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
   * Queues `o`. It is written by the next flush, which starts on the next turn of the event loop (so the
   * outcomes of one turn go together) or after the flush in flight.
   */
  add(o: Outcome): void {
    this.#queue.push(o);
    if (!this.#flushing) this.#flushing = this.#loop();
  }

  /** Writes everything queued (retrying a few times), then resolves. */
  async drain(): Promise<void> {
    this.#stopping = true;
    while (this.#flushing) await this.#flushing;
  }

  async #loop(): Promise<void> {
    // Let outcomes of the same turn join the first batch.
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
    const s = this.sql(this.schema);
    const a = outcomeArgs(this.sql, batch);
    await this.sql`select from ${s}.dispatch_claim(${this.nodeId}, 0, ${a.done}::bigint[], ${a.doneAt}::tid[],
                                                     ${a.doneStartMs}::float8[], ${a.others})`;
  }
}

/** A tuple id as Postgres prints it, and an event id. */
const TID = /^\(\d+,\d+\)$/;
const ID = /^\d+$/;

/**
 * `batch` as the arguments of `<schema>.dispatch_claim` (sql/0026_dispatch_claim_by_tid.sql): done events as
 * three array literals (id, tuple id, ms from claim to start), which the database reads without a JSON parse
 * and finds by tuple id; dead events and retries as JSON (null when there are none), found by key. There, done
 * and dead events move from the queue to the history and retries go back to pending, due after their delay;
 * only events still running under the node are touched. The literals are written here, where every element
 * is known to need no quoting, rather than escaped element by element by the driver (about 1 µs per event).
 */
export function outcomeArgs(sql: Sql, batch: Outcome[]) {
  let done = "", doneAt = "", doneStartMs = "";
  const others: Record<string, string | number | null>[] = [];
  for (const o of batch) {
    if (o.state === "done" && ID.test(o.id)) {
      const sep = done ? "," : "";
      done += sep + o.id;
      doneAt += sep + (o.at && TID.test(o.at) ? `"${o.at}"` : "NULL");
      doneStartMs += sep + (Number.isFinite(o.startMs) ? String(o.startMs) : "NULL");
    } else {
      others.push({
        id: o.id,
        state: o.state,
        delay_ms: o.delayMs ?? 0,
        error: o.error ?? null,
        stack: o.stack ?? null,
        start_ms: o.startMs ?? null,
      });
    }
  }
  return {
    done: `{${done}}`,
    doneAt: `{${doneAt}}`,
    doneStartMs: `{${doneStartMs}}`,
    others: others.length ? sql.json(others) : null,
  };
}
