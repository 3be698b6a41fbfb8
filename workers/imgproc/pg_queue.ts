/**
 * The local queue: `control.imgproc_messages`. Copies of imgproc claim rows with `FOR UPDATE SKIP LOCKED`
 * (no two copies get one row) and hide them for a visibility timeout, like SQS: a copy that dies while
 * working lets the row come back by itself. A row's dedupe key makes a record delivered twice one row.
 *
 * A waiting copy is woken by a notice on {@linkcode IMGPROC_CHANNEL} (sent by the table's insert trigger,
 * sql/0051_imgproc_notify.sql), so a new upload is picked up at once rather than at the next poll; it
 * still polls every `pollMs`, as a notice sent while its listening connection was being re-established
 * reaches nobody.
 */
import type { Sql } from "../../shared/db.ts";
import { Waker } from "../../shared/worker.ts";
import type { MessageQueue, QueueMessage } from "./queue.ts";

/** The channel an insert into the queue notifies. */
export const IMGPROC_CHANNEL = "wharf_imgproc";

/** After a failed LISTEN, how long a queue only polls before it tries again. */
const LISTEN_RETRY_MS = 30_000;

/** Options for {@linkcode PgQueue}. */
export interface PgQueueOptions {
  sql: Sql;
  /** Who claims (kept on the row for the console). */
  consumerId: string;
  /** How long a claimed row stays hidden (default 60 s). */
  visibilityMs?: number;
  /** How often an empty queue is polled while waiting (default 200 ms). */
  pollMs?: number;
  /**
   * Messages claimed beyond what a receive asked for (default 0), handed to later receives without a
   * round trip. They stay hidden from other copies meanwhile; one held for half the visibility timeout
   * is given back instead of handed out, and {@linkcode PgQueue.close} gives back the rest.
   */
  prefetch?: number;
}

/** A message claimed ahead, and when. */
interface Held {
  message: QueueMessage;
  claimedAt: number;
}

/** Adds a message unless its dedupe key is there already; true when added. */
export async function enqueue(sql: Sql, dedupeKey: string, body: string): Promise<boolean> {
  const r = await sql`
    insert into control.imgproc_messages (dedupe_key, body) values (${dedupeKey}, ${body})
    on conflict (dedupe_key) do nothing`;
  return r.count > 0;
}

/**
 * The statement that acks `handle` on `sql`: the queue's own ack, or inside a caller's transaction (on the
 * transaction's connection), so a message leaves the queue in the same commit as the work it asked for.
 */
export function ackIn(tx: Sql, handle: string) {
  return tx`delete from control.imgproc_messages where id = ${handle}`;
}

/** The Postgres implementation of {@linkcode MessageQueue}. */
export class PgQueue implements MessageQueue {
  readonly #o: Required<PgQueueOptions>;
  /** Notices received; a wait ends early when this moved since its claim began. */
  #nudges = 0;
  readonly #waker = new Waker();
  #listener: { unlisten(): Promise<void> } | undefined;
  #listenFailedAt = -Infinity;
  #closed = false;
  /** Claimed ahead of the consumer's asking, oldest first. */
  #held: Held[] = [];

  constructor(o: PgQueueOptions) {
    this.#o = { visibilityMs: 60_000, pollMs: 200, prefetch: 0, ...o };
  }

  /** The database the queue lives in. */
  get sql(): Sql {
    return this.#o.sql;
  }

