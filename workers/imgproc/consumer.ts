/**
 * The consumer loop, the same for SQS and the local queue: receives as many messages as it has free
 * slots, handles each, and acks, retries with backoff, or dead-letters. A body that can never be read
 * is dead-lettered at once; any other failure is retried until `maxAttempts` deliveries, then
 * dead-lettered with `onDead` told (imgproc marks the feed failed there). The loop never throws: a queue
 * error is logged and waited out with backoff.
 */
import type { Logger } from "../../shared/log.ts";
import type { Registry } from "../../shared/metrics.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";
import { PoisonMessageError } from "./events.ts";
import type { MessageQueue, QueueMessage } from "./queue.ts";

/** Options for {@linkcode runConsumer}. */
export interface ConsumerOptions {
  queue: MessageQueue;
  /**
   * Handles one message; throws to fail it. Resolves to `"acked"` when it removed the message from the
   * queue itself (the Postgres queue's message, in the transaction that applied its event): the consumer
   * then does not ack it again.
   */
  handle(body: string, message: QueueMessage): Promise<void | "acked">;
  /** Called once when a message is dead-lettered. */
  onDead?(body: string, error: string): Promise<void>;
  concurrency: number;
  maxAttempts: number;
  /** Base of the retry backoff (default 500 ms). */
  retryBaseMs?: number;
  /** How long one receive waits for messages (default 5 s; SQS caps it at 20 s). */
  waitMs?: number;
  log: Logger;
  metrics?: Registry;
  signal: AbortSignal;
}

/** Counts of what the consumer did, for status reports. */
export interface ConsumerStatus {
  handled: number;
  retried: number;
  dead: number;
  inFlight: number;
}

/** Handles one message and settles it with the queue; never throws. */
export async function settle(
  o: ConsumerOptions,
  m: QueueMessage,
  status: ConsumerStatus,
): Promise<"ack" | "retry" | "dead"> {
  const done = o.metrics?.counter("wharf_imgproc_messages_total", "Messages by outcome");
  try {
    if (await o.handle(m.body, m) !== "acked") {
      await o.queue.ack(m).catch((e) => o.log.warn("ack failed; the message will come again", { error: e }));
    }
    status.handled++;
    done?.inc({ outcome: "ack" });
    return "ack";
  } catch (e) {
    const error = (e as Error).message ?? String(e);
    const poison = e instanceof PoisonMessageError;
    if (poison || m.receiveCount >= o.maxAttempts) {
      o.log.error("message dead-lettered", { error, attempts: m.receiveCount, poison });
      try {
        await o.queue.deadLetter(m, error);
        await o.onDead?.(m.body, error);
      } catch (e2) {
        o.log.warn("dead-letter failed; the message will come again", { error: e2 });
      }
      status.dead++;
      done?.inc({ outcome: "dead" });
      return "dead";
    }
    const delay = backoffMs(m.receiveCount - 1, o.retryBaseMs ?? 500, 60_000);
    o.log.warn("message failed; retrying", { error, attempts: m.receiveCount, delay_ms: delay });
    await o.queue.retry(m, delay, error).catch((e2) => o.log.warn("retry failed", { error: e2 }));
    status.retried++;
    done?.inc({ outcome: "retry" });
    return "retry";
  }
}

/** Runs until `signal` aborts; in-flight messages finish before it returns. */
export async function runConsumer(o: ConsumerOptions, status: ConsumerStatus = {
  handled: 0,
  retried: 0,
  dead: 0,
  inFlight: 0,
}): Promise<void> {
  const inFlight = new Set<Promise<unknown>>();
  let errors = 0;
  while (!o.signal.aborted) {
    if (inFlight.size >= o.concurrency) {
      await Promise.race(inFlight);
      continue;
    }
    let batch: QueueMessage[];
    try {
      batch = await o.queue.receive(o.concurrency - inFlight.size, o.waitMs ?? 5_000, o.signal);
      errors = 0;
    } catch (e) {
      o.log.warn("receive failed", { error: e, attempt: errors });
      await abortableSleep(backoffMs(errors++, 200, 10_000), o.signal);
      continue;
    }
    for (const m of batch) {
      status.inFlight++;
      const p = settle(o, m, status).finally(() => {
        status.inFlight--;
        inFlight.delete(p);
      });
      inFlight.add(p);
    }
  }
  await Promise.allSettled(inFlight);
}
