import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { connectPostgres, copyIn, quoteIdent, resolveTls } from "./db.ts";
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

Deno.test("a connection killed in the middle of a transaction fails the transaction and does not end the process", async () => {
  // In a process of its own: without the guard, postgres.js's late write to the closed socket is an
  // uncaught error that ends the process.
  const script = join(testEnv.tmp, `tx-killed-${crypto.randomUUID()}.ts`);
  await Deno.writeTextFile(
    script,
    `import { connectPostgres } from ${JSON.stringify(new URL("./db.ts", import.meta.url).href)};
const sql = connectPostgres(Deno.env.get("URL"), { max: 2 });
const killer = connectPostgres(Deno.env.get("URL"), { max: 1 });
let pid;
const tx = sql.begin(async (t) => {
  [{ pid }] = await t\`select pg_backend_pid() as pid\`;
  await t\`select pg_sleep(5)\`;
});
while (pid === undefined) await new Promise((r) => setTimeout(r, 20));
await killer\`select pg_terminate_backend(\${pid})\`;
const error = await tx.then(() => "none", (e) => e.code);
await new Promise((r) => setTimeout(r, 500));
const [{ ok }] = await sql\`select 1 as ok\`;
console.log(JSON.stringify({ error, ok }));
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
    assert.deepEqual(JSON.parse(stdout.trim().split("\n").at(-1)!), { error: "CONNECTION_CLOSED", ok: 1 });
  } finally {
    await Deno.remove(script).catch(() => {});
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
