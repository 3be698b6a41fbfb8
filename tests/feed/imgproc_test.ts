import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import type { Sql } from "../../shared/db.ts";
import { createLogger } from "../../shared/log.ts";
import { Registry } from "../../shared/metrics.ts";
import { freePort } from "../../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import { EVENTS_PATH } from "../../shared/stack/s3_events.ts";
import { createTestDatabase, testBucketName, testEnv } from "../../shared/testing/mod.ts";
import { thumbnailKeyFor } from "../../web/feed/s3.ts";
import { S3Objects } from "../../shared/s3_objects.ts";
import { bridgeOnce, runBridge } from "../../workers/imgproc/bridge.ts";
import { type ConsumerStatus, runConsumer } from "../../workers/imgproc/consumer.ts";
import { encodeEventKey, parseEvents } from "../../workers/imgproc/events.ts";
import { enqueue, PgQueue } from "../../workers/imgproc/pg_queue.ts";
import type { QueueMessage } from "../../workers/imgproc/queue.ts";
import { applyEvent, type ProcessorDeps } from "../../workers/imgproc/processor.ts";
import type { ThumbnailOptions } from "../../workers/imgproc/thumbnail.ts";
import { runImgproc } from "../../workers/imgproc/run.ts";
import { eventually, feedWorld, jpeg } from "./_util.ts";

const log = createLogger("imgproc-test", { level: "error" });
const MAIN = fromFileUrl(new URL("../../workers/imgproc/main.ts", import.meta.url));

function body(eventName: string, bucket: string, key: string, sequencer: string) {
  return JSON.stringify({
    Records: [{
      eventName,
      s3: { bucket: { name: bucket }, object: { key: encodeEventKey(key), sequencer } },
    }],
  });
}

/** What `applyEvent` needs, over the world's database and buckets. */
function processorDeps(
  w: Awaited<ReturnType<typeof feedWorld>>,
  objects: S3Objects,
  thumbnail: ThumbnailOptions,
): ProcessorDeps {
  return {
    sql: w.db.sql,
    s3: w.s3,
    objects,
    mediaBucket: w.cfg.FEED_MEDIA_BUCKET,
    thumbnailsBucket: w.cfg.FEED_THUMBNAILS_BUCKET,
    thumbnail,
    log,
  };
}

/** Waits until the local queue holds no message. */
function queueDrained(sql: Sql): Promise<unknown> {
  return eventually("the queue drained", async () => {
    const [r] = await sql`select count(*)::int as n from control.imgproc_messages`;
    return r.n === 0 ? true : undefined;
  });
}

async function seedFeed(w: Awaited<ReturnType<typeof feedWorld>>, key: string) {
  const [u] = await w.db.sql`insert into app.users (email, username, password)
    values (${key.replace(/\W/g, "") + "@x.io"}, ${key.replace(/\W/g, "").slice(0, 30)}, 'x') returning id`;
  await w.db.sql`insert into app.feeds (user_id, caption, media_key, content_type, size_bytes)
    values (${u.id}, 'c', ${key}, 'image/jpeg', 1)`;
}

Deno.test("the same event twice makes one thumbnail, and a creation older than the removal after it is skipped", async () => {
  await using w = await feedWorld();
  using objects = new S3Objects(w.s3);
  const deps = processorDeps(w, objects, { size: 32, maxPixels: 1_000_000, quality: 70 });
  const key = "u/1/one photo.jpg";
  await seedFeed(w, key);
  await w.s3.send(new PutObjectCommand({ Bucket: deps.mediaBucket, Key: key, Body: await jpeg() }));
  const [created] = parseEvents(body("ObjectCreated:Put", deps.mediaBucket, key, "00A1"));
  assert.equal(await applyEvent(deps, created), "thumbnail");
  const head = () =>
    w.s3.send(new HeadObjectCommand({ Bucket: deps.thumbnailsBucket, Key: thumbnailKeyFor(key) }));
  const first = await head();
  assert.equal(await applyEvent(deps, created), "stale");
  assert.equal((await head()).ETag, first.ETag);
  const [f] = await w.db.sql`select thumbnail_status from app.feeds where media_key = ${key}`;
  assert.equal(f.thumbnail_status, "ready");

  // Out of order: the removal (A3) is applied, then a late creation (A2) from before it arrives.
  await w.s3.send(new DeleteObjectCommand({ Bucket: deps.mediaBucket, Key: key }));
  const [removed] = parseEvents(body("ObjectRemoved:Delete", deps.mediaBucket, key, "00A3"));
  assert.equal(await applyEvent(deps, removed), "removed");
  await assert.rejects(head());
  await w.s3.send(new PutObjectCommand({ Bucket: deps.mediaBucket, Key: key, Body: await jpeg() }));
  const [late] = parseEvents(body("ObjectCreated:Put", deps.mediaBucket, key, "00A2"));
  assert.equal(await applyEvent(deps, late), "stale");
  await assert.rejects(head());
  const [other] = parseEvents(body("ObjectCreated:Put", "another-bucket", key, "00A9"));
  assert.equal(await applyEvent(deps, other), "ignored");
});

