/**
 * `deno task bench:thumbs`: 500 photos through imgproc end to end (the S3 event log → the Postgres
 * queue → get from the media bucket → sharp → put to the thumbnails bucket → feed marked ready) against a
 * plain sharp loop making the same thumbnails from the same bytes held in memory, with the same
 * concurrency, in the same run. Ratio: loop time ÷ imgproc time (imgproc's throughput over the loop's).
 *
 * `BENCH_ROUNDS` (5) interleaved rounds, each side first in every other one, each round with photos of its
 * own uploaded (untimed) before either side runs; the JSON line reports the median round's figures and every
 * round's ratio (`ratios`), as a single round's ratio moves by several hundredths on this shared machine.
 *
 * Then `BENCH_IDLE_PHOTOS` (20) uploads one at a time to an idle imgproc with the process's queue settings:
 * the latency from the S3 PUT's answer to the feed marked ready (p50, p99).
 *
 * `BENCH_PHOTOS` (500), `BENCH_CONCURRENCY` (4), `BENCH_WIDTH` × `BENCH_HEIGHT` (4032 × 3024, a 12-megapixel phone photo).
 */
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { Buffer } from "node:buffer";
import sharp from "sharp";
import { connectPostgres } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { migrate } from "../shared/migrate.ts";
import { Registry } from "../shared/metrics.ts";
import { LOCAL_S3_CREDENTIALS } from "../shared/stack/s3.ts";
import { EVENTS_PATH } from "../shared/stack/s3_events.ts";
import { startServices } from "../shared/stack/services.ts";
import { abortableSleep } from "../shared/worker.ts";
import { loadConfig } from "../shared/config.ts";
import { S3Config } from "../web/feed/s3_config.ts";
import { createS3Client } from "../web/feed/s3.ts";
import { PgQueue } from "../workers/imgproc/pg_queue.ts";
import { runImgproc } from "../workers/imgproc/run.ts";
import { DEFAULT_THUMBNAIL_OPTIONS } from "../workers/imgproc/thumbnail.ts";
import process from "node:process";
import { alternate, cpuMsOf, medianRound, percentile, report, type Row } from "./_util.ts";

const PHOTOS = Number(Deno.env.get("BENCH_PHOTOS") ?? 500);
const CONC = Number(Deno.env.get("BENCH_CONCURRENCY") ?? 4);
const W = Number(Deno.env.get("BENCH_WIDTH") ?? 4032);
const H = Number(Deno.env.get("BENCH_HEIGHT") ?? 3024);
const DISTINCT = 10;
const IDLE_PHOTOS = Number(Deno.env.get("BENCH_IDLE_PHOTOS") ?? 20);
/** Interleaved rounds (each side first in every other one); the ratio is the median round's. */
const ROUNDS = Math.max(1, Number(Deno.env.get("BENCH_ROUNDS") ?? 5));
const log = createLogger("bench-thumbs", { level: "error" });
const opts = DEFAULT_THUMBNAIL_OPTIONS;

/** Grain shared by every generated photo (a camera sensor's noise; it is what makes photos large). */
let grain: Buffer | undefined;

/**
 * A photo-like JPEG: gradients and shapes under sensor-like grain, so that its size and decoding cost are
 * those of a phone photo (a few MiB at 12 megapixels) rather than of a flat drawing.
 */