  /** Starts listening; false when it cannot (then the queue only polls for a while). */
  async #listen(): Promise<boolean> {
    if (this.#listener) return true;
    if (this.#closed || performance.now() - this.#listenFailedAt < LISTEN_RETRY_MS) return false;
    try {
      this.#listener = await this.#o.sql.listen(IMGPROC_CHANNEL, () => {
        this.#nudges++;
        this.#waker.wake();
      });
      return true;
    } catch {
      this.#listenFailedAt = performance.now();
      return false;
    }
  }

  async #claim(max: number): Promise<QueueMessage[]> {
    const { sql, consumerId, visibilityMs } = this.#o;
    // By the ready index whatever the statistics say (sql/0025_imgproc_claim.sql).
    const rows = await sql`
      select id, body, attempts from control.imgproc_claim(${consumerId}, ${max}, ${visibilityMs})`;
    return rows.map((r) => ({
      handle: String(r.id),
      body: r.body as string,
      receiveCount: r.attempts as number,
    }))
      .sort((a, b) => Number(a.handle) - Number(b.handle));
  }

  /**
   * Gives claimed messages back unhandled: visible again at once, their claim not counted as a delivery.
   * Only while this copy still holds the claim (not once another copy took the message after its timeout).
   */
  async #giveBack(held: Held[]): Promise<void> {
    if (!held.length) return;
    const ids = held.map((h) => h.message.handle);
    await this.#o.sql`
      update control.imgproc_messages
         set visible_at = now(), claimed_by = null, attempts = greatest(attempts - 1, 0)
       where id = any(${ids}::bigint[]) and claimed_by = ${this.#o.consumerId} and dead_at is null`;
  }

  /** Up to `max` messages claimed ahead; those held too long are given back. */
  async #takeHeld(max: number): Promise<QueueMessage[]> {
    const freshAfter = performance.now() - this.#o.visibilityMs / 2;
    const stale: Held[] = [], fresh: Held[] = [];
    for (const h of this.#held) (h.claimedAt < freshAfter ? stale : fresh).push(h);
    this.#held = fresh;
    await this.#giveBack(stale);
    return this.#held.splice(0, max).map((h) => h.message);
  }

  async receive(max: number, waitMs: number, signal: AbortSignal): Promise<QueueMessage[]> {
    const deadline = performance.now() + waitMs;
    let listening = this.#listener !== undefined;
    if (this.#held.length) {
      const held = await this.#takeHeld(max);
      if (held.length) return held;
    }
    for (;;) {
      if (signal.aborted) return [];
      const seen = this.#nudges;
      const claimedAt = performance.now();
      const got = await this.#claim(max + this.#o.prefetch);
      if (got.length > max) {
        for (const message of got.splice(max)) this.#held.push({ message, claimedAt });
      }
      if (got.length || performance.now() >= deadline) return got;
      // About to wait: listen first, and claim once more, since a message added before LISTEN took
      // effect notified nobody.
      if (!listening && (listening = await this.#listen())) continue;
      if (this.#nudges !== seen) continue;
      // Until the poll interval, or less when a notice comes.
      if (!await this.#waker.sleep(Math.min(this.#o.pollMs, deadline - performance.now()), signal)) return [];
    }
  }

  async ack(m: QueueMessage): Promise<void> {
    await ackIn(this.#o.sql, m.handle);
  }

  async retry(m: QueueMessage, delayMs: number, error: string): Promise<void> {
    await this.#o.sql`
      update control.imgproc_messages
         set visible_at = now() + make_interval(secs => ${delayMs / 1000}), last_error = ${error},
             claimed_by = null
       where id = ${m.handle}`;
  }

  async deadLetter(m: QueueMessage, error: string): Promise<void> {
    await this.#o.sql`
      update control.imgproc_messages set dead_at = now(), last_error = ${error}, claimed_by = null
       where id = ${m.handle}`;
  }

  async depth(): Promise<number> {
    const [r] = await this.#o
      .sql`select count(*)::int as n from control.imgproc_messages where dead_at is null`;
    return r.n as number;
  }

  /** Stops listening and gives back the messages claimed ahead. */
  async close(): Promise<void> {
    this.#closed = true;
    const l = this.#listener;
    this.#listener = undefined;
    await l?.unlisten().catch(() => {});
    const held = this.#held;
    this.#held = [];
    // Not given back (the database is gone): they come back by themselves after the visibility timeout.
    await this.#giveBack(held).catch(() => {});
  }
}