Deno.test("a file over the size limit is refused, unread when its event says so, else from the answer's length", async () => {
  await using w = await feedWorld();
  using objects = new S3Objects(w.s3);
  const image = await jpeg();
  const deps = processorDeps(w, objects, {
    size: 32,
    maxPixels: 1_000_000,
    maxBytes: image.length - 1,
    quality: 70,
  });
  for (const [key, size] of [["u/3/told.jpg", image.length], ["u/3/untold.jpg", undefined]] as const) {
    await seedFeed(w, key);
    await w.s3.send(new PutObjectCommand({ Bucket: deps.mediaBucket, Key: key, Body: image }));
    const record = JSON.stringify({
      Records: [{
        eventName: "ObjectCreated:Put",
        s3: {
          bucket: { name: deps.mediaBucket },
          object: { key: encodeEventKey(key), sequencer: "01", ...(size === undefined ? {} : { size }) },
        },
      }],
    });
    const [ev] = parseEvents(record);
    assert.equal(await applyEvent(deps, ev), "rejected", key);
    const [f] = await w.db
      .sql`select thumbnail_status, thumbnail_error from app.feeds where media_key = ${key}`;
    assert.equal(f.thumbnail_status, "failed");
    assert.equal(
      f.thumbnail_error,
      `Cannot make a thumbnail: the file is ${image.length} bytes, over the limit of ${image.length - 1}`,
    );
  }
  // At the limit it is read and made.
  const key = "u/3/fits.jpg";
  await seedFeed(w, key);
  await w.s3.send(new PutObjectCommand({ Bucket: deps.mediaBucket, Key: key, Body: image }));
  const [fits] = parseEvents(body("ObjectCreated:Put", deps.mediaBucket, key, "01"));
  assert.equal(
    await applyEvent({ ...deps, thumbnail: { ...deps.thumbnail, maxBytes: image.length } }, fits),
    "thumbnail",
  );
});

Deno.test("a failing message is retried then dead-lettered with its feed failed; a poison body is dead at once", async () => {
  await using w = await feedWorld();
  const key = "u/2/a.jpg";
  await seedFeed(w, key);
  await w.s3.send(new PutObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: key, Body: await jpeg() }));
  await enqueue(w.db.sql, "e1", body("ObjectCreated:Put", w.cfg.FEED_MEDIA_BUCKET, key, "01"));
  await enqueue(w.db.sql, "e1", body("ObjectCreated:Put", w.cfg.FEED_MEDIA_BUCKET, key, "01"));
  await enqueue(w.db.sql, "e2", "this is not an event");
  const controller = new AbortController();
  const status: ConsumerStatus = { handled: 0, retried: 0, dead: 0, inFlight: 0 };
  const run = runImgproc({
    sql: w.db.sql,
    s3: w.s3,
    queue: new PgQueue({ sql: w.db.sql, consumerId: "t", pollMs: 20 }),
    mediaBucket: w.cfg.FEED_MEDIA_BUCKET,
    // A bucket that does not exist: every thumbnail write fails.
    thumbnailsBucket: testBucketName("missing"),
    thumbnail: { size: 32, maxPixels: 1_000_000, quality: 70 },
    concurrency: 2,
    maxAttempts: 3,
    retryBaseMs: 10,
    log,
    signal: controller.signal,
    status,
  });
  try {
    await eventually("both messages dead", async () => {
      const [r] = await w.db
        .sql`select count(*)::int as n from control.imgproc_messages where dead_at is not null`;
      return r.n === 2 ? true : undefined;
    });
  } finally {
    controller.abort();
    await run;
  }
  const rows = await w.db
    .sql`select dedupe_key, attempts, last_error from control.imgproc_messages order by dedupe_key`;
  assert.deepEqual(rows.map((r) => [r.dedupe_key, r.attempts]), [["e1", 3], ["e2", 1]]);
  assert.match(rows[1].last_error, /not JSON/);
  assert.equal(status.retried, 2);
  assert.equal(status.dead, 2);
  const [f] = await w.db.sql`select thumbnail_status from app.feeds where media_key = ${key}`;
  assert.equal(f.thumbnail_status, "failed");
});