async function photo(i: number): Promise<Uint8Array> {
  grain ??= await sharp({
    create: {
      width: W,
      height: H,
      channels: 3,
      background: "#808080",
      noise: { type: "gaussian", mean: 128, sigma: 16 },
    },
  }).png({ compressionLevel: 1 }).toBuffer();
  const hue = (i * 47) % 360;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">
    <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="hsl(${hue},70%,60%)"/><stop offset="1" stop-color="hsl(${
    (hue + 120) % 360
  },60%,30%)"/>
    </linearGradient></defs>
    <rect width="100%" height="100%" fill="url(#g)"/>
    ${
    Array.from({ length: 30 }, (_, k) =>
      `<circle cx="${(k * 137 + i * 31) % W}" cy="${(k * 89 + i * 17) % H}" r="${20 + (k * 13) % 120}"
        fill="hsl(${(hue + k * 23) % 360},80%,${40 + (k % 5) * 10}%)" fill-opacity="0.7"/>`).join("")
  }</svg>`;
  return new Uint8Array(
    await sharp(new TextEncoder().encode(svg)).composite([{ input: grain, blend: "overlay" }]).jpeg({
      quality: 88,
    })
      .toBuffer(),
  );
}

/** The peer: the same pipeline as imgproc's thumbnail step, straight from memory, `CONC` at a time. */
async function sharpLoop(inputs: Uint8Array[]): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONC }, async () => {
    while (next < inputs.length) {
      const input = inputs[next++];
      await sharp(input, { limitInputPixels: opts.maxPixels })
        .rotate()
        .resize({ width: opts.size, height: opts.size, fit: "inside", withoutEnlargement: true })
        .flatten({ background: "#ffffff" })
        .jpeg({ quality: opts.quality })
        .toBuffer();
    }
  }));
  return performance.now() - t0;
}

const dir = await Deno.makeTempDir({ prefix: "wharf-bench-thumbs-" });
const services = await startServices({
  dir,
  pgUser: "wharf",
  pgPassword: crypto.randomUUID(),
  ephemeral: true,
  buckets: ["bench-media", "bench-thumbs"],
});
try {
  const sql = connectPostgres(services.postgres.url, { max: CONC + 4, applicationName: "wharf-bench" });
  await migrate(sql);
  const cfg = loadConfig(S3Config, {
    S3_ENDPOINT: services.s3.endpoint,
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    FEED_MEDIA_BUCKET: "bench-media",
    FEED_THUMBNAILS_BUCKET: "bench-thumbs",
  });
  const s3 = createS3Client(cfg);
  const distinct: Uint8Array[] = [];
  for (let i = 0; i < DISTINCT; i++) distinct.push(await photo(i));
  const inputs = Array.from({ length: PHOTOS }, (_, i) => distinct[i % DISTINCT]);
  const avgKiB = inputs.reduce((a, b) => a + b.length, 0) / inputs.length / 1024;

  // Warm sharp (thread pool, codecs) for both sides.
  await sharpLoop(inputs.slice(0, 20));

  const [u] =
    await sql`insert into app.users (email, username, password) values ('b@x.io', 'bench', 'x') returning id`;

  // CPU per photo of each process (stable on a busy machine, unlike wall time): this one (imgproc's
  // JavaScript and sharp's threads, or the loop), the local S3 server, and Postgres with its backends.
  const selfMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const cpu = () => ({
    self: selfMs(),
    s3: cpuMsOf(services.s3.process.pid),
    pg: cpuMsOf(services.postgres.process.pid, true),
  });
  const perPhoto = (a: ReturnType<typeof cpu>, b: ReturnType<typeof cpu>) => ({
    cpu_ms_self: (b.self - a.self) / PHOTOS,
    cpu_ms_s3: (b.s3 - a.s3) / PHOTOS,
    cpu_ms_pg: (b.pg - a.pg) / PHOTOS,
  });
  type Cpu = ReturnType<typeof perPhoto>;

  /** imgproc over `queue`, bridging the S3 server's event log, with the bench's settings. */
  const startImgproc = (queue: PgQueue, metrics: Registry, signal: AbortSignal) =>
    runImgproc({
      sql,
      s3,
      queue,
      eventsUrl: services.s3.endpoint + EVENTS_PATH,
      mediaBucket: "bench-media",
      thumbnailsBucket: "bench-thumbs",
      thumbnail: opts,
      concurrency: CONC,
      maxAttempts: 5,
      log,
      metrics,
      signal,
    });

  /** Feeds and uploads for round `r`'s photos (not timed): their creation events wait in the log. */
  const upload = async (r: number): Promise<number> => {
    const keys = inputs.map((_, i) => `u/${u.id}/r${r}/${i}.jpg`);
    await sql`insert into app.feeds ${
      sql(keys.map((k, i) => ({
        user_id: u.id,
        caption: `photo ${i}`,
        media_key: k,
        content_type: "image/jpeg",
        size_bytes: inputs[i].length,
      })))
    }`;
    const t = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < keys.length) {
        const i = next++;
        await s3.send(new PutObjectCommand({ Bucket: "bench-media", Key: keys[i], Body: inputs[i] }));
      }
    }));
    return performance.now() - t;
  };

  /** imgproc, started with the round's creation events waiting in the S3 server's event log. */
  const timedImgproc = async (): Promise<{ ms: number; cpu: Cpu }> => {
    const controller = new AbortController();
    const metrics = new Registry();
    // Completion is watched in this process, on imgproc's own outcome counter (an event's outcome is
    // counted once its transaction committed), told of each count rather than polled: polling the feeds
    // table cost Postgres about 0.6 ms of CPU per photo (and this process more), and polling the counter
    // every 5 ms a few hundred timer wake-ups a second, all charged to imgproc. The table is checked once
    // at the end.
    const outcomes = metrics.counter("wharf_imgproc_events_total", "Object events by outcome");
    const applied = new Set(["thumbnail", "rejected", "stale", "gone"]);
    let settled = 0;
    const all = Promise.withResolvers<void>();
    const count = outcomes.inc.bind(outcomes);
    outcomes.inc = (labels, n = 1) => {
      count(labels, n);
      if (applied.has(String(labels?.outcome)) && (settled += n) >= PHOTOS) all.resolve();
    };
    const c0 = cpu();
    const t0 = performance.now();
    const worker = startImgproc(
      new PgQueue({ sql, consumerId: "bench", pollMs: 20, prefetch: CONC }),
      metrics,
      controller.signal,
    );
    const timeout = setTimeout(
      () => all.reject(new Error(`Timed out: ${settled} of ${PHOTOS} events applied`)),
      600_000,
    );
    try {
      await all.promise;
    } catch (e) {
      controller.abort();
      await worker;
      throw e;
    } finally {
      clearTimeout(timeout);
    }
    const ms = performance.now() - t0;
    const used = perPhoto(c0, cpu());
    controller.abort();
    await worker;
    return { ms, cpu: used };
  };

  const timedLoop = async (): Promise<{ ms: number; cpu: Cpu }> => {
    const c0 = cpu();
    const ms = await sharpLoop(inputs);
    return { ms, cpu: perPhoto(c0, cpu()) };
  };

  type Side = { ms: number; cpu: Cpu };
  const rounds: { imgproc: Side; loop: Side; uploadMs: number; ratio: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const uploadMs = await upload(r);
    let imgproc!: Side, loop!: Side;
    await alternate(
      r,
      async () => void (loop = await timedLoop()),
      async () => void (imgproc = await timedImgproc()),
    );
    const ratio = Number((loop.ms / imgproc.ms).toFixed(3));
    if (ROUNDS > 1) console.error(`[bench] round ${r + 1} of ${ROUNDS}: ratio ${ratio}`);
    rounds.push({ imgproc, loop, uploadMs, ratio });
  }
  const median = medianRound(rounds);

  // Latency of one upload at a time (the S3 PUT's answer to the feed marked ready), imgproc with the
  // process's queue settings: what a user waits for after an upload when imgproc is idle.
  const latencies: number[] = [];
  {
    const idle = new AbortController();
    const idleMetrics = new Registry();
    const idleWorker = startImgproc(
      new PgQueue({ sql, consumerId: "bench-idle", prefetch: CONC }),
      idleMetrics,
      idle.signal,
    );
    const made = idleMetrics.counter("wharf_imgproc_events_total", "Object events by outcome");
    await abortableSleep(500); // the bridge and the queue are waiting
    for (let i = 0; i < IDLE_PHOTOS; i++) {
      const before = made.get({ outcome: "thumbnail" });
      await s3.send(
        new PutObjectCommand({ Bucket: "bench-media", Key: `idle/${i}.jpg`, Body: distinct[i % DISTINCT] }),
      );
      const t = performance.now();
      const until = performance.now() + 30_000;
      while (made.get({ outcome: "thumbnail" }) === before) {
        if (performance.now() > until) throw new Error(`Timed out waiting for idle upload ${i}`);
        await abortableSleep(1);
      }
      latencies.push(performance.now() - t);
      await abortableSleep(100 + (i * 37) % 150); // uploads arrive at no fixed phase of a poll
    }
    idle.abort();
    await idleWorker;
  }

  const [done] = await sql`select count(*) filter (where thumbnail_status = 'ready')::int as ready,
                                   count(*) filter (where thumbnail_status = 'failed')::int as failed
                              from app.feeds`;
  if (done.failed) throw new Error(`Cannot report: ${done.failed} thumbnails failed`);
  if (done.ready !== PHOTOS * ROUNDS) {
    throw new Error(`Cannot report: ${done.ready} of ${PHOTOS * ROUNDS} feeds are ready`);
  }

  const named = (name: string, r: number) => ROUNDS > 1 ? `${name} (round ${r + 1})` : name;
  const rows: Row[] = rounds.flatMap((x, r) => [
    {
      run: named("imgproc end to end", r),
      photos: PHOTOS,
      "ms": x.imgproc.ms,
      "photos/s": PHOTOS / (x.imgproc.ms / 1000),
      ...x.imgproc.cpu,
    },
    {
      run: named("plain sharp loop", r),
      photos: PHOTOS,
      "ms": x.loop.ms,
      "photos/s": PHOTOS / (x.loop.ms / 1000),
      ...x.loop.cpu,
    },
  ]);
  const uploadMs = rounds.reduce((a, x) => a + x.uploadMs, 0) / rounds.length;
  rows.push(
    {
      run: "one upload at a time, idle (ms: p50 upload → ready)",
      photos: IDLE_PHOTOS,
      "ms": percentile(latencies, 50),
    },
    {
      run: "(upload to S3 before each round, not timed)",
      photos: PHOTOS,
      "ms": uploadMs,
      "photos/s": PHOTOS / (uploadMs / 1000),
    },
  );
  const { imgproc, loop } = median;
  report("thumbs", rows, {
    ratio: median.ratio,
    ratios: rounds.map((x) => x.ratio),
    imgproc_photos_per_s: Number((PHOTOS / (imgproc.ms / 1000)).toFixed(1)),
    imgproc_cpu_ms_per_photo: Math.round(
      imgproc.cpu.cpu_ms_self + imgproc.cpu.cpu_ms_s3 + imgproc.cpu.cpu_ms_pg,
    ),
    sharp_cpu_ms_per_photo: Math.round(loop.cpu.cpu_ms_self),
    sharp_photos_per_s: Number((PHOTOS / (loop.ms / 1000)).toFixed(1)),
    idle_latency_p50_ms: Number(percentile(latencies, 50).toFixed(1)),
    idle_latency_p99_ms: Number(percentile(latencies, 99).toFixed(1)),
    photos: PHOTOS,
    rounds: ROUNDS,
    concurrency: CONC,
    size: `${W}x${H}`,
    avg_input_kib: Math.round(avgKiB),
  });
  s3.destroy();
  await sql.end({ timeout: 5 });
} finally {
  await services.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
