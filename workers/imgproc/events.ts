/**
 * S3 event notifications as imgproc reads them: parsed with zod (a body that is not one is a poison
 * message), object keys URL-decoded the way S3 encodes them, and sequencers compared as S3 orders them.
 */
import { z } from "zod";

const S3Record = z.object({
  eventName: z.string(),
  s3: z.object({
    bucket: z.object({ name: z.string() }),
    object: z.object({
      key: z.string(),
      size: z.coerce.number().optional(),
      eTag: z.string().optional(),
      sequencer: z.string().regex(/^[0-9A-Fa-f]+$/).optional(),
    }),
  }),
});

const Notification = z.union([
  z.object({ Records: z.array(S3Record) }),
  // S3 sends this once when a notification is configured; there is nothing to do.
  z.object({ Event: z.literal("s3:TestEvent") }),
]);

/** One object event. */
export interface ObjectEvent {
  kind: "created" | "removed";
  eventName: string;
  bucket: string;
  key: string;
  size?: number;
  eTag?: string;
  /** Empty when the event carried none (then it always applies). */
  sequencer: string;
}

/** Thrown for a body that can never be processed: dead-lettered at once, never retried. */
export class PoisonMessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PoisonMessageError";
  }
}

/** S3 encodes keys in events like a form value (`+` for space, `%XX` for the rest). */
export function decodeEventKey(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, " "));
  } catch {
    throw new PoisonMessageError("Cannot decode the object key of the event");
  }
}

/** The inverse of {@linkcode decodeEventKey}, for events made locally. */
export function encodeEventKey(key: string): string {
  return encodeURIComponent(key).replace(/%20/g, "+").replace(/%2F/g, "/");
}

/** The object events of a message body; other event kinds (tagging, ACL…) are left out. */
export function parseEvents(body: string): ObjectEvent[] {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new PoisonMessageError("Cannot read the message: it is not JSON");
  }
  const parsed = Notification.safeParse(json);
  if (!parsed.success) {
    throw new PoisonMessageError("Cannot read the message: it is not an S3 event notification");
  }
  if (!("Records" in parsed.data)) return [];
  return parsed.data.Records.flatMap((r): ObjectEvent[] => {
    const kind = r.eventName.startsWith("ObjectCreated:")
      ? "created"
      : r.eventName.startsWith("ObjectRemoved:")
      ? "removed"
      : undefined;
    if (!kind) return [];
    return [{
      kind,
      eventName: r.eventName,
      bucket: r.s3.bucket.name,
      key: decodeEventKey(r.s3.object.key),
      size: r.s3.object.size,
      eTag: r.s3.object.eTag,
      sequencer: (r.s3.object.sequencer ?? "").toUpperCase(),
    }];
  });
}

/**
 * Compares two sequencers of one key: negative when `a` came first. Sequencers are hexadecimal strings
 * of varying length; the shorter is padded with zeros on the right before comparing as strings.
 */
export function compareSequencer(a: string, b: string): number {
  const n = Math.max(a.length, b.length);
  const pa = a.toUpperCase().padEnd(n, "0"), pb = b.toUpperCase().padEnd(n, "0");
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}