Deno.test("two consumers share the Postgres queue and handle every message exactly once", async () => {
  await using w = await feedWorld();
  const n = 40;
  for (let i = 0; i < n; i++) await enqueue(w.db.sql, `m${i}`, `body-${i}`);
  const seen = new Map<string, number>();
  const controller = new AbortController();
  const statuses = [0, 1].map(() => ({ handled: 0, retried: 0, dead: 0, inFlight: 0 }));
  const runs = statuses.map((status, i) =>
    runConsumer({
      queue: new PgQueue({ sql: w.db.sql, consumerId: `c${i}`, pollMs: 10 }),
      async handle(b) {
        seen.set(b, (seen.get(b) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 5));
      },
      concurrency: 3,
      maxAttempts: 3,
      log,
      signal: controller.signal,
      waitMs: 100,
    }, status)
  );
  try {
    await queueDrained(w.db.sql);
  } finally {
    controller.abort();
    await Promise.all(runs);
  }
  assert.equal(seen.size, n);
  assert.ok([...seen.values()].every((c) => c === 1));
  assert.equal(statuses[0].handled + statuses[1].handled, n);
});

Deno.test("the bridge moves the local S3 server's events of its bucket once, however often it runs", async () => {
  await using w = await feedWorld();
  const other = testBucketName("o");
  await w.s3.send(new CreateBucketCommand({ Bucket: other }));
  await w.s3.send(new PutObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: "u/1/a b.jpg", Body: "x" }));
  await w.s3.send(new PutObjectCommand({ Bucket: other, Key: "elsewhere.jpg", Body: "x" }));
  await w.s3.send(new DeleteObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: "u/1/a b.jpg" }));
  const o = {
    sql: w.db.sql,
    eventsUrl: testEnv.s3Endpoint + EVENTS_PATH,
    bucket: w.cfg.FEED_MEDIA_BUCKET,
    waitMs: 0,
    signal: new AbortController().signal,
  };
  assert.equal(await bridgeOnce(o), 2);
  assert.equal(await bridgeOnce(o), 0);
  // A second copy that has not seen the position yet inserts nothing new either.
  await w.db.sql`update control.imgproc_bridge set position = 0`;
  assert.equal(await bridgeOnce(o), 0);
  const rows = await w.db.sql`select body from control.imgproc_messages order by id`;
  const evs = rows.flatMap((r) => parseEvents(r.body));
  assert.deepEqual(evs.map((e) => [e.kind, e.key]), [["created", "u/1/a b.jpg"], ["removed", "u/1/a b.jpg"]]);
  assert.ok(evs[0].sequencer < evs[1].sequencer);
  assert.equal(evs[0].size, 1);
});

