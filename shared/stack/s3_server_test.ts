import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { crc32Base64 } from "../s3_objects.ts";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { testEnv } from "../testing/mod.ts";
import { createS3Client } from "../../web/feed/s3.ts";
import { freePort } from "./process.ts";
import { LOCAL_S3_CREDENTIALS, type LocalS3, startS3 } from "./s3.ts";
import { EVENTS_PATH } from "./s3_events.ts";

const REGION = "us-east-1";

function client(s3: LocalS3, extra: Partial<ConstructorParameters<typeof S3Client>[0]> = {}): S3Client {
  return new S3Client({
    region: REGION,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: LOCAL_S3_CREDENTIALS,
    maxAttempts: 1,
    ...extra,
  });
}

/** The feed's client (Deno fetch, checksums only when required), as wharf uses it. */
function feedClient(s3: LocalS3): S3Client {
  return createS3Client(
    {
      S3_REGION: REGION,
      S3_ENDPOINT: s3.endpoint,
      S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    } as Parameters<typeof createS3Client>[0],
  );
}

async function text(c: S3Client, bucket: string, key: string): Promise<string> {
  const r = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return await r.Body!.transformToString();
}

async function rejects(p: Promise<unknown>, name: string, status?: number): Promise<void> {
  await assert.rejects(p, (e: Error & { $metadata?: { httpStatusCode?: number } }) => {
    assert.equal(e.name, name);
    if (status) assert.equal(e.$metadata?.httpStatusCode, status);
    return true;
  });
}

