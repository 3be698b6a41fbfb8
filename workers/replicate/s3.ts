/**
 * The S3 leg of a pipeline: batch files are uploaded from the spool (memory or folder), and read back by
 * targets that load through the client (Postgres) rather than from S3 itself (Redshift's `COPY … FROM
 * 's3://…'`).
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";
import { S3Objects } from "../../shared/s3_objects.ts";

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
 * Files on disk up to this size are uploaded from memory (one read, no stream) while all such uploads
 * together hold less than {@linkcode IN_MEMORY_BUDGET}; others are streamed, so memory stays bounded however
 * many tables a batch touches.
 */
const IN_MEMORY_UPLOAD = 4 * 1024 * 1024;
const IN_MEMORY_BUDGET = 32 * 1024 * 1024;
let inMemory = 0;

function contentType(key: string): string {
  return key.endsWith(".csv") ? "text/csv" : "application/octet-stream";
}

/**
 * A pipeline session's uploads of batch files. Bytes in memory (a batch file the spool kept there, or a
 * small file read whole) go in one PUT of wharf's own ({@linkcode S3Objects}: measured on 830 KiB files,
 * about a quarter of the worker CPU of the SDK's `PutObject`, and no SHA-256 of the body where the
 * connection cannot be tampered with); a large file on disk is streamed by the SDK, never read whole.
 * `close()` ends the kept connections.
 */
export class BatchUploads {
  readonly #objects: S3Objects;

  constructor(readonly client: S3Client) {
    this.#objects = new S3Objects(client);
  }

  /** Uploads a local file. */
  async file(bucket: string, key: string, path: string): Promise<void> {
    const size = (await Deno.stat(path)).size;
    if (size <= IN_MEMORY_UPLOAD && inMemory + size <= IN_MEMORY_BUDGET) {
      inMemory += size;
      try {
        await this.#objects.put(bucket, key, await Deno.readFile(path), { contentType: contentType(key) });
      } finally {
        inMemory -= size;
      }
      return;
    }
    // Large reads: each chunk costs a turn of the worker's event loop, which the stream also needs.
    const body = createReadStream(path, { highWaterMark: 512 * 1024 });
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: body,
          ContentLength: size,
          ContentType: contentType(key),
        }),
      );
    } finally {
      body.destroy();
    }
  }

  /** Uploads a batch file: from memory when the worker kept it there (`data`), else from its file (`path`). */
  async segment(bucket: string, key: string, seg: { path?: string; data?: Uint8Array }): Promise<void> {
    if (seg.path !== undefined) return await this.file(bucket, key, seg.path);
    if (!seg.data) throw new Error(`Cannot upload ${key}: the batch file has neither a path nor bytes`);
    await this.#objects.put(bucket, key, seg.data, { contentType: contentType(key) });
  }

  close(): void {
    this.#objects.close();
  }
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