Deno.test("the imgproc process reads the .env names, makes thumbnails from real S3 events, and stops on SIGTERM", async () => {
  await using w = await feedWorld();
  const db = new URL(w.db.url);
  const opsPort = freePort();
  const keep: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v) keep[k] = v;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    clearEnv: true,
    env: {
      ...keep,
      POSTGRESS_HOST: db.hostname,
      POSTGRESS_PORT: db.port,
      POSTGRESS_DATABASE: db.pathname.slice(1),
      POSTGRESS_USERNAME: decodeURIComponent(db.username),
      POSTGRESS_PASSWORD: decodeURIComponent(db.password),
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
      S3_ENDPOINT: testEnv.s3Endpoint,
      AWS_MEDIA_BUCKET: w.cfg.FEED_MEDIA_BUCKET,
      AWS_THUMBNAILS_BUCKET: w.cfg.FEED_THUMBNAILS_BUCKET,
      OPS_PORT: String(opsPort),
      WHARF_LOG_LEVEL: "warn",
    },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await eventually("imgproc healthy", async () => {
      try {
        const r = await fetch(`http://127.0.0.1:${opsPort}/healthz`);
        await r.body?.cancel();
        return r.status === 200 ? true : undefined;
      } catch {
        return undefined;
      }
    }, 30_000);
    const key = "u/3/proc.jpg";
    await seedFeed(w, key);
    await w.s3.send(new PutObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: key, Body: await jpeg() }));
    await eventually("the thumbnail", async () => {
      const [f] = await w.db.sql`select thumbnail_status from app.feeds where media_key = ${key}`;
      return f.thumbnail_status === "ready" ? true : undefined;
    });
    await w.s3.send(
      new HeadObjectCommand({ Bucket: w.cfg.FEED_THUMBNAILS_BUCKET, Key: thumbnailKeyFor(key) }),
    );
    const [inst] = await w.db.sql`select worker from control.worker_instances`;
    assert.equal(inst.worker, "imgproc");
    const metrics = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
    assert.match(metrics, /wharf_imgproc_queue_depth \d+/);
    assert.match(metrics, /wharf_imgproc_events_total\{outcome="thumbnail"\} 1/);
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  }
});

Deno.test("the bridge stops with a clear reason when the S3 endpoint has no event log", async () => {
  await using w = await feedWorld();
  const lines: string[] = [];
  const quiet = createLogger("bridge-test", { level: "error", write: (l) => lines.push(l) });
  await runBridge({
    sql: w.db.sql,
    eventsUrl: testEnv.s3Endpoint + "/no-such-bucket-here/_events",
    bucket: w.cfg.FEED_MEDIA_BUCKET,
    log: quiet,
    signal: new AbortController().signal,
  });
  assert.equal(lines.length, 1);
  assert.match(JSON.parse(lines[0]).reason, /has no event log/);
});

Deno.test("a message claimed by a copy that died comes back to another copy after the visibility timeout", async () => {
  await using w = await feedWorld();
  await enqueue(w.db.sql, "lost", "body");
  const signal = new AbortController().signal;
  const dead = new PgQueue({ sql: w.db.sql, consumerId: "dead", visibilityMs: 300, pollMs: 20 });
  const alive = new PgQueue({ sql: w.db.sql, consumerId: "alive", visibilityMs: 300, pollMs: 20 });
  const [first] = await dead.receive(1, 0, signal);
  assert.equal(first.receiveCount, 1);
  assert.deepEqual(await alive.receive(1, 0, signal), [], "hidden while claimed");
  const [again] = await alive.receive(1, 2_000, signal);
  assert.equal(again.handle, first.handle);
  assert.equal(again.receiveCount, 2);
  await alive.ack(again);
  assert.equal(await alive.depth(), 0);
});

