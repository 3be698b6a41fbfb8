/**
 * The S3 client of the image feed, built from {@linkcode S3Settings}: path-style addressing and static
 * credentials for the local server, the SDK's default credential chain (profile, role) on AWS.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { FetchHttpHandler } from "@smithy/fetch-http-handler";
import type { S3Settings } from "./s3_config.ts";

/** Creates an S3 client for the feed's buckets. */
export function createS3Client(cfg: S3Settings): S3Client {
  return new S3Client({
    region: cfg.S3_REGION,
    ...(cfg.S3_ENDPOINT ? { endpoint: cfg.S3_ENDPOINT } : {}),
    forcePathStyle: cfg.S3_FORCE_PATH_STYLE ?? Boolean(cfg.S3_ENDPOINT),
    // Checksums only where S3 requires them: computing CRC32 of every body in JavaScript costs more CPU
    // than the thumbnail itself, and S3-compatible stores do not all support the flexible checksums.
    requestChecksumCalculation: "WHEN_REQUIRED",
    // Deno's own fetch (pooled keep-alive connections, native code) rather than the Node http layer,
    // which costs several milliseconds per request under Deno.
    requestHandler: new FetchHttpHandler({ keepAlive: true }),
    responseChecksumValidation: "WHEN_REQUIRED",
    ...(cfg.S3_ACCESS_KEY_ID && cfg.S3_SECRET_ACCESS_KEY
      ? { credentials: { accessKeyId: cfg.S3_ACCESS_KEY_ID, secretAccessKey: cfg.S3_SECRET_ACCESS_KEY } }
      : {}),
  });
}

/** The thumbnail's key for a media key: one thumbnail per image, JPEG, so deletion can find it. */
export function thumbnailKeyFor(mediaKey: string): string {
  return `${mediaKey}.thumb.jpg`;
}
