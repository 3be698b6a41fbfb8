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
 * A second table compares the clients against wharf's server, GET 3.4 MiB and PUT 30 KB: the SDK's
 * `S3Client.send`, and imgproc's `S3Objects` (shared/s3_objects.ts) over `fetch` and over wharf's
 * HTTP/1.1 client (the GET read into a pooled buffer, as imgproc reads an upload).
 *
 * `BENCH_GETS` (60), `BENCH_SMALL_PUTS` (300), `BENCH_BIG_PUTS` (8), `BENCH_CONCURRENCY` (4).
 */
import { GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, type ManagedProcess, startProcess, tcpOpen } from "../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS, startS3 } from "../shared/stack/s3.ts";
import { createS3Client } from "../web/feed/s3.ts";
import { S3Objects } from "../shared/s3_objects.ts";
import type { S3Settings } from "../web/feed/s3_config.ts";
import { S3RVER_CREDENTIALS } from "./_s3rver.ts";
import { cpuMsOf, formatTable, report, type Row } from "./_util.ts";

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

const add = (a: Figures, b: Figures): Figures => ({
  serverMs: a.serverMs + b.serverMs,
  clientMs: a.clientMs + b.clientMs,
  secs: a.secs + b.secs,
  n: a.n + b.n,
});

const root = await Deno.makeTempDir({ prefix: "wharf-bench-s3-" });
const servers: Server[] = [];
const results = new Map<string, Record<Op, Figures>>();
const clientResults = new Map<string, Record<"get" | "small", Figures>>();
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
        r[op] = r[op] ? add(r[op], f) : f;
      }
    }
  }
  // The clients, against wharf's server: the SDK, and imgproc's S3Objects over fetch and over its
  // HTTP/1.1 client (GET into a pooled buffer, as imgproc reads an upload).
  const ourServer = servers[0];
  using overFetch = new S3Objects(ourServer.client, { transport: "fetch" });
  using overHttp1 = new S3Objects(ourServer.client, { transport: "http1" });
  const viaObjects = (o: S3Objects): Record<"get" | "small", (i: number) => Promise<void>> => ({
    get: () =>
      o.withObject(BUCKET, "photos/p.jpg", (b) => {
        if (b.length !== photo.length) throw new Error(`short GET (${b.length} bytes)`);
        return Promise.resolve();
      }),
    small: (i) => o.put(BUCKET, `thumbs/${i}.jpg`, thumb),
  });
  const clients: [string, Record<"get" | "small", (i: number) => Promise<void>>][] = [
    ["SDK S3Client.send", {
      get: (i) => ops.get.one(ourServer, i),
      small: (i) => ops.small.one(ourServer, i),
    }],
    ["S3Objects over fetch", viaObjects(overFetch)],
    ["S3Objects over HTTP/1.1", viaObjects(overHttp1)],
  ];
  for (const [name, c] of clients) {
    for (let i = 0; i < 3; i++) await c.get(i), await c.small(i); // warm up
    clientResults.set(name, {} as Record<"get" | "small", Figures>);
  }
  for (const op of ["get", "small"] as const) {
    for (const order of [clients, [...clients].reverse()]) {
      for (const [name, c] of order) {
        const f = await measure(ourServer, Math.ceil(ops[op].n / 2), c[op]);
        const r = clientResults.get(name)!;
        r[op] = r[op] ? add(r[op], f) : f;
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
const clientRows: Row[] = [];
for (const op of ["get", "small"] as const) {
  for (const [name, r] of clientResults) {
    const f = perReq(r[op]);
    clientRows.push({
      workload: labels[op],
      client: name,
      "client CPU ms/req": f.clientMs,
      "server CPU ms/req": f.serverMs,
      "req/s": f.rps,
    });
  }
}
console.log(formatTable(clientRows) + "\n");
const clientGet = (name: string) => Number(perReq(clientResults.get(name)!.get).clientMs.toFixed(2));
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
  get_client_cpu_ms: {
    sdk: clientGet("SDK S3Client.send"),
    s3objects_fetch: clientGet("S3Objects over fetch"),
    s3objects_http1: clientGet("S3Objects over HTTP/1.1"),
  },
  put_16m_server_cpu_ms: {
    ours: Number(ours.big.serverMs.toFixed(2)),
    s3rver: Number(peer.big.serverMs.toFixed(2)),
  },
});