Deno.test("a queue claims ahead, hands out what it holds without claiming, and gives back what it did not hand out", async () => {
  await using db = await createTestDatabase();
  for (let i = 1; i <= 5; i++) await enqueue(db.sql, `k${i}`, `body ${i}`);
  const signal = new AbortController().signal;
  const ahead = new PgQueue({ sql: db.sql, consumerId: "ahead", prefetch: 3 });
  const other = new PgQueue({ sql: db.sql, consumerId: "other" });
  const claimed = async () =>
    (await db.sql`select body, attempts from control.imgproc_messages
                   where claimed_by = 'ahead' order by id`).map((r) => [r.body, r.attempts]);
  const bodies = (ms: { body: string }[]) => ms.map((m) => m.body);

  assert.deepEqual(bodies(await ahead.receive(1, 0, signal)), ["body 1"]);
  assert.deepEqual(await claimed(), [["body 1", 1], ["body 2", 1], ["body 3", 1], ["body 4", 1]]);
  assert.deepEqual(bodies(await other.receive(5, 0, signal)), ["body 5"], "held ahead, hidden from others");
  // Served from what it holds: nothing more is claimed.
  await enqueue(db.sql, "k6", "body 6");
  assert.deepEqual(bodies(await ahead.receive(2, 0, signal)), ["body 2", "body 3"]);
  const [six] = await db.sql`select claimed_by from control.imgproc_messages where body = 'body 6'`;
  assert.equal(six.claimed_by, null);

  // Closing gives back the one still held: visible again, its claim not counted as a delivery.
  await ahead.close();
  const [four] = await db.sql`select claimed_by, attempts, visible_at <= now() as visible
                                from control.imgproc_messages where body = 'body 4'`;
  assert.deepEqual({ ...four }, { claimed_by: null, attempts: 0, visible: true });
  assert.deepEqual(bodies(await other.receive(5, 0, signal)), ["body 4", "body 6"]);
});

Deno.test("a message held ahead for half its visibility timeout is given back, not handed out", async () => {
  await using db = await createTestDatabase();
  for (let i = 1; i <= 3; i++) await enqueue(db.sql, `k${i}`, `body ${i}`);
  const signal = new AbortController().signal;
  const q = new PgQueue({ sql: db.sql, consumerId: "slow", prefetch: 2, visibilityMs: 400 });
  const [first] = await q.receive(1, 0, signal);
  assert.equal(first.body, "body 1");
  await new Promise((r) => setTimeout(r, 250));
  // The two held are past half their timeout: given back, then claimed again afresh (first delivery still).
  const again = await q.receive(1, 0, signal);
  assert.deepEqual(again.map((m) => [m.body, m.receiveCount]), [["body 2", 1]]);
  // Claimed afresh: hidden until well after the first claim's timeout.
  const rows = await db.sql`
    select body, claimed_by, attempts,
           visible_at - first_value(visible_at) over (order by id) >= interval '200 ms' as reclaimed
      from control.imgproc_messages order by id`;
  assert.deepEqual(rows.map((r) => [r.body, r.claimed_by, r.attempts, r.reclaimed]), [
    ["body 1", "slow", 1, false],
    ["body 2", "slow", 1, true],
    ["body 3", "slow", 1, true],
  ]);
  await q.close();
});

Deno.test("a message of one event leaves the local queue in the event's transaction; others are acked after", async () => {
  await using w = await feedWorld();
  const key = "u/7/in tx.jpg";
  await seedFeed(w, key);
  await w.s3.send(new PutObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: key, Body: await jpeg() }));
  const created = body("ObjectCreated:Put", w.cfg.FEED_MEDIA_BUCKET, key, "0B01");
  await enqueue(w.db.sql, "once", created);
  // The same event again (a stale copy: nothing to commit) and a message of two records.
  await enqueue(w.db.sql, "twice", created);
  const two = JSON.parse(created);
  two.Records.push(two.Records[0]);
  await enqueue(w.db.sql, "two", JSON.stringify(two));
  /** The queue, counting the consumer's own acks. */
  class Counting extends PgQueue {
    acks: string[] = [];
    override ack(m: QueueMessage): Promise<void> {
      this.acks.push(m.body === created ? "one event" : "two events");
      return super.ack(m);
    }
  }
  const queue = new Counting({ sql: w.db.sql, consumerId: "tx", pollMs: 20 });
  const controller = new AbortController();
  const metrics = new Registry();
  const run = runImgproc({
    sql: w.db.sql,
    s3: w.s3,
    queue,
    mediaBucket: w.cfg.FEED_MEDIA_BUCKET,
    thumbnailsBucket: w.cfg.FEED_THUMBNAILS_BUCKET,
    thumbnail: { size: 32, maxPixels: 1_000_000, quality: 70 },
    concurrency: 1,
    maxAttempts: 3,
    log,
    metrics,
    signal: controller.signal,
  });
  try {
    await queueDrained(w.db.sql);
  } finally {
    controller.abort();
    await run;
  }
  const outcomes = metrics.counter("wharf_imgproc_events_total", "Object events by outcome");
  assert.equal(outcomes.get({ outcome: "thumbnail" }), 1);
  assert.equal(outcomes.get({ outcome: "stale" }), 3);
  // The first message went with its thumbnail's commit; the stale copy and the two-record one by ack.
  assert.deepEqual(queue.acks.sort(), ["one event", "two events"]);
  const [f] = await w.db.sql`select thumbnail_status from app.feeds where media_key = ${key}`;
  assert.equal(f.thumbnail_status, "ready");
});

