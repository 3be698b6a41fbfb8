import assert from "node:assert/strict";
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { LOCAL_S3_CREDENTIALS } from "./stack/s3.ts";
import { testBucketName, testEnv } from "./testing/mod.ts";
import {
  crc32Base64,
  encodeKey,
  isAwsHost,
  isLoopback,
  ObjectTooLargeError,
  payloadHeaders,
  putTimeoutMs,
  S3ObjectError,
  S3Objects,
} from "./s3_objects.ts";

function client(secret: string = LOCAL_S3_CREDENTIALS.secretAccessKey) {
  return new S3Client({
    region: "us-east-1",
    endpoint: testEnv.s3Endpoint,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials: { accessKeyId: LOCAL_S3_CREDENTIALS.accessKeyId, secretAccessKey: secret },
  });
}

Deno.test("encodeKey() percent-encodes each segment the way S3 signs paths", () => {
  assert.equal(encodeKey("u/1/a b+c(1)!*'.jpg"), "u/1/a%20b%2Bc%281%29%21%2A%27.jpg");
  assert.equal(encodeKey("ü/é~_-.x"), "%C3%BC/%C3%A9~_-.x");
});

Deno.test("isLoopback() knows this machine's names and no other", () => {
  for (const h of ["localhost", "LOCALHOST", "s3.localhost", "127.0.0.1", "127.10.0.254", "[::1]"]) {
    assert.ok(isLoopback(h), h);
  }
  for (
    const h of ["s3.amazonaws.com", "127.0.0.1.example.com", "10.0.0.1", "[::2]", "localhost.example.com"]
  ) {
    assert.ok(!isLoopback(h), h);
  }
});

Deno.test("isAwsHost() knows AWS's endpoints and no look-alike", () => {
  for (const h of ["s3.amazonaws.com", "b.s3.eu-west-1.amazonaws.com", "s3.cn-north-1.amazonaws.com.cn"]) {
    assert.ok(isAwsHost(h), h);
  }
  for (const h of ["amazonaws.com.evil.io", "s3-amazonaws.com", "minio.internal", "127.0.0.1"]) {
    assert.ok(!isAwsHost(h), h);
  }
});

