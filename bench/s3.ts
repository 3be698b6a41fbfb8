/**
 * `deno task bench:s3`: wharf's local S3 server (shared/stack/s3_server.ts) against s3rver, the emulator
 * it replaced, in the same run, each in its own process, through the same client (`createS3Client` of
 * the feed: the AWS SDK on Deno's fetch). Three workloads, `BENCH_CONCURRENCY` requests in flight:
 * GET of a 3.4 MiB object (a phone photo), PUT of a 30 KB object (a thumbnail), PUT of a 16 MiB object
 * (a replicate batch file; its body is signed, so the server hashes it while streaming it to disk).
 * Figures per request: the server's CPU time and the client's (from /proc), and requests per second.
 * A third row, a bare `Deno.serve` streaming files with no S3 protocol (bench/_bare_s3.ts), is the floor.
 * Ratio: s3rver's server CPU per GET ÷ ours (how many times less CPU the local server spends serving a
 * photo, the request the feed and imgproc make most).
 *
 * `BENCH_GETS` (60), `BENCH_SMALL_PUTS` (300), `BENCH_BIG_PUTS` (8), `BENCH_CONCURRENCY` (4).
 */
import { GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, type ManagedProcess, startProcess, tcpOpen } from "../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS, startS3 } from "../shared/stack/s3.ts";
import { createS3Client } from "../web/feed/s3.ts";
import type { S3Settings } from "../web/feed/s3_config.ts";
import { S3RVER_CREDENTIALS } from "./_s3rver.ts";
import { cpuMsOf, report, type Row } from "./_util.ts";

const GETS = Number(Deno.env.get("BENCH_GETS") ?? 60);
const SMALL_PUTS = Number(Deno.env.get("BENCH_SMALL_PUTS") ?? 300);
const BIG_PUTS = Number(Deno.env.get("BENCH_BIG_PUTS") ?? 8);
const CONC = Number(Deno.env.get("BENCH_CONCURRENCY") ?? 4);
const BUCKET = "bench";
const BARE = "bare Deno.serve (floor, no S3)";

interface Server {
  name: string;
  pid: number;
  client: S3Client;
  stop(): Promise<void>;
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function clientFor(endpoint: string, creds: { accessKeyId: string; secretAccessKey: string }): S3Client {
  return createS3Client({
    S3_REGION: "us-east-1",
    S3_ENDPOINT: endpoint,
    S3_ACCESS_KEY_ID: creds.accessKeyId,
    S3_SECRET_ACCESS_KEY: creds.secretAccessKey,
  } as S3Settings);
}

async function startOurs(dir: string): Promise<Server> {
  const s3 = await startS3({ dir, port: freePort(), buckets: [BUCKET] });
  return {
    name: "wharf local S3",
    pid: s3.process.pid,
    client: clientFor(s3.endpoint, LOCAL_S3_CREDENTIALS),
    stop: s3.stop,
  };
}

/** Starts a bench peer process (`entry` takes `--port` and `--dir`) and waits for its port. */
async function startPeer(
  name: string,
  file: string,
  dir: string,
  creds: { accessKeyId: string; secretAccessKey: string },
  extra: string[] = [],
): Promise<Server> {
  const port = freePort();
  const entry = fileURLToPath(new URL(file, import.meta.url));
  const log = join(dir, "server.log");
  const proc: ManagedProcess = await startProcess({
    name,
    cmd: Deno.execPath(),
    args: ["run", "-A", entry, "--port", String(port), "--dir", join(dir, "objects"), ...extra],
    output: log,
  });
  await proc.waitReady(`${name} to listen`, () => tcpOpen(port), 60_000, log);
  return {
    name,
    pid: proc.pid,
    client: clientFor(`http://127.0.0.1:${port}`, creds),
    stop: async () => {
      await proc.stop(10_000);
    },
  };
}

const startS3rver = (dir: string) =>
  startPeer("s3rver", "./_s3rver.ts", dir, S3RVER_CREDENTIALS, ["--bucket", BUCKET]);
const startBare = (dir: string) =>
  startPeer(BARE, "./_bare_s3.ts", dir, { accessKeyId: "x", secretAccessKey: "x" });

interface Figures {
  serverMs: number;
  clientMs: number;
  secs: number;
  n: number;
}

/** Runs `n` requests, `CONC` at a time; returns the CPU used (server, client) and the time taken. */
async function measure(s: Server, n: number, one: (i: number) => Promise<void>): Promise<Figures> {
  const server0 = cpuMsOf(s.pid), client0 = cpuMsOf(Deno.pid);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: CONC }, async () => {
    while (next < n) await one(next++);
  }));
  return {
    serverMs: cpuMsOf(s.pid) - server0,
    clientMs: cpuMsOf(Deno.pid) - client0,
    secs: (performance.now() - t0) / 1000,
    n,
  };
}

