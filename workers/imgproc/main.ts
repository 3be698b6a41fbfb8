/**
 * The imgproc worker process: S3 object events in, thumbnails out. With `IMGPROC_SQS_QUEUE` (or the
 * `.env` name `AWS_SQS_QUEUE`) it reads the SQS queue the media bucket notifies; otherwise it reads the
 * local Postgres queue and bridges the local S3 server's events into it. Run more copies to go faster.
 *
 * Env: `DATABASE_URL` (or `POSTGRESS_*`), `S3_*`, `FEED_MEDIA_BUCKET`/`AWS_MEDIA_BUCKET`,
 * `FEED_THUMBNAILS_BUCKET`/`AWS_THUMBNAILS_BUCKET`, `IMGPROC_CONCURRENCY` (4), `IMGPROC_MAX_ATTEMPTS` (5),
 * `IMGPROC_MAX_PIXELS` (40 000 000), `IMGPROC_MAX_BYTES` (64 MiB), `IMGPROC_THUMB_SIZE` (320),
 * `IMGPROC_SQS_DLQ`, `IMGPROC_SQS_ENDPOINT`, `IMGPROC_EVENTS_URL` (default: `S3_ENDPOINT` + `/_wharf/events`).
 */
import { z } from "zod";
import { urlVar } from "../../shared/config.ts";
import { connectPostgres } from "../../shared/db.ts";
import { runWorkerMain } from "../../shared/worker.ts";
import { normalizeFeedEnv, S3Config } from "../../web/feed/s3_config.ts";
import { createS3Client } from "../../web/feed/s3.ts";
import { EVENTS_PATH } from "../../shared/stack/s3_events.ts";
import type { ConsumerStatus } from "./consumer.ts";
import { PgQueue } from "./pg_queue.ts";
import type { MessageQueue } from "./queue.ts";
import { runImgproc } from "./run.ts";
import { createSqsClient, resolveQueueUrl, SqsQueue } from "./sqs_queue.ts";
import { DEFAULT_MAX_BYTES } from "./thumbnail.ts";

/** imgproc's settings. */
export const ImgprocConfig = S3Config.extend({
  DATABASE_URL: urlVar(["postgres:", "postgresql:"]),
  IMGPROC_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  IMGPROC_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(5),
  IMGPROC_MAX_PIXELS: z.coerce.number().int().min(1).default(40_000_000),
  IMGPROC_MAX_BYTES: z.coerce.number().int().min(1).default(DEFAULT_MAX_BYTES),
  IMGPROC_THUMB_SIZE: z.coerce.number().int().min(16).max(2048).default(320),
  IMGPROC_THUMB_QUALITY: z.coerce.number().int().min(1).max(100).default(80),
  IMGPROC_SQS_QUEUE: z.string().optional(),
  IMGPROC_SQS_DLQ: z.string().optional(),
  IMGPROC_SQS_ENDPOINT: urlVar(["http:", "https:"]).optional(),
  IMGPROC_EVENTS_URL: urlVar(["http:", "https:"]).optional(),
});

if (import.meta.main) {
  // The `.env` names of the image-feed backend are accepted: copy them onto the clean names.
  for (const [k, v] of Object.entries(normalizeFeedEnv(Deno.env.toObject()))) {
    if (!Deno.env.get(k)) Deno.env.set(k, v);
  }
  await runWorkerMain({
    name: "imgproc",
    config: ImgprocConfig,
    async run(ctx, cfg) {
      const sql = connectPostgres(cfg.DATABASE_URL, {
        max: cfg.IMGPROC_CONCURRENCY + 3,
        applicationName: "wharf-imgproc",
      });
      const s3 = createS3Client(cfg);
      let queue: MessageQueue;
      let eventsUrl: string | undefined;
      if (cfg.IMGPROC_SQS_QUEUE) {
        // The same static keys as S3 when they are set; otherwise the SDK's chain (an instance role).
        const client = createSqsClient(
          cfg.S3_REGION,
          cfg.IMGPROC_SQS_ENDPOINT,
          cfg.S3_ACCESS_KEY_ID && cfg.S3_SECRET_ACCESS_KEY
            ? { accessKeyId: cfg.S3_ACCESS_KEY_ID, secretAccessKey: cfg.S3_SECRET_ACCESS_KEY }
            : undefined,
        );
        queue = new SqsQueue({
          client,
          queueUrl: await resolveQueueUrl(client, cfg.IMGPROC_SQS_QUEUE),
          deadLetterUrl: cfg.IMGPROC_SQS_DLQ ? await resolveQueueUrl(client, cfg.IMGPROC_SQS_DLQ) : undefined,
        });
      } else {
        // Claims as many ahead as run at once: a claim per batch rather than per image.
        queue = new PgQueue({ sql, consumerId: ctx.instanceId, prefetch: cfg.IMGPROC_CONCURRENCY });
        eventsUrl = cfg.IMGPROC_EVENTS_URL ??
          (cfg.S3_ENDPOINT ? cfg.S3_ENDPOINT.replace(/\/$/, "") + EVENTS_PATH : undefined);
      }
      const status: ConsumerStatus = { handled: 0, retried: 0, dead: 0, inFlight: 0 };
      let depth = 0;
      const depthGauge = ctx.metrics.gauge("wharf_imgproc_queue_depth", "Messages waiting in the queue");
      const sampleDepth = (async () => {
        // Sampled, not per message: on SQS each sample is an API call.
        while (!ctx.signal.aborted) {
          try {
            depth = await queue.depth();
            depthGauge.set(depth);
          } catch (e) {
            ctx.log.debug("queue depth unavailable", { error: e });
          }
          await ctx.sleep(5_000);
        }
      })();
      try {
        ctx.reportTo(sql, () => ({ ...status, depth, queue: cfg.IMGPROC_SQS_QUEUE ? "sqs" : "postgres" }));
        ctx.ready();
        ctx.log.info("consuming", {
          queue: cfg.IMGPROC_SQS_QUEUE ? "sqs" : "postgres",
          bridge: Boolean(eventsUrl),
        });
        await runImgproc({
          sql,
          s3,
          queue,
          eventsUrl,
          mediaBucket: cfg.FEED_MEDIA_BUCKET,
          thumbnailsBucket: cfg.FEED_THUMBNAILS_BUCKET,
          thumbnail: {
            size: cfg.IMGPROC_THUMB_SIZE,
            maxPixels: cfg.IMGPROC_MAX_PIXELS,
            maxBytes: cfg.IMGPROC_MAX_BYTES,
            quality: cfg.IMGPROC_THUMB_QUALITY,
          },
          concurrency: cfg.IMGPROC_CONCURRENCY,
          maxAttempts: cfg.IMGPROC_MAX_ATTEMPTS,
          log: ctx.log,
          metrics: ctx.metrics,
          signal: ctx.signal,
          status,
        });
      } finally {
        await sampleDepth;
        await queue.close();
        s3.destroy();
        await sql.end({ timeout: 5 });
      }
    },
  });
}