Deno.test("payloadHeaders() leaves a body unsigned only where nothing on the way can change it unseen", async () => {
  const body = new TextEncoder().encode("123456789");
  // CRC32 of "123456789" is 0xCBF43926 (its check value), big-endian in base64.
  assert.equal(crc32Base64(body), "y/Q5Jg==");
  const unsigned = { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" };
  assert.deepEqual(payloadHeaders(new URL("http://127.0.0.1:9000/bucket/"), body), unsigned);
  assert.deepEqual(payloadHeaders(new URL("http://localhost:9000/bucket/"), body), unsigned);
  assert.deepEqual(payloadHeaders(new URL("https://bucket.s3.eu-west-1.amazonaws.com/"), body), {
    ...unsigned,
    "x-amz-checksum-crc32": "y/Q5Jg==",
  });
  const sha = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const signed = { "x-amz-content-sha256": [...sha].map((b) => b.toString(16).padStart(2, "0")).join("") };
  assert.deepEqual(payloadHeaders(new URL("http://minio.internal:9000/bucket/"), body), signed);
  assert.deepEqual(payloadHeaders(new URL("https://minio.internal/bucket/"), body), signed);
  assert.deepEqual(payloadHeaders(new URL("http://s3.eu-west-1.amazonaws.com/bucket/"), body), signed);
});

Deno.test("putTimeoutMs() gives a large body the time of a slow link", () => {
  assert.equal(putTimeoutMs(0), 60_000);
  assert.equal(putTimeoutMs(30_000), 60_115);
  // 64 MiB at 2 Mbit/s (256 KiB/s) takes 256 s.
  assert.equal(putTimeoutMs(64 * 1024 * 1024), 60_000 + 256_000);
});

Deno.test("S3Objects.put sends a body unsigned to this machine, the signature over its headers", async () => {
  // A stand-in endpoint that records what arrives.
  const seen: { headers: Headers; body: Uint8Array }[] = [];
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    seen.push({ headers: req.headers, body: new Uint8Array(await req.arrayBuffer()) });
    return new Response(null, { status: 200 });
  });
  const s3 = new S3Client({
    region: "us-east-1",
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    forcePathStyle: true,
    credentials: { accessKeyId: LOCAL_S3_CREDENTIALS.accessKeyId, secretAccessKey: "test-secret" },
  });
  using objects = new S3Objects(s3);
  try {
    const body = new Uint8Array(70_000).map((_, i) => (i * 7) % 253);
    await objects.put("some-bucket", "a/b.bin", body, { contentType: "application/octet-stream" });
    assert.equal(seen.length, 1);
    const h = seen[0].headers;
    assert.deepEqual(seen[0].body, body);
    assert.equal(h.get("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
    assert.equal(h.get("x-amz-checksum-crc32"), null);
    const signed = /SignedHeaders=([^,]+)/.exec(h.get("authorization") ?? "")?.[1].split(";") ?? [];
    for (const name of ["x-amz-content-sha256", "content-length", "content-type", "host"]) {
      assert.ok(signed.includes(name), `${name} is signed (${signed.join(";")})`);
    }
  } finally {
    s3.destroy();
  }
});

for (const transport of ["http1", "fetch"] as const) {
  Deno.test(`S3Objects reads and writes what the SDK reads and writes, tricky keys included (${transport})`, async () => {
    const s3 = client();
    const bucket = testBucketName("obj");
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    using objects = new S3Objects(s3, { transport });
    try {
      const big = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 31) % 251);
      for (const key of ["u/1/one photo.jpg", "u/1/a+b%20(c)!.jpg", "ü/ключ/写真.jpg", "plain", "/rooted"]) {
        // Written by the SDK, read by S3Objects.
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: big }));
        assert.deepEqual(await objects.get(bucket, key), big);
        // Written by S3Objects, read by the SDK, with its headers.
        const thumb = new TextEncoder().encode(`thumbnail of ${key}`);
        await objects.put(bucket, key + ".thumb", thumb, {
          contentType: "image/jpeg",
          cacheControl: "max-age=60",
        });
        const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key + ".thumb" }));
        assert.deepEqual(await got.Body!.transformToByteArray(), thumb);
        const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key + ".thumb" }));
        assert.equal(head.ContentType, "image/jpeg");
        assert.equal(head.CacheControl, "max-age=60");
      }
      // An empty object.
      await objects.put(bucket, "empty", new Uint8Array());
      assert.equal((await objects.get(bucket, "empty")).byteLength, 0);
    } finally {
      s3.destroy();
    }
  });

  Deno.test(`S3Objects reports S3's error code, and never the secret (${transport})`, async () => {
    const s3 = client();
    const bucket = testBucketName("obj");
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const secret = "not-the-right-secret-for-this-server";
    const wrong = client(secret);
    using objects = new S3Objects(s3, { transport });
    using wrongObjects = new S3Objects(wrong, { transport });
    try {
      const missing = await objects.get(bucket, "no/such key.jpg").catch((e) => e);
      assert.ok(missing instanceof S3ObjectError);
      assert.equal(missing.code, "NoSuchKey");
      assert.equal(missing.status, 404);
      assert.match(missing.message, /no\/such key\.jpg/);
      const noBucket = await objects.put(testBucketName("none"), "k", new Uint8Array([1])).catch((
        e,
      ) => e);
      assert.equal(noBucket.code, "NoSuchBucket");
      const denied = await wrongObjects.put(bucket, "k", new Uint8Array([1])).catch((e) => e);
      assert.ok(denied instanceof S3ObjectError);
      assert.equal(denied.status, 403);
      assert.equal(denied.code, "SignatureDoesNotMatch");
      assert.ok(!denied.message.includes(secret));
    } finally {
      s3.destroy();
      wrong.destroy();
    }
  });

  Deno.test(`S3Objects.withObject lends pooled buffers: each use sees its own object's bytes (${transport})`, async () => {
    const s3 = client();
    const bucket = testBucketName("obj");
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    using objects = new S3Objects(s3, { transport });
    try {
      // Sizes that share a pool buffer (3 MiB + 17 and 2 MiB + 5 both fit a 4 MiB one), a larger one and
      // an empty one, each with its own content.
      const sizes = [3 * 1024 * 1024 + 17, 2 * 1024 * 1024 + 5, 5 * 1024 * 1024, 0, 100];
      const bodies = sizes.map((n, k) => new Uint8Array(n).map((_, i) => (i * 31 + k * 7) % 251));
      for (const [k, body] of bodies.entries()) {
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o${k}`, Body: body }));
      }
      // In turn (each read reuses what the last gave back) and four at a time (each lent its own buffer,
      // checked after the others have been read into theirs).
      for (let round = 0; round < 3; round++) {
        for (const [k, body] of bodies.entries()) {
          const same = await objects.withObject(
            bucket,
            `o${k}`,
            (bytes) => Promise.resolve(equal(bytes, body)),
          );
          assert.ok(same, `object o${k} read back in round ${round}`);
        }
      }
      let reading = 0;
      const all = await Promise.all(
        bodies.map((body, k) =>
          objects.withObject(bucket, `o${k}`, async (bytes) => {
            reading++;
            while (reading < bodies.length) await new Promise((r) => setTimeout(r, 5));
            return equal(bytes, body);
          })
        ),
      );
      assert.deepEqual(all, bodies.map(() => true));
      // What `use` throws is thrown, and a missing object is S3's NoSuchKey.
      await assert.rejects(
        objects.withObject(bucket, "o0", () => Promise.reject(new Error("thumbnail failed"))),
        /thumbnail failed/,
      );
      // Over the reader's limit: refused before the body is read, and the next read is served.
      const over = await objects.withObject(bucket, "o0", () => Promise.resolve(1), {
        maxBytes: sizes[0] - 1,
      })
        .catch((e) => e);
      assert.ok(over instanceof ObjectTooLargeError, String(over));
      assert.equal(over.size, sizes[0]);
      assert.ok(
        await objects.withObject(bucket, "o0", (b) => Promise.resolve(equal(b, bodies[0])), {
          maxBytes: sizes[0],
        }),
      );
      const missing = await objects.withObject(bucket, "none", () => Promise.resolve(1)).catch((e) => e);
      assert.equal((missing as S3ObjectError).code, "NoSuchKey");
    } finally {
      s3.destroy();
    }
  });
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}
