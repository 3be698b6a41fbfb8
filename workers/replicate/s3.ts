/**
 * The S3 leg of a pipeline: batch files are uploaded from the spool folder, and read back by targets that
 * load through the client (Postgres) rather than from S3 itself (Redshift's `COPY … FROM 's3://…'`).
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createReadStream, type ReadStream } from "node:fs";
import type { Readable } from "node:stream";

/** S3 settings (the same `S3_*` variables every wharf process reads). */
export interface S3Settings {
  endpoint?: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle: boolean;
}

/** Builds a client; credentials fall back to the SDK's chain (instance role) when not given. */
export function s3Client(s: S3Settings): S3Client {
  return new S3Client({
    region: s.region,
    endpoint: s.endpoint,
    forcePathStyle: s.forcePathStyle,
    // Streamed uploads would otherwise be sent aws-chunked with a trailing checksum, which S3-compatible
    // servers (the local one among them) do not all understand.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials: s.accessKeyId && s.secretAccessKey
      ? { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey }
      : undefined,
  });
}

/**
 * Files up to this size are uploaded from memory (one read, no stream) while all such uploads together
 * hold less than {@linkcode IN_MEMORY_BUDGET}; others are streamed, so memory stays bounded however many
 * tables a batch touches.
 */
const IN_MEMORY_UPLOAD = 4 * 1024 * 1024;
const IN_MEMORY_BUDGET = 32 * 1024 * 1024;
let inMemory = 0;

/** Puts a batch file's bytes, or a stream of its `size` bytes, at `key` (its type from its name). */
function putBatchFile(
  client: S3Client,
  bucket: string,
  key: string,
  body: Uint8Array | ReadStream,
  size: number,
): Promise<unknown> {
  return client.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentLength: size,
      ContentType: key.endsWith(".csv") ? "text/csv" : "application/octet-stream",
    }),
  );
}

/** Uploads a local file (a large one streamed, never read whole into memory). */
export async function uploadFile(client: S3Client, bucket: string, key: string, path: string): Promise<void> {
  const size = (await Deno.stat(path)).size;
  if (size <= IN_MEMORY_UPLOAD && inMemory + size <= IN_MEMORY_BUDGET) {
    inMemory += size;
    try {
      await putBatchFile(client, bucket, key, await Deno.readFile(path), size);
    } finally {
      inMemory -= size;
    }
    return;
  }
  // Large reads: each chunk costs a turn of the worker's event loop, which the stream also needs.
  const body = createReadStream(path, { highWaterMark: 512 * 1024 });
  try {
    await putBatchFile(client, bucket, key, body, size);
  } finally {
    body.destroy();
  }
}

/**
 * Uploads a batch file: from memory when the worker kept it there (`data`), else from its local file
 * (`path`).
 */
export async function uploadSegment(
  client: S3Client,
  bucket: string,
  key: string,
  seg: { path?: string; data?: Uint8Array },
): Promise<void> {
  if (seg.path !== undefined) return await uploadFile(client, bucket, key, seg.path);
  if (!seg.data) throw new Error(`Cannot upload ${key}: the batch file has neither a path nor bytes`);
  await putBatchFile(client, bucket, key, seg.data, seg.data.length);
}

/** Uploads a small text object (a manifest). */
export async function putText(client: S3Client, bucket: string, key: string, text: string): Promise<void> {
  await client.send(
    new PutObjectCommand({ Bucket: bucket, Key: key, Body: text, ContentType: "application/json" }),
  );
}

/** Opens an object as a Node readable stream. */
export async function openObject(client: S3Client, bucket: string, key: string): Promise<Readable> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  if (!res.Body) throw new Error(`Cannot read s3://${bucket}/${key}: the object has no body`);
  return res.Body as Readable;
}
