import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { connectPostgres, copyIn, isOrphanedConnectionError, quoteIdent, resolveTls } from "./db.ts";
import { createTestDatabase, testEnv } from "./testing/mod.ts";

async function sslInUse(url: string, opts: Parameters<typeof connectPostgres>[1] = {}): Promise<boolean> {
  const sql = connectPostgres(url, { max: 1, ...opts });
  try {
    const [r] = await sql<{ ssl: boolean }[]>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`;
    return r.ssl;
  } finally {
    await sql.end();
  }
}

Deno.test("connectPostgres() speaks plain TCP with sslmode=disable and TLS with require", async () => {
  assert.equal(await sslInUse(testEnv.pgUrl + "?sslmode=disable"), false);
  assert.equal(await sslInUse(testEnv.pgUrl + "?sslmode=require"), true);
});

Deno.test("connectPostgres() verifies the server against a CA file with verify-full", async () => {
  const url = new URL(testEnv.pgUrl);
  url.hostname = "localhost";
  url.searchParams.set("sslmode", "verify-full");
  url.searchParams.set("sslrootcert", testEnv.pgCaFile);
  assert.equal(await sslInUse(url.toString()), true);
});

Deno.test("connectPostgres() refuses a server whose certificate the CA did not sign", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp });
  const ca = join(dir, "other-ca.crt");
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-new",
      "-nodes",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-keyout",
      join(dir, "k"),
      "-out",
      ca,
      "-days",
      "1",
      "-subj",
      "/CN=other",
    ],
    stderr: "null",
  }).output();
  assert.ok(out.success);
  await assert.rejects(() => sslInUse(testEnv.pgUrl, { sslmode: "verify-full", sslrootcert: ca }));
});

Deno.test("resolveTls() strips TLS parameters from the URL and rejects unknown modes clearly", () => {
  const r = resolveTls("postgres://u:p@h/db?sslmode=require&application_name=x");
  assert.equal(r.mode, "require");
  assert.ok(!r.url.includes("sslmode"));
  assert.throws(() => resolveTls("postgres://h/db?sslmode=sometimes"), /sslmode must be one of/);
  assert.throws(() => resolveTls("mysql://u:secret@h/db"), (e: Error) => !e.message.includes("secret"));
  assert.throws(() => resolveTls("not a url"), /not a valid URL/);
});

Deno.test("quoteIdent() doubles quotes and refuses NUL", () => {
  assert.equal(quoteIdent('we"ird'), '"we""ird"');
  assert.throws(() => quoteIdent("a\u0000b"));
});

Deno.test("connections killed in the middle of transactions fail them, and the pool recovers at once", async () => {
  // In a process of its own: an uncaught error would end it. postgres.js 3.4.9 as published either ended
  // the process (a late write to the closed socket) or left the connection unable to ever connect again
  // (every later query failed after connect_timeout); see vendor/postgres/PATCHES.md.
  const script = join(testEnv.tmp, `tx-killed-${crypto.randomUUID()}.ts`);
  await Deno.writeTextFile(
    script,
    `import { connectPostgres } from ${JSON.stringify(new URL("./db.ts", import.meta.url).href)};
const sql = connectPostgres(Deno.env.get("URL"), { max: 2, connectTimeout: 5 });
const killer = connectPostgres(Deno.env.get("URL"), { max: 1 });
const errors = new Set();
let slowest = 0;
// Rounds: which way postgres.js meets the dead connection depends on timing.
for (let round = 0; round < 6; round++) {
  const t0 = performance.now();
  let pid;
  let settled = false;
  const tx = sql.begin(async (t) => {
    [{ pid }] = await t\`select pg_backend_pid() as pid\`;
    await t\`select pg_sleep(5)\`;
  }).then(() => "none", (e) => e.code).finally(() => (settled = true));
  while (pid === undefined && !settled) await new Promise((r) => setTimeout(r, 10));
  if (pid !== undefined) await killer\`select pg_terminate_backend(\${pid})\`;
  errors.add(await tx);
  slowest = Math.max(slowest, performance.now() - t0);
  await new Promise((r) => setTimeout(r, 50 * round));
}
let ok;
for (let i = 0; i < 3 && ok === undefined; i++) {
  [{ ok }] = await sql\`select 1 as ok\`.catch((e) => (errors.add(e.code), [{}]));
}
console.log(JSON.stringify({ errors: [...errors].sort(), ok, slowest: Math.round(slowest) }));
Deno.exit(0);
`,
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", fromFileUrl(new URL("../deno.json", import.meta.url)), script],
      env: { URL: testEnv.pgUrl },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(stdout.trim().split("\n").at(-1)!);
    assert.equal(r.ok, 1, stdout);
    // Each round fails with the connection's end, never after a connect timeout.
    for (const code of r.errors) assert.ok(["CONNECTION_CLOSED", "57P01"].includes(code), stdout);
    assert.ok(r.errors.includes("CONNECTION_CLOSED"), stdout);
    assert.ok(r.slowest < 4_000, stdout);
  } finally {
    await Deno.remove(script).catch(() => {});
  }
});

Deno.test("isOrphanedConnectionError() knows postgres.js's connection errors and nothing else", async () => {
  const sql = connectPostgres(testEnv.pgUrl, { max: 1 });
  const killer = connectPostgres(testEnv.pgUrl, { max: 1 });
  try {
    const reserved = await sql.reserve();
    const [{ pid }] = await reserved`select pg_backend_pid() as pid`;
    const running = reserved`select pg_sleep(5)`.then(() => undefined, (e) => e);
    await new Promise((r) => setTimeout(r, 100));
    await killer`select pg_terminate_backend(${pid})`;
    const closed = await running;
    assert.equal(closed?.code, "CONNECTION_CLOSED");
    assert.ok(isOrphanedConnectionError(closed));
    reserved.release();
    const plain = Object.assign(new Error("write CONNECTION_CLOSED 127.0.0.1:5432"), {
      code: "CONNECTION_CLOSED",
    });
    assert.ok(!isOrphanedConnectionError(plain), "not made by postgres.js");
    assert.ok(!isOrphanedConnectionError(new Error("boom")));
    const timeout = Object.assign(new Error(closed.message.replace("CONNECTION_CLOSED", "CONNECT_TIMEOUT")), {
      code: "CONNECT_TIMEOUT",
      stack: closed.stack,
    });
    assert.ok(isOrphanedConnectionError(timeout));
    assert.ok(!isOrphanedConnectionError("CONNECTION_CLOSED"));
  } finally {
    await sql.end({ timeout: 1 });
    await killer.end({ timeout: 1 });
  }
});

Deno.test("copyIn() settles when the server refuses the last rows after the end of the data", async () => {
  await using db = await createTestDatabase({ migrated: false });
  await db.sql`create table public.nums (n int primary key)`;
  const data = (last: string) =>
    new TextEncoder().encode(Array.from({ length: 50_000 }, (_, i) => `${i}\n`).join("") + last);
  const load = (last: string) =>
    db.sql.begin(async (tx) => {
      const { stream, done } = await copyIn(tx, "copy public.nums from stdin");
      stream.end(data(last));
      await done;
    });
  const refused = await Promise.race([
    load("oops\n").then(() => "loaded", (e: Error) => e.message),
    new Promise((r) => setTimeout(() => r("still waiting after 10 s"), 10_000)),
  ]);
  assert.match(String(refused), /invalid input syntax for type integer/);
  await load("50000\n");
  const [{ n }] = await db.sql<{ n: number }[]>`select count(*)::int as n from public.nums`;
  assert.equal(n, 50_001);
});

Deno.test("a COPY TO STDOUT read slowly leaves its connection usable (the socket flows again after it)", async () => {
  await using db = await createTestDatabase({ migrated: false });
  const sql = connectPostgres(db.url, { max: 1 });
  try {
    // A slow reader keeps the copy's stream full, so that its last rows and the end of the copy arrive
    // together while the socket is paused for the full stream (every round met it before the fix).
    for (let round = 0; round < 5; round++) {
      const outcome = await Promise.race([
        sql.begin(async (tx) => {
          const readable = await tx.unsafe(
            `copy (select repeat('x', 200) from generate_series(1, 2000)) to stdout`,
          ).readable();
          let bytes = 0;
          let chunks = 0;
          for await (const chunk of readable) {
            bytes += (chunk as Uint8Array).length;
            if (++chunks % 64 === 0) await new Promise((r) => setTimeout(r, 1));
          }
          const [{ one }] = await tx`select 1 as one`;
          return `${bytes}:${one}`;
        }),
        new Promise((r) => setTimeout(() => r("still waiting after 10 s"), 10_000)),
      ]);
      assert.equal(outcome, `${2000 * 201}:1`, `round ${round}`);
    }
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("a small COPY FROM STDIN is not held back by Nagle's algorithm (its end waits for no delayed ACK)", async () => {
  await using db = await createTestDatabase({ migrated: false });
  const sql = connectPostgres(db.url, { max: 1 });
  try {
    await sql`create table small_copy (a int, b text)`;
    const data = new TextEncoder().encode("1,one\n2,two\n3,three\n");
    // The data and the copy's end go out in two writes; with Nagle's algorithm on, the second waits for
    // the server to acknowledge the first, which Linux delays by 40 ms: every copy took 40–90 ms.
    const ms: number[] = [];
    for (let i = 0; i < 11; i++) {
      const t0 = performance.now();
      const tx = await sql.reserve();
      try {
        await tx`begin`;
        const { stream, done } = await copyIn(tx, `copy small_copy from stdin (format csv)`);
        stream.write(data);
        stream.end();
        await done;
        await tx`commit`;
      } finally {
        tx.release();
      }
      ms.push(performance.now() - t0);
    }
    ms.sort((a, b) => a - b);
    assert.ok(
      ms[5] < 20,
      `median ${ms[5].toFixed(1)} ms per small COPY (each: ${ms.map((m) => m.toFixed(1))})`,
    );
    const [{ n }] = await sql`select count(*)::int as n from small_copy`;
    assert.equal(n, 33);
  } finally {
    await sql.end({ timeout: 1 });
  }
});
