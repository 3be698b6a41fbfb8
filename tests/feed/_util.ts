/**
 * A test's own image-feed world: its database, Redis prefix and two buckets on the shared local S3
 * server, the web app with the feed API mounted, and (when asked) an imgproc copy running in-process
 * against the real event log of the S3 server.
 */
import { CreateBucketCommand, type S3Client } from "@aws-sdk/client-s3";
import { Redis } from "ioredis";
import sharp from "sharp";
import { createLogger } from "../../shared/log.ts";
import { Registry } from "../../shared/metrics.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import { EVENTS_PATH } from "../../shared/stack/s3_events.ts";
import {
  createTestDatabase,
  testBucketName,
  type TestDatabase,
  testEnv,
  testRedisPrefix,
} from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { createApp } from "../../web/app.tsx";
import { type FeedSettings, loadFeedConfig } from "../../web/feed/config.ts";
import type { FeedDeps } from "../../web/feed/deps.ts";
import { createS3Client } from "../../web/feed/s3.ts";
import type { ConsumerStatus } from "../../workers/imgproc/consumer.ts";
import { PgQueue } from "../../workers/imgproc/pg_queue.ts";
import { runImgproc } from "../../workers/imgproc/run.ts";

/** The JWT secret of test worlds. */
export const TEST_JWT_SECRET = "test-secret-0123456789-abcdefghijklmnop";

/** A test world. */
export interface FeedWorld extends AsyncDisposable {
  db: TestDatabase;
  deps: FeedDeps;
  cfg: FeedSettings;
  s3: S3Client;
  app: ReturnType<typeof createApp>;
  status: ConsumerStatus;
  request(path: string, init?: RequestInit & { token?: string; json?: unknown }): Promise<Response>;
  /** Registers and logs in a user; returns its id and tokens. */
  user(name: string): Promise<{ id: string; access: string; refresh: string }>;
}

/** Options for {@linkcode feedWorld}. */
export interface WorldOptions {
  /** Run an imgproc copy in-process (default false). */
  imgproc?: boolean;
  env?: Record<string, string>;
  maxPixels?: number;
}

/** Sets up a world; dispose it with `await using`. */
export async function feedWorld(options: WorldOptions = {}): Promise<FeedWorld> {
  const db = await createTestDatabase();
  const media = testBucketName("m");
  const thumbs = testBucketName("t");
  const cfg = loadFeedConfig({
    DATABASE_URL: db.url,
    REDIS_URL: testEnv.redisUrl,
    JWT_SECRET: TEST_JWT_SECRET,
    S3_ENDPOINT: testEnv.s3Endpoint,
    AWS_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    AWS_MEDIA_BUCKET: media,
    AWS_THUMBNAILS_BUCKET: thumbs,
    FEED_REDIS_PREFIX: testRedisPrefix(),
    ...options.env,
  });
  const s3 = createS3Client(cfg);
  await s3.send(new CreateBucketCommand({ Bucket: media }));
  await s3.send(new CreateBucketCommand({ Bucket: thumbs }));
  const log = createLogger("feed-test", { level: "error" });
  const redis = new Redis(cfg.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  const deps: FeedDeps = { sql: db.sql, redis, s3, cfg, log };
  const app = createApp({ sql: db.sql, log, feed: deps, metrics: new Registry() });
  const controller = new AbortController();
  const status: ConsumerStatus = { handled: 0, retried: 0, dead: 0, inFlight: 0 };
  let worker: Promise<void> | undefined;
  if (options.imgproc) {
    worker = runImgproc({
      sql: db.sql,
      s3,
      queue: new PgQueue({ sql: db.sql, consumerId: "test", pollMs: 50 }),
      eventsUrl: testEnv.s3Endpoint + EVENTS_PATH,
      mediaBucket: media,
      thumbnailsBucket: thumbs,
      thumbnail: { size: 64, maxPixels: options.maxPixels ?? 4_000_000, quality: 80 },
      concurrency: 2,
      maxAttempts: 3,
      retryBaseMs: 50,
      log,
      signal: controller.signal,
      status,
    });
  }
  const request: FeedWorld["request"] = (path, init = {}) => {
    const headers = new Headers(init.headers);
    if (init.token) headers.set("authorization", `Bearer ${init.token}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set("content-type", "application/json");
      body = JSON.stringify(init.json);
    }
    return Promise.resolve(app.request(path, { ...init, headers, body }));
  };
  const user: FeedWorld["user"] = async (name) => {
    const password = `pw-${name}-long-enough`;
    const r = await request("/api/users", {
      method: "POST",
      json: { email: `${name}@example.com`, username: name, password },
    });
    if (r.status !== 201) throw new Error(`register ${name}: ${r.status} ${await r.text()}`);
    const { id } = await r.json();
    const l = await request("/api/users/login", { method: "POST", json: { username: name, password } });
    if (l.status !== 200) throw new Error(`login ${name}: ${l.status} ${await l.text()}`);
    const t = await l.json();
    return { id, access: t.access_token, refresh: t.refresh_token };
  };
  return {
    db,
    deps,
    cfg,
    s3,
    app,
    status,
    request,
    user,
    async [Symbol.asyncDispose]() {
      controller.abort();
      await worker;
      redis.disconnect();
      s3.destroy();
      await db.drop();
    },
  };
}

/** A small JPEG (`w`×`h`), optionally with an EXIF orientation tag. */
export async function jpeg(w = 120, h = 80, orientation?: number): Promise<Uint8Array> {
  let img = sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .jpeg();
  if (orientation) img = img.withMetadata({ orientation });
  return new Uint8Array(await img.toBuffer());
}

/** A multipart body with `image` and `caption`. */
export function uploadForm(
  bytes: Uint8Array,
  caption = "a caption",
  filename = "photo.jpg",
  type = "image/jpeg",
) {
  const form = new FormData();
  form.set("caption", caption);
  form.set("image", new File([bytes as BlobPart], filename, { type }));
  return form;
}

/** Polls `check` until it returns a value (not undefined) or throws after `ms`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  ms = 15_000,
): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (performance.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await abortableSleep(50);
  }
}
