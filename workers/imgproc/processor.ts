/**
 * Applies one object event: a created image gets its thumbnail, a removed one loses it, and the feed's
 * thumbnail status follows.
 *
 * Order and idempotence come from `control.imgproc_objects`: under a per-key advisory lock (copies of
 * imgproc may hold events of one key at once), an event whose sequencer is not past the last applied
 * one is skipped. So the same event twice makes one thumbnail, and a creation that arrives after the
 * removal that followed it does not bring the thumbnail back.
 */
import { DeleteObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type postgres from "postgres";
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { thumbnailKeyFor } from "../../web/feed/s3.ts";
import { S3ObjectError, type S3Objects } from "../../web/feed/s3_objects.ts";
import { compareSequencer, type ObjectEvent } from "./events.ts";
import { ImageRejectedError, makeThumbnail, type ThumbnailOptions } from "./thumbnail.ts";

/** What {@linkcode applyEvent} needs. */
export interface ProcessorDeps {
  sql: Sql;
  s3: S3Client;
  /** Reads of uploads and writes of thumbnails (the per-image calls). */
  objects: S3Objects;
  mediaBucket: string;
  thumbnailsBucket: string;
  thumbnail: ThumbnailOptions;
  log: Logger;
}

/** What became of an event. */
export type Outcome = "thumbnail" | "removed" | "rejected" | "stale" | "gone" | "ignored";

function isNoSuchKey(e: unknown): boolean {
  return e instanceof S3ObjectError && (e.code === "NoSuchKey" || e.status === 404);
}

/** Applies `ev`; throws on a transient failure (S3 or the database), which the consumer retries. */
export async function applyEvent(d: ProcessorDeps, ev: ObjectEvent): Promise<Outcome> {
  if (ev.bucket !== d.mediaBucket) return "ignored";
  const thumbKey = thumbnailKeyFor(ev.key);
  return await d.sql.begin(async (tx) => {
    // One event per key at a time, across every copy; released with the transaction. The read of the
    // last sequencer is a separate statement on purpose: under READ COMMITTED each statement takes its
    // snapshot when it starts, so only a statement begun after the lock sees what the previous holder of
    // the lock committed.
    await tx`select pg_advisory_xact_lock(hashtextextended(${ev.bucket + "/" + ev.key}, 0))`;
    const [last] = await tx`
      select sequencer from control.imgproc_objects where bucket = ${ev.bucket} and key = ${ev.key}`;
    if (last && ev.sequencer && compareSequencer(ev.sequencer, last.sequencer as string) <= 0) return "stale";
    if (ev.kind === "created") {
      let thumb: Awaited<ReturnType<typeof makeThumbnail>>;
      try {
        // The upload's bytes live only while the thumbnail is made: a pooled buffer serves the next one.
        thumb = await d.objects.withObject(ev.bucket, ev.key, (bytes) => makeThumbnail(bytes, d.thumbnail));
      } catch (e) {
        // Removed since: its removal event follows and settles the key.
        if (isNoSuchKey(e)) return "gone";
        if (!(e instanceof ImageRejectedError)) throw e;
        return await reject(d, tx, ev, e);
      }
      await d.objects.put(d.thumbnailsBucket, thumbKey, thumb.data, {
        contentType: "image/jpeg",
        cacheControl: "public, max-age=31536000, immutable",
      });
      await settle(
        tx,
        ev,
        tx`
        update app.feeds set thumbnail_status = 'ready', thumbnail_key = ${thumbKey}, thumbnail_error = null,
               updated_at = now()
         where media_key = ${ev.key}`,
      );
      return "thumbnail";
    } else {
      await d.s3.send(new DeleteObjectCommand({ Bucket: d.thumbnailsBucket, Key: thumbKey }));
      // Normally the feed row is gone already; an image removed behind the API's back fails its feed.
      await settle(
        tx,
        ev,
        tx`
        update app.feeds set thumbnail_status = 'failed', thumbnail_key = null,
               thumbnail_error = 'The image was removed', updated_at = now()
         where media_key = ${ev.key}`,
      );
      return "removed";
    }
  });
}

/** Marks the feed of a rejected image failed, with the reason, and records the event. */
async function reject(
  d: ProcessorDeps,
  tx: postgres.TransactionSql<Record<string, unknown>>,
  ev: ObjectEvent,
  e: ImageRejectedError,
): Promise<Outcome> {
  d.log.warn("image rejected", { key: ev.key, reason: e.message });
  await settle(
    tx,
    ev,
    tx`
    update app.feeds set thumbnail_status = 'failed', thumbnail_error = ${e.message}, updated_at = now()
     where media_key = ${ev.key}`,
  );
  return "rejected";
}

/**
 * Runs `feedUpdate` and records `ev` as the key's last applied event, in one statement (one round trip
 * of the event's transaction instead of two).
 */
async function settle(
  tx: postgres.TransactionSql<Record<string, unknown>>,
  ev: ObjectEvent,
  feedUpdate: postgres.PendingQuery<postgres.Row[]>,
): Promise<void> {
  if (!ev.sequencer) {
    await feedUpdate;
    return;
  }
  await tx`
    with feed as (${feedUpdate})
    insert into control.imgproc_objects (bucket, key, sequencer, event_name)
    values (${ev.bucket}, ${ev.key}, ${ev.sequencer}, ${ev.eventName})
    on conflict (bucket, key) do update
      set sequencer = excluded.sequencer, event_name = excluded.event_name, applied_at = now()`;
}

/** Marks the feed of `key` failed (after its event was dead-lettered). */
export async function markFailed(sql: Sql, key: string, reason: string): Promise<void> {
  await sql`
    update app.feeds set thumbnail_status = 'failed', thumbnail_error = ${
    reason.slice(0, 500)
  }, updated_at = now()
     where media_key = ${key} and thumbnail_status = 'pending'`;
}
