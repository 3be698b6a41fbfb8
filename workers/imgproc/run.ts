/**
 * One imgproc copy: the consumer over the configured queue, plus (for the local queue) the bridge from
 * the local S3 server's event log. Used by the process entry point, tests and the benchmark.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import type { Registry } from "../../shared/metrics.ts";
import { runBridge } from "./bridge.ts";
import { type ConsumerStatus, runConsumer } from "./consumer.ts";
import { parseEvents } from "./events.ts";
import { type AckInTransaction, applyEvent, markFailed } from "./processor.ts";
import { S3Objects } from "../../shared/s3_objects.ts";
import { PgQueue } from "./pg_queue.ts";
import type { MessageQueue } from "./queue.ts";
import type { ThumbnailOptions } from "./thumbnail.ts";

/** Options for {@linkcode runImgproc}. */
export interface ImgprocOptions {
  sql: Sql;
  s3: S3Client;
  queue: MessageQueue;
  mediaBucket: string;
  thumbnailsBucket: string;
  thumbnail: ThumbnailOptions;
  concurrency: number;
  maxAttempts: number;
  retryBaseMs?: number;
  /** The local S3 server's event log; when set, this copy also bridges it into the Postgres queue. */
  eventsUrl?: string;
  log: Logger;
  metrics?: Registry;
  signal: AbortSignal;
  status?: ConsumerStatus;
}

/** Runs until `signal` aborts. */
export async function runImgproc(o: ImgprocOptions): Promise<void> {
  const outcomes = o.metrics?.counter("wharf_imgproc_events_total", "Object events by outcome");
  using objects = new S3Objects(o.s3);
  const deps = {
    sql: o.sql,
    s3: o.s3,
    objects,
    mediaBucket: o.mediaBucket,
    thumbnailsBucket: o.thumbnailsBucket,
    thumbnail: o.thumbnail,
    log: o.log,
  };
  /** The queue is the Postgres table, in the database the events' transactions write to. */
  const inTransaction = o.queue instanceof PgQueue && o.queue.sql === o.sql;
  const tasks: Promise<void>[] = [];
  if (o.eventsUrl) {
    tasks.push(
      runBridge({ sql: o.sql, eventsUrl: o.eventsUrl, bucket: o.mediaBucket, log: o.log, signal: o.signal }),
    );
  }
  tasks.push(runConsumer({
    queue: o.queue,
    concurrency: o.concurrency,
    maxAttempts: o.maxAttempts,
    retryBaseMs: o.retryBaseMs,
    log: o.log,
    metrics: o.metrics,
    signal: o.signal,
    async handle(body, message) {
      const events = parseEvents(body);
      // A message of the local queue holding one event (as S3 sends them) leaves the queue in the
      // transaction that applies the event: a round trip less, and no window between the two.
      const ack: AckInTransaction | undefined = inTransaction && events.length === 1
        ? { handle: message.handle }
        : undefined;
      for (const ev of events) {
        const outcome = await applyEvent(deps, ev, ack);
        outcomes?.inc({ outcome });
        o.log.debug("event applied", { key: ev.key, event: ev.eventName, outcome });
      }
      return ack?.acked ? "acked" : undefined;
    },
    async onDead(body, error) {
      let events;
      try {
        events = parseEvents(body);
      } catch {
        return; // nothing to name
      }
      for (const ev of events) {
        if (ev.kind === "created" && ev.bucket === o.mediaBucket) await markFailed(o.sql, ev.key, error);
      }
    },
  }, o.status));
  await Promise.all(tasks);
}