const photo = bytes(Math.round(3.4 * 1024 * 1024), 1);
const thumb = bytes(30 * 1024, 2);
const batch = bytes(16 * 1024 * 1024, 3);

type Op = "get" | "small" | "big";
const ops: Record<Op, { n: number; one: (s: Server, i: number) => Promise<void> }> = {
  get: {
    n: GETS,
    one: async (s) => {
      const r = await s.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: "photos/p.jpg" }));
      const body = await r.Body!.transformToByteArray();
      if (body.length !== photo.length) throw new Error(`${s.name}: short GET (${body.length} bytes)`);
    },
  },
  small: {
    n: SMALL_PUTS,
    one: async (s, i) => {
      await s.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `thumbs/${i}.jpg`, Body: thumb }));
    },
  },
  big: {
    n: BIG_PUTS,
    one: async (s, i) => {
      await s.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `batches/${i % 2}.csv`, Body: batch }));
    },
  },
};

const root = await Deno.makeTempDir({ prefix: "wharf-bench-s3-" });
const servers: Server[] = [];
const results = new Map<string, Record<Op, Figures>>();
try {
  // All three run at once (idle ones cost nothing) and take turns, in one order then the reverse, so
  // that neither the client's warm-up nor the machine's load favours one of them.
  for (const start of [startOurs, startS3rver, startBare]) {
    servers.push(await start(await Deno.makeTempDir({ dir: root })));
  }
  for (const s of servers) {
    await s.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: "photos/p.jpg", Body: photo }));
    for (const op of Object.values(ops)) for (let i = 0; i < 3; i++) await op.one(s, i); // warm up
    results.set(s.name, {} as Record<Op, Figures>);
  }
  for (const [op, { n, one }] of Object.entries(ops) as [Op, (typeof ops)[Op]][]) {
    for (const order of [servers, [...servers].reverse()]) {
      for (const s of order) {
        const f = await measure(s, Math.ceil(n / 2), (i) => one(s, i));
        const r = results.get(s.name)!;
        const prev = r[op];
        r[op] = prev
          ? {
            serverMs: prev.serverMs + f.serverMs,
            clientMs: prev.clientMs + f.clientMs,
            secs: prev.secs + f.secs,
            n: prev.n + f.n,
          }
          : f;
      }
    }
  }
} finally {
  for (const s of servers) await s.stop();
  await Deno.remove(root, { recursive: true }).catch(() => {});
}

const perReq = (f: Figures) => ({
  serverMs: f.serverMs / f.n,
  clientMs: f.clientMs / f.n,
  rps: f.n / f.secs,
});
const rows: Row[] = [];
const labels = { get: "GET 3.4 MiB", small: "PUT 30 KB", big: "PUT 16 MiB" } as const;
for (const op of ["get", "small", "big"] as const) {
  for (const [name, r] of results) {
    const f = perReq(r[op]);
    rows.push({
      workload: labels[op],
      server: name,
      "server CPU ms/req": f.serverMs,
      "client CPU ms/req": f.clientMs,
      "req/s": f.rps,
    });
  }
}
const pick = (name: string) => {
  const r = results.get(name)!;
  return { get: perReq(r.get), small: perReq(r.small), big: perReq(r.big) };
};
const ours = pick("wharf local S3"), peer = pick("s3rver");
report("s3", rows, {
  ratio: Number((peer.get.serverMs / ours.get.serverMs).toFixed(2)),
  ratio_is: "s3rver server CPU per 3.4 MiB GET ÷ wharf local S3's",
  get_server_cpu_ms: {
    ours: Number(ours.get.serverMs.toFixed(2)),
    s3rver: Number(peer.get.serverMs.toFixed(2)),
  },
  put_30k_server_cpu_ms: {
    ours: Number(ours.small.serverMs.toFixed(2)),
    s3rver: Number(peer.small.serverMs.toFixed(2)),
  },
  put_16m_server_cpu_ms: {
    ours: Number(ours.big.serverMs.toFixed(2)),
    s3rver: Number(peer.big.serverMs.toFixed(2)),
  },
});