function md5(b: Uint8Array | string): string {
  return createHash("md5").update(b).digest("hex");
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function eventsOf(s3: LocalS3, bucket: string, after = 0): Promise<{ seq: number; body: string }[]> {
  const r = await fetch(`${s3.endpoint}${EVENTS_PATH}?bucket=${bucket}&after=${after}&limit=1000`);
  return (await r.json()).events;
}

async function withServer(
  dir: string,
  fn: (s3: LocalS3) => Promise<void>,
  buckets = ["media"],
): Promise<void> {
  const s3 = await startS3({ dir, port: freePort(), buckets });
  try {
    await fn(s3);
  } finally {
    await s3.stop();
  }
}

Deno.test("the local S3 server speaks S3 to the AWS SDK", async (t) => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "s3srv-" });
  await withServer(dir, async (s3) => {
    const c = client(s3, { requestChecksumCalculation: "WHEN_REQUIRED" });
    const feed = feedClient(s3);

    await t.step("buckets are created, listed, checked and deleted with S3's errors", async () => {
      await c.send(new CreateBucketCommand({ Bucket: "other-bucket" }));
      await rejects(
        c.send(new CreateBucketCommand({ Bucket: "other-bucket" })),
        "BucketAlreadyOwnedByYou",
        409,
      );
      await rejects(c.send(new CreateBucketCommand({ Bucket: "Bad_Name" })), "InvalidBucketName", 400);
      const names = (await c.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name);
      assert.deepEqual(names, ["media", "other-bucket"]);
      await c.send(new HeadBucketCommand({ Bucket: "other-bucket" }));
      await rejects(c.send(new HeadBucketCommand({ Bucket: "nope-bucket" })), "NotFound", 404);
      await c.send(new PutObjectCommand({ Bucket: "other-bucket", Key: "x", Body: "x" }));
      await rejects(c.send(new DeleteBucketCommand({ Bucket: "other-bucket" })), "BucketNotEmpty", 409);
      await c.send(new DeleteObjectCommand({ Bucket: "other-bucket", Key: "x" }));
      await c.send(new DeleteBucketCommand({ Bucket: "other-bucket" }));
      await rejects(c.send(new GetObjectCommand({ Bucket: "other-bucket", Key: "x" })), "NoSuchBucket", 404);
    });

    await t.step("objects keep their headers and metadata, and tricky keys stay apart", async () => {
      const put = await feed.send(
        new PutObjectCommand({
          Bucket: "media",
          Key: "doc.txt",
          Body: "hello",
          ContentType: "text/plain; charset=utf-8",
          CacheControl: "max-age=60",
          ContentDisposition: 'attachment; filename="d.txt"',
          ContentEncoding: "identity",
          Metadata: { owner: "ann", "Mixed-Case": "v" },
        }),
      );
      assert.equal(put.ETag, `"${md5("hello")}"`);
      const head = await feed.send(new HeadObjectCommand({ Bucket: "media", Key: "doc.txt" }));
      assert.equal(head.ContentType, "text/plain; charset=utf-8");
      assert.equal(head.CacheControl, "max-age=60");
      assert.equal(head.ContentDisposition, 'attachment; filename="d.txt"');
      assert.equal(head.ContentEncoding, "identity");
      assert.equal(head.ContentLength, 5);
      assert.deepEqual(head.Metadata, { owner: "ann", "mixed-case": "v" });
      await rejects(feed.send(new HeadObjectCommand({ Bucket: "media", Key: "missing" })), "NotFound", 404);
      await rejects(feed.send(new GetObjectCommand({ Bucket: "media", Key: "missing" })), "NoSuchKey", 404);

      const keys = [
        "a",
        "a/b",
        "a/b/c",
        "sp ace+plus%pct",
        "ünï/cödé/日本.jpg",
        "q?x=1&y=#h",
        "tilde~*'()!",
        "😀/x",
      ];
      for (const key of keys) {
        await c.send(new PutObjectCommand({ Bucket: "media", Key: key, Body: `body of ${key}` }));
      }
      for (const key of keys) assert.equal(await text(c, "media", key), `body of ${key}`);
      const long = "k/" + "é".repeat(511); // 1024 bytes
      await c.send(new PutObjectCommand({ Bucket: "media", Key: long, Body: "long" }));
      assert.equal(await text(c, "media", long), "long");
      await rejects(
        c.send(new PutObjectCommand({ Bucket: "media", Key: long + "x", Body: "x" })),
        "KeyTooLongError",
        400,
      );
      await c.send(new DeleteObjectCommand({ Bucket: "media", Key: "a" }));
      assert.equal(await text(c, "media", "a/b"), "body of a/b");
      await c.send(new DeleteObjectCommand({ Bucket: "media", Key: "a" })); // absent: still 204

      await c.send(new PutObjectCommand({ Bucket: "media", Key: "empty", Body: new Uint8Array(0) }));
      assert.equal(await text(c, "media", "empty"), "");
      assert.equal((await c.send(new HeadObjectCommand({ Bucket: "media", Key: "empty" }))).ContentLength, 0);
      // Conditional writes: If-None-Match: * creates only; If-Match replaces only the named version.
      await c.send(new PutObjectCommand({ Bucket: "media", Key: "once", Body: "1", IfNoneMatch: "*" }));
      await rejects(
        c.send(new PutObjectCommand({ Bucket: "media", Key: "once", Body: "2", IfNoneMatch: "*" })),
        "PreconditionFailed",
        412,
      );
      await rejects(
        c.send(new PutObjectCommand({ Bucket: "media", Key: "once", Body: "3", IfMatch: '"0000"' })),
        "PreconditionFailed",
        412,
      );
      await c.send(
        new PutObjectCommand({ Bucket: "media", Key: "once", Body: "4", IfMatch: `"${md5("1")}"` }),
      );
      assert.equal(await text(c, "media", "once"), "4");
    });

    await t.step(
      "Content-MD5 is checked and the SDK's checksum and streaming forms are stored whole",
      async () => {
        await rejects(
          c.send(
            new PutObjectCommand({
              Bucket: "media",
              Key: "md5",
              Body: "abc",
              ContentMD5: "AAAAAAAAAAAAAAAAAAAAAA==",
            }),
          ),
          "BadDigest",
          400,
        );
        await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "md5" })), "NotFound");
        const b64 = createHash("md5").update("abc").digest("base64");
        await c.send(new PutObjectCommand({ Bucket: "media", Key: "md5", Body: "abc", ContentMD5: b64 }));
        // SDK defaults: a CRC32 header with a buffer, aws-chunked with a trailer with a stream.
        const d = client(s3);
        const withCrc = await d.send(
          new PutObjectCommand({ Bucket: "media", Key: "crc", Body: bytes(70_000, 1) }),
        );
        assert.equal(
          withCrc.ChecksumCRC32,
          crc32Base64(bytes(70_000, 1)),
          "the checksum is checked and echoed",
        );
        await rejects(
          d.send(
            new PutObjectCommand({ Bucket: "media", Key: "badcrc", Body: "abc", ChecksumCRC32: "AAAAAA==" }),
          ),
          "BadDigest",
          400,
        );
        await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "badcrc" })), "NotFound");
        assert.equal(
          (await d.send(new HeadObjectCommand({ Bucket: "media", Key: "crc" }))).ETag,
          `"${md5(bytes(70_000, 1))}"`,
        );
        const big = bytes(300_000, 2);
        await d.send(
          new PutObjectCommand({
            Bucket: "media",
            Key: "chunked",
            Body: Readable.from([big.subarray(0, 100_000), big.subarray(100_000)]),
            ContentLength: big.length,
          }),
        );
        const head = await d.send(new HeadObjectCommand({ Bucket: "media", Key: "chunked" }));
        assert.equal(head.ETag, `"${md5(big)}"`);
        assert.equal(head.ContentLength, big.length);
        assert.equal(head.ContentEncoding, undefined, "aws-chunked is not stored as the object's encoding");
      },
    );

    await t.step("objects come back whole: read at once up to 16 MiB, streamed above", async () => {
      for (
        const [key, n] of [["photo", 3_500_000], ["at-limit", 16 * 1024 * 1024], [
          "video",
          17_000_000,
        ]] as const
      ) {
        const b = bytes(n, 7);
        await c.send(new PutObjectCommand({ Bucket: "media", Key: key, Body: b }));
        const got = await c.send(new GetObjectCommand({ Bucket: "media", Key: key }));
        assert.equal(got.ContentLength, n);
        const back = await got.Body!.transformToByteArray();
        assert.equal(back.length, n, key);
        assert.equal(md5(back), md5(b), key);
        await c.send(new DeleteObjectCommand({ Bucket: "media", Key: key }));
      }
    });

    await t.step("GETs read at once and in flight together each get their own bytes", async () => {
      // The server reads such objects into one reused buffer: each answer must hold its own copy.
      const objects = [1_000_000, 3_000_000, 2_000_000, 3_500_000, 500_000, 2_500_000].map((n, i) => ({
        key: `together/${i}`,
        body: bytes(n, 11 + i),
      }));
      for (const o of objects) {
        await c.send(new PutObjectCommand({ Bucket: "media", Key: o.key, Body: o.body }));
      }
      // Every answer arrives before any body is read, so all of them are in flight at once.
      const answers = await Promise.all(
        objects.map((o) => c.send(new GetObjectCommand({ Bucket: "media", Key: o.key }))),
      );
      for (const [i, got] of answers.entries()) {
        const back = await got.Body!.transformToByteArray();
        assert.equal(md5(back), md5(objects[i].body), objects[i].key);
      }
      for (const o of objects) await c.send(new DeleteObjectCommand({ Bucket: "media", Key: o.key }));
    });

    await t.step("range and conditional GETs answer 206, 416, 304 and 412", async () => {
      await c.send(new PutObjectCommand({ Bucket: "media", Key: "digits", Body: "0123456789" }));
      const etag = `"${md5("0123456789")}"`;
      const part = await c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", Range: "bytes=2-5" }));
      assert.equal(await part.Body!.transformToString(), "2345");
      assert.equal(part.ContentRange, "bytes 2-5/10");
      assert.equal(part.$metadata.httpStatusCode, 206);
      const tail = await c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", Range: "bytes=-3" }));
      assert.equal(await tail.Body!.transformToString(), "789");
      const open = await c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", Range: "bytes=7-" }));
      assert.equal(await open.Body!.transformToString(), "789");
      await rejects(
        c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", Range: "bytes=10-12" })),
        "InvalidRange",
        416,
      );
      await rejects(
        c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", IfNoneMatch: etag })),
        "Unknown", // a 304 has no body, on S3 too
        304,
      );
      await rejects(
        c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", IfMatch: '"0000"' })),
        "PreconditionFailed",
        412,
      );
      const ok = await c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", IfMatch: etag }));
      assert.equal(await ok.Body!.transformToString(), "0123456789");
      const future = new Date(Date.now() + 3600_000);
      await rejects(
        c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", IfModifiedSince: future })),
        "Unknown", // a 304 has no body, on S3 too
        304,
      );
      const past = new Date(Date.now() - 3600_000);
      await rejects(
        c.send(new GetObjectCommand({ Bucket: "media", Key: "digits", IfUnmodifiedSince: past })),
        "PreconditionFailed",
        412,
      );
      const over = await c.send(
        new GetObjectCommand({
          Bucket: "media",
          Key: "digits",
          ResponseContentType: "text/x-digits",
          ResponseContentDisposition: "inline",
        }),
      );
      assert.equal(over.ContentType, "text/x-digits");
      assert.equal(over.ContentDisposition, "inline");
      await over.Body!.transformToString();
    });

    await t.step(
      "listings page through keys with a delimiter, prefixes, start-after and url encoding",
      async () => {
        await c.send(new CreateBucketCommand({ Bucket: "listing" }));
        const keys = ["a/1", "a/2", "b", "c/x/1", "c/y", "d", "d/1", "e f", "e+g"];
        for (const key of keys) {
          await c.send(new PutObjectCommand({ Bucket: "listing", Key: key, Body: key }));
        }
        const seen: string[] = [];
        let token: string | undefined;
        let pages = 0;
        do {
          const page = await c.send(
            new ListObjectsV2Command({
              Bucket: "listing",
              Delimiter: "/",
              MaxKeys: 2,
              ContinuationToken: token,
            }),
          );
          pages++;
          for (const o of page.Contents ?? []) seen.push(o.Key!);
          for (const p of page.CommonPrefixes ?? []) seen.push(p.Prefix!);
          token = page.NextContinuationToken;
          assert.equal(page.IsTruncated, token !== undefined);
        } while (token);
        assert.deepEqual(seen.sort(), ["a/", "b", "c/", "d", "d/", "e f", "e+g"]);
        assert.equal(pages, 4);
        const all = await c.send(new ListObjectsV2Command({ Bucket: "listing" }));
        assert.deepEqual(all.Contents!.map((o) => o.Key), keys);
        assert.equal(all.Contents![0].Size, 3);
        const c1 = await c.send(
          new ListObjectsV2Command({ Bucket: "listing", Prefix: "c/", Delimiter: "/" }),
        );
        assert.deepEqual(c1.Contents!.map((o) => o.Key), ["c/y"]);
        assert.deepEqual(c1.CommonPrefixes!.map((p) => p.Prefix), ["c/x/"]);
        const after = await c.send(new ListObjectsV2Command({ Bucket: "listing", StartAfter: "d" }));
        assert.deepEqual(after.Contents!.map((o) => o.Key), ["d/1", "e f", "e+g"]);
        const v1 = await c.send(
          new ListObjectsCommand({ Bucket: "listing", Delimiter: "/", Marker: "b", MaxKeys: 2 }),
        );
        assert.deepEqual(v1.Contents!.map((o) => o.Key), ["d"]);
        assert.deepEqual(v1.CommonPrefixes!.map((p) => p.Prefix), ["c/"]);
        assert.equal(v1.IsTruncated, true);
        assert.equal(v1.NextMarker, "d");
        const enc = await c.send(
          new ListObjectsV2Command({ Bucket: "listing", Prefix: "e", EncodingType: "url" }),
        );
        assert.deepEqual(enc.Contents!.map((o) => o.Key), ["e+f", "e%2Bg"]);
      },
    );

    await t.step("DeleteObjects and CopyObject work and report like S3", async () => {
      await c.send(
        new PutObjectCommand({
          Bucket: "media",
          Key: "src",
          Body: "copy me",
          ContentType: "text/plain",
          Metadata: { m: "1" },
        }),
      );
      const copied = await c.send(
        new CopyObjectCommand({ Bucket: "media", Key: "dst", CopySource: "media/src" }),
      );
      assert.equal(copied.CopyObjectResult!.ETag, `"${md5("copy me")}"`);
      const head = await c.send(new HeadObjectCommand({ Bucket: "media", Key: "dst" }));
      assert.equal(head.ContentType, "text/plain");
      assert.deepEqual(head.Metadata, { m: "1" });
      await c.send(
        new CopyObjectCommand({
          Bucket: "media",
          Key: "dst 2/ü",
          CopySource: encodeURIComponent("media/src"),
          MetadataDirective: "REPLACE",
          ContentType: "text/other",
          Metadata: { m: "2" },
        }),
      );
      const replaced = await c.send(new HeadObjectCommand({ Bucket: "media", Key: "dst 2/ü" }));
      assert.equal(replaced.ContentType, "text/other");
      assert.deepEqual(replaced.Metadata, { m: "2" });
      await rejects(
        c.send(new CopyObjectCommand({ Bucket: "media", Key: "x", CopySource: "media/none" })),
        "NoSuchKey",
        404,
      );
      const del = await c.send(
        new DeleteObjectsCommand({
          Bucket: "media",
          Delete: { Objects: [{ Key: "dst" }, { Key: "dst 2/ü" }, { Key: "never" }] },
        }),
      );
      assert.deepEqual(del.Deleted!.map((d) => d.Key).sort(), ["dst", "dst 2/ü", "never"]);
      await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "dst" })), "NotFound");
    });

    await t.step("multipart uploads complete with a -N ETag, list their parts and abort", async () => {
      const p1 = bytes(5 * 1024 * 1024, 3), p2 = bytes(1000, 4);
      const { UploadId } = await c.send(
        new CreateMultipartUploadCommand({
          Bucket: "media",
          Key: "big/file",
          ContentType: "application/x-big",
        }),
      );
      const e1 = (await c.send(
        new UploadPartCommand({ Bucket: "media", Key: "big/file", UploadId, PartNumber: 1, Body: p1 }),
      )).ETag!;
      const e2 = (await c.send(
        new UploadPartCommand({ Bucket: "media", Key: "big/file", UploadId, PartNumber: 2, Body: p2 }),
      )).ETag!;
      const parts = await c.send(new ListPartsCommand({ Bucket: "media", Key: "big/file", UploadId }));
      assert.deepEqual(parts.Parts!.map((p) => [p.PartNumber, p.Size, p.ETag]), [[1, p1.length, e1], [
        2,
        p2.length,
        e2,
      ]]);
      await rejects(
        c.send(
          new CompleteMultipartUploadCommand({
            Bucket: "media",
            Key: "big/file",
            UploadId,
            MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e2 }] },
          }),
        ),
        "InvalidPart",
        400,
      );
      const done = await c.send(
        new CompleteMultipartUploadCommand({
          Bucket: "media",
          Key: "big/file",
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: e2 }] },
        }),
      );
      const expected = createHash("md5").update(Buffer.from(md5(p1) + md5(p2), "hex")).digest("hex") + "-2";
      assert.equal(done.ETag, `"${expected}"`);
      const got = await c.send(new GetObjectCommand({ Bucket: "media", Key: "big/file" }));
      assert.equal(got.ContentType, "application/x-big");
      const body = await got.Body!.transformToByteArray();
      assert.equal(body.length, p1.length + p2.length);
      assert.equal(md5(body), md5(Buffer.concat([p1, p2])));

      // UploadPartCopy: parts made from byte ranges of an existing object, reassembled in another order.
      const copy = await c.send(new CreateMultipartUploadCommand({ Bucket: "media", Key: "copied" }));
      const partCopy = (n: number, range?: string, source = "media/big/file") =>
        c.send(
          new UploadPartCopyCommand({
            Bucket: "media",
            Key: "copied",
            UploadId: copy.UploadId,
            PartNumber: n,
            CopySource: source,
            CopySourceRange: range,
          }),
        );
      const c1 = await partCopy(1, `bytes=0-${p1.length - 1}`);
      assert.equal(c1.CopyPartResult!.ETag, e1, "a copied part's ETag is the MD5 of its bytes");
      const c2 = await partCopy(2, `bytes=${p1.length}-${p1.length + p2.length - 1}`);
      assert.equal(c2.CopyPartResult!.ETag, e2);
      await rejects(partCopy(3, `bytes=0-${p1.length + p2.length}`), "InvalidArgument", 400);
      await rejects(partCopy(3, "bytes=0-"), "InvalidArgument", 400);
      await rejects(partCopy(3, undefined, "media/no/such/key"), "NoSuchKey", 404);
      await c.send(
        new CompleteMultipartUploadCommand({
          Bucket: "media",
          Key: "copied",
          UploadId: copy.UploadId,
          MultipartUpload: {
            Parts: [{ PartNumber: 1, ETag: c1.CopyPartResult!.ETag }, {
              PartNumber: 2,
              ETag: c2.CopyPartResult!.ETag,
            }],
          },
        }),
      );
      const copied = await c.send(new GetObjectCommand({ Bucket: "media", Key: "copied" }));
      assert.equal(md5(await copied.Body!.transformToByteArray()), md5(Buffer.concat([p1, p2])));

      const small = await c.send(new CreateMultipartUploadCommand({ Bucket: "media", Key: "small" }));
      const s1 = await c.send(
        new UploadPartCommand({
          Bucket: "media",
          Key: "small",
          UploadId: small.UploadId,
          PartNumber: 1,
          Body: "a",
        }),
      );
      const s2 = await c.send(
        new UploadPartCommand({
          Bucket: "media",
          Key: "small",
          UploadId: small.UploadId,
          PartNumber: 2,
          Body: "b",
        }),
      );
      await rejects(
        c.send(
          new CompleteMultipartUploadCommand({
            Bucket: "media",
            Key: "small",
            UploadId: small.UploadId,
            MultipartUpload: { Parts: [{ PartNumber: 1, ETag: s1.ETag }, { PartNumber: 2, ETag: s2.ETag }] },
          }),
        ),
        "EntityTooSmall",
        400,
      );
      await c.send(
        new AbortMultipartUploadCommand({ Bucket: "media", Key: "small", UploadId: small.UploadId }),
      );
      await rejects(
        c.send(new ListPartsCommand({ Bucket: "media", Key: "small", UploadId: small.UploadId })),
        "NoSuchUpload",
        404,
      );
      await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "small" })), "NotFound");
    });

    await t.step("unsupported operations answer NotImplemented, not a crash", async () => {
      const url = await getSignedUrl(c, new GetObjectCommand({ Bucket: "media", Key: "doc.txt" }), {
        expiresIn: 60,
      });
      const r = await fetch(url.replace("?", "?torrent&"));
      assert.equal(r.status, 403, "an added parameter breaks the signature");
      await r.body?.cancel();
      await rejects(
        c.send(
          new (await import("@aws-sdk/client-s3")).GetObjectTaggingCommand({
            Bucket: "media",
            Key: "doc.txt",
          }),
        ),
        "NotImplemented",
        501,
      );
    });

    await t.step("each authentication failure gets S3's error and stores nothing", async () => {
      const wrong = client(s3, {
        credentials: { accessKeyId: LOCAL_S3_CREDENTIALS.accessKeyId, secretAccessKey: "nope" },
      });
      await rejects(
        wrong.send(new PutObjectCommand({ Bucket: "media", Key: "auth", Body: "x" })),
        "SignatureDoesNotMatch",
        403,
      );
      const unknown = client(s3, { credentials: { accessKeyId: "SOMEONEELSE", secretAccessKey: "x" } });
      await rejects(
        unknown.send(new GetObjectCommand({ Bucket: "media", Key: "doc.txt" })),
        "InvalidAccessKeyId",
        403,
      );
      const skewed = client(s3, { systemClockOffset: -20 * 60_000 });
      await rejects(
        skewed.send(new GetObjectCommand({ Bucket: "media", Key: "doc.txt" })),
        "RequestTimeTooSkewed",
        403,
      );

      const url = await getSignedUrl(c, new GetObjectCommand({ Bucket: "media", Key: "doc.txt" }), {
        expiresIn: 60,
      });
      const good = await fetch(url);
      assert.equal(await good.text(), "hello");
      const tampered = await fetch(url.replace("/doc.txt", "/digits"));
      assert.equal(tampered.status, 403);
      assert.match(await tampered.text(), /<Code>SignatureDoesNotMatch<\/Code>/);
      const expiredUrl = await getSignedUrl(c, new GetObjectCommand({ Bucket: "media", Key: "doc.txt" }), {
        expiresIn: 60,
        signingDate: new Date(Date.now() - 120_000),
      });
      const expired = await fetch(expiredUrl);
      assert.equal(expired.status, 403);
      const body = await expired.text();
      assert.match(body, /<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/);
      assert.doesNotMatch(body, new RegExp(LOCAL_S3_CREDENTIALS.secretAccessKey));
      const anonymous = await fetch(`${s3.endpoint}/media/doc.txt`);
      assert.equal(anonymous.status, 403);
      await anonymous.body?.cancel();

      const presignedPut = await getSignedUrl(c, new PutObjectCommand({ Bucket: "media", Key: "via-url" }), {
        expiresIn: 60,
      });
      assert.equal((await fetch(presignedPut, { method: "PUT", body: "uploaded" })).status, 200);
      assert.equal(await text(c, "media", "via-url"), "uploaded");

      // An upload cut off mid-body stores nothing.
      const cut = await getSignedUrl(c, new PutObjectCommand({ Bucket: "media", Key: "cut" }), {
        expiresIn: 60,
      });
      const failing = new ReadableStream<Uint8Array>({
        start(ctl) {
          ctl.enqueue(new Uint8Array(100_000));
        },
        pull(ctl) {
          ctl.error(new Error("client gone"));
        },
      });
      await fetch(cut, { method: "PUT", body: failing }).then((r) => r.body?.cancel(), () => {});
      await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "cut" })), "NotFound");

      // A signed payload hash that does not match the body: refused, and nothing stored.
      const lying = client(s3);
      lying.middlewareStack.add(
        (next) => (args) => {
          const req = args.request as { headers: Record<string, string> };
          req.headers["x-amz-content-sha256"] = createHash("sha256").update("something else").digest("hex");
          return next(args);
        },
        { step: "build" },
      );
      await rejects(
        lying.send(new PutObjectCommand({ Bucket: "media", Key: "lie", Body: "the body" })),
        "XAmzContentSHA256Mismatch",
        400,
      );
      await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "lie" })), "NotFound");
      await rejects(c.send(new HeadObjectCommand({ Bucket: "media", Key: "auth" })), "NotFound");
    });

    await t.step("concurrent PUTs of one key leave one of them, whole, and no stray file", async () => {
      await c.send(new CreateBucketCommand({ Bucket: "race" }));
      const bodies = Array.from({ length: 8 }, (_, i) => bytes(512 * 1024, i));
      await Promise.all(
        bodies.map((b) => c.send(new PutObjectCommand({ Bucket: "race", Key: "k", Body: b }))),
      );
      const got = await (await c.send(new GetObjectCommand({ Bucket: "race", Key: "k" }))).Body!
        .transformToByteArray();
      assert.ok(bodies.some((b) => md5(b) === md5(got)));
      const files = [...Deno.readDirSync(join(dir, "objects", "race"))].map((e) => e.name);
      assert.equal(files.length, 1, `one file for the one object: ${files}`);
      assert.deepEqual([...Deno.readDirSync(join(dir, "objects", ".tmp"))], [], "no temporary file left");
    });

    await t.step("events record creations and removals in order, in S3's record format", async () => {
      await c.send(new CreateBucketCommand({ Bucket: "evts" }));
      const key = "dir/a b+ü.jpg";
      await c.send(new PutObjectCommand({ Bucket: "evts", Key: key, Body: "1" }));
      await c.send(
        new CopyObjectCommand({ Bucket: "evts", Key: "copy", CopySource: `evts/${encodeURIComponent(key)}` }),
      );
      await c.send(new DeleteObjectCommand({ Bucket: "evts", Key: key }));
      await c.send(new DeleteObjectCommand({ Bucket: "evts", Key: "never-there" }));
      const up = await c.send(new CreateMultipartUploadCommand({ Bucket: "evts", Key: "mp" }));
      const e1 = await c.send(
        new UploadPartCommand({ Bucket: "evts", Key: "mp", UploadId: up.UploadId, PartNumber: 1, Body: "z" }),
      );
      await c.send(
        new CompleteMultipartUploadCommand({
          Bucket: "evts",
          Key: "mp",
          UploadId: up.UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1.ETag }] },
        }),
      );
      const events = await eventsOf(s3, "evts");
      const records = events.map((e) => JSON.parse(e.body).Records[0]);
      assert.deepEqual(records.map((r) => r.eventName), [
        "ObjectCreated:Put",
        "ObjectCreated:Copy",
        "ObjectRemoved:Delete",
        "ObjectCreated:CompleteMultipartUpload",
      ]);
      const [put, copy, del] = records;
      assert.equal(put.eventSource, "aws:s3");
      assert.equal(put.awsRegion, REGION);
      assert.equal(put.s3.bucket.name, "evts");
      assert.equal(put.s3.bucket.arn, "arn:aws:s3:::evts");
      assert.equal(put.s3.object.key, "dir/a+b%2B%C3%BC.jpg");
      assert.equal(decodeURIComponent(put.s3.object.key.replace(/\+/g, " ")), key);
      assert.equal(put.s3.object.size, 1);
      assert.equal(put.s3.object.eTag, md5("1"));
      assert.equal(copy.s3.object.key, "copy");
      assert.equal(del.s3.object.size, undefined);
      const seqs = records.map((r) => r.s3.object.sequencer as string);
      assert.deepEqual([...seqs].sort(), seqs);
      assert.ok(!Number.isNaN(Date.parse(put.eventTime)));
      const bad = await fetch(`${s3.endpoint}${EVENTS_PATH}?bucket=evts&after=x`);
      assert.equal(bad.status, 400);
      await bad.body?.cancel();
    });
  });
});

