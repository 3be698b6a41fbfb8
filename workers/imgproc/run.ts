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
import { applyEvent, markFailed } from "./processor.ts";
import { S3Objects } from "../../web/feed/s3_objects.ts";
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
    async handle(body) {
      for (const ev of parseEvents(body)) {
        const outcome = await applyEvent(deps, ev);
        outcomes?.inc({ outcome });
        o.log.debug("event applied", { key: ev.key, event: ev.eventName, outcome });
      }
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
