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
import { ObjectTooLargeError, S3ObjectError, type S3Objects } from "../../shared/s3_objects.ts";
import { compareSequencer, type ObjectEvent } from "./events.ts";
import { ackIn } from "./pg_queue.ts";
import { DEFAULT_MAX_BYTES, ImageRejectedError, makeThumbnail, type ThumbnailOptions } from "./thumbnail.ts";

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

function tooLarge(size: number, limit: number): ImageRejectedError {
  return new ImageRejectedError(
    `Cannot make a thumbnail: the file is ${size} bytes, over the limit of ${limit}`,
  );
}

/** A connection held for one event's transaction. */
type Tx = postgres.ReservedSql<Record<string, unknown>>;

/**
 * A queue message to remove in the event's own transaction (the Postgres queue's, holding this one
 * event): `acked` is set once that transaction committed. An event that commits nothing (stale, gone,
 * ignored) leaves the message to the consumer's ack.
 */
export interface AckInTransaction {
  handle: string;
  acked?: boolean;
}

/**
 * Applies `ev`; throws on a transient failure (S3 or the database), which the consumer retries.
 *
 * The transaction is driven on a reserved connection so that its statements go in two pipelined round
 * trips instead of five: BEGIN, the key's lock and the read of its last sequencer together, then the
 * feed's update with COMMIT. The read may share the lock's round trip because under READ COMMITTED each
 * statement takes its snapshot when it starts, and the server starts it only once the lock is held: it
 * sees what the previous holder of the lock committed.
 */
export async function applyEvent(
  d: ProcessorDeps,
  ev: ObjectEvent,
  ack?: AckInTransaction,
): Promise<Outcome> {
  if (ev.bucket !== d.mediaBucket) return "ignored";
  const thumbKey = thumbnailKeyFor(ev.key);
  const tx = await d.sql.reserve();
  // Until COMMIT went through; otherwise (a failure, or a path that wrote nothing) `finally` sends ROLLBACK,
  // so the connection goes back clean (a ROLLBACK with no transaction open only warns).
  let open = true;
  try {
    // One event per key at a time, across every copy; released with the transaction.
    const [, , rows] = await Promise.all([
      tx`begin`,
      tx`select pg_advisory_xact_lock(hashtextextended(${ev.bucket + "/" + ev.key}, 0))`,
      tx`select sequencer from control.imgproc_objects where bucket = ${ev.bucket} and key = ${ev.key}`,
    ]);
    const last = rows[0];
    if (last && ev.sequencer && compareSequencer(ev.sequencer, last.sequencer as string) <= 0) return "stale";
    let outcome: Outcome;
    if (ev.kind === "created") {
      let thumb: Awaited<ReturnType<typeof makeThumbnail>> | undefined;
      const maxBytes = d.thumbnail.maxBytes ?? DEFAULT_MAX_BYTES;
      try {
        // Refused unread when the event says it is too large, else as soon as the answer's length does.
        if (ev.size !== undefined && ev.size > maxBytes) throw tooLarge(ev.size, maxBytes);
        // The upload's bytes live only while the thumbnail is made: a pooled buffer serves the next one.
        thumb = await d.objects.withObject(
          ev.bucket,
          ev.key,
          (bytes) => makeThumbnail(bytes, d.thumbnail),
          { maxBytes },
        ).catch((e) => {
          throw e instanceof ObjectTooLargeError ? tooLarge(e.size, e.limit) : e;
        });
      } catch (e) {
        // Removed since: its removal event follows and settles the key.
        if (isNoSuchKey(e)) return "gone";
        if (!(e instanceof ImageRejectedError)) throw e;
        d.log.warn("image rejected", { key: ev.key, reason: e.message });
        await settle(
          tx,
          ev,
          ack,
          tx`
          update app.feeds set thumbnail_status = 'failed', thumbnail_error = ${e.message}, updated_at = now()
           where media_key = ${ev.key}`,
        );
        outcome = "rejected";
      }
      if (thumb) {
        await d.objects.put(d.thumbnailsBucket, thumbKey, thumb.data, {
          contentType: "image/jpeg",
          cacheControl: "public, max-age=31536000, immutable",
        });
        await settle(
          tx,
          ev,
          ack,
          tx`
          update app.feeds set thumbnail_status = 'ready', thumbnail_key = ${thumbKey}, thumbnail_error = null,
                 updated_at = now()
           where media_key = ${ev.key}`,
        );
        outcome = "thumbnail";
      }
    } else {
      await d.s3.send(new DeleteObjectCommand({ Bucket: d.thumbnailsBucket, Key: thumbKey }));
      // Normally the feed row is gone already; an image removed behind the API's back fails its feed.
      await settle(
        tx,
        ev,
        ack,
        tx`
        update app.feeds set thumbnail_status = 'failed', thumbnail_key = null,
               thumbnail_error = 'The image was removed', updated_at = now()
         where media_key = ${ev.key}`,
      );
      outcome = "removed";
    }
    open = false;
    return outcome!;
  } finally {
    if (open) await tx`rollback`.catch(() => {});
    tx.release();
  }
}

/**
 * Runs `feedUpdate`, records `ev` as the key's last applied event (one statement), removes the queue
 * message when asked, and commits, in one round trip. A failed statement leaves the transaction aborted,
 * and the COMMIT behind it then rolls it back.
 */
async function settle(
  tx: Tx,
  ev: ObjectEvent,
  ack: AckInTransaction | undefined,
  feedUpdate: postgres.PendingQuery<postgres.Row[]>,
): Promise<void> {
  const write = ev.sequencer
    ? tx`
    with feed as (${feedUpdate})
    insert into control.imgproc_objects (bucket, key, sequencer, event_name)
    values (${ev.bucket}, ${ev.key}, ${ev.sequencer}, ${ev.eventName})
    on conflict (bucket, key) do update
      set sequencer = excluded.sequencer, event_name = excluded.event_name, applied_at = now()`
    : feedUpdate;
  const statements: Promise<unknown>[] = [write];
  if (ack) statements.push(ackIn(tx, ack.handle));
  statements.push(tx`commit`);
  for (const r of await Promise.allSettled(statements)) if (r.status === "rejected") throw r.reason;
  if (ack) ack.acked = true;
}

/** Marks the feed of `key` failed (after its event was dead-lettered). */
export async function markFailed(sql: Sql, key: string, reason: string): Promise<void> {
  await sql`
    update app.feeds set thumbnail_status = 'failed', thumbnail_error = ${
    reason.slice(0, 500)
  }, updated_at = now()
     where media_key = ${key} and thumbnail_status = 'pending'`;
}