Deno.test("a waiting copy takes a new message as soon as it is queued, not at its next poll", async () => {
  await using db = await createTestDatabase();
  // Polls ten seconds apart: only the notice of the insert can wake it in time.
  const queue = new PgQueue({ sql: db.sql, consumerId: "waiting", pollMs: 10_000 });
  const controller = new AbortController();
  try {
    for (const key of ["first", "second"]) {
      let queuedAt = 0;
      const receiving = queue.receive(1, 20_000, controller.signal);
      await new Promise((r) => setTimeout(r, 300)); // waiting by now
      queuedAt = performance.now();
      assert.equal(await enqueue(db.sql, key, `body of ${key}`), true);
      const [m] = await receiving;
      const ms = performance.now() - queuedAt;
      assert.equal(m.body, `body of ${key}`);
      assert.ok(ms < 2_000, `picked up ${Math.round(ms)} ms after it was queued`);
      await queue.ack(m);
    }
  } finally {
    controller.abort();
    await queue.close();
  }
});

Deno.test("a backlog after the queue was analyzed in a quiet moment is claimed by the ready index, a few rows each", async () => {
  await using db = await createTestDatabase();
  // One connection throughout, its statistics flushed before each reading.
  const conn = await db.sql.reserve();
  try {
    // A quiet moment when autovacuum looks: a few messages, none visible. Then a backlog.
    await conn`insert into control.imgproc_messages (dedupe_key, body)
               select 'quiet' || g, '{}' from generate_series(1, 20) g`;
    await conn`update control.imgproc_messages set visible_at = now() + interval '1 hour'`;
    await conn`analyze control.imgproc_messages`;
    await conn`insert into control.imgproc_messages (dedupe_key, body)
               select 'k' || g, 'body ' || g from generate_series(1, 10000) g`;
    /** Index tuples read from the queue's indexes by `run`. */
    const readBy = async (run: () => Promise<unknown>) => {
      const read = async () => {
        await conn`select pg_stat_force_next_flush()`;
        await conn`select pg_stat_clear_snapshot()`;
        const [s] = await conn`select coalesce(sum(idx_tup_read), 0)::int as n from pg_stat_user_indexes
                                where relid = 'control.imgproc_messages'::regclass`;
        return s.n as number;
      };
      const before = await read();
      const rows = await run();
      return { rows, read: (await read()) - before };
    };
    // The claim as it was: the misled planner reads every visible message and sorts them.
    const plain = await readBy(async () => {
      await conn`begin`;
      await conn`update control.imgproc_messages m set attempts = attempts + 1
                  where id in (select id from control.imgproc_messages
                                where dead_at is null and visible_at <= now()
                                order by id limit 1 for update skip locked)`;
      await conn`rollback`;
    });
    assert.ok(plain.read >= 10_000, `the setup no longer misleads the planner (${plain.read} read)`);
    const queue = new PgQueue({ sql: conn as unknown as typeof db.sql, consumerId: "c" });
    const signal = new AbortController().signal;
    const got = await readBy(() => queue.receive(4, 0, signal));
    const bodies = (got.rows as { body: string; receiveCount: number }[]).map((
      m,
    ) => [m.body, m.receiveCount]);
    assert.deepEqual(bodies, [["body 1", 1], ["body 2", 1], ["body 3", 1], ["body 4", 1]]);
    assert.ok(got.read < 50, `${got.read} index tuples read for a claim of 4`);
  } finally {
    conn.release();
  }
});