Deno.test("objects and the event log survive a restart of the local S3 server", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "s3srv-" });
  let epoch = "";
  await withServer(dir, async (s3) => {
    const c = client(s3);
    await c.send(new PutObjectCommand({ Bucket: "media", Key: "kept/one", Body: "1", Metadata: { a: "b" } }));
    await c.send(new PutObjectCommand({ Bucket: "media", Key: "kept", Body: "2" }));
    epoch = (await (await fetch(`${s3.endpoint}${EVENTS_PATH}?bucket=media`)).json()).epoch;
  });
  // A crash mid-upload leaves a temporary file: it is never visible and is cleared at start.
  await Deno.writeTextFile(join(dir, "objects", ".tmp", "partial"), "torn");
  await withServer(dir, async (s3) => {
    const c = client(s3);
    assert.equal(await text(c, "media", "kept/one"), "1");
    assert.deepEqual((await c.send(new HeadObjectCommand({ Bucket: "media", Key: "kept/one" }))).Metadata, {
      a: "b",
    });
    const list = await c.send(new ListObjectsV2Command({ Bucket: "media" }));
    assert.deepEqual(list.Contents!.map((o) => o.Key), ["kept", "kept/one"]);
    await c.send(new PutObjectCommand({ Bucket: "media", Key: "after", Body: "3" }));
    const page = await (await fetch(`${s3.endpoint}${EVENTS_PATH}?bucket=media`)).json();
    assert.equal(page.epoch, epoch);
    assert.deepEqual(page.events.map((e: { seq: number }) => e.seq), [1, 2, 3]);
    assert.deepEqual([...Deno.readDirSync(join(dir, "objects", ".tmp"))], []);
    // A stop ends a pending long poll at once rather than waiting it out.
    const polling = fetch(`${s3.endpoint}${EVENTS_PATH}?bucket=media&after=99&wait_ms=20000`).then((r) =>
      r.json()
    );
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    await s3.stop();
    assert.deepEqual((await polling).events, []);
    assert.ok(performance.now() - t0 < 5_000, "the stop did not wait for the long poll");
  });
});
