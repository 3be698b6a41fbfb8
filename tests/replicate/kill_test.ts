import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { abortableSleep } from "../../shared/worker.ts";
import { checksum, converged, eventually, fixture } from "./_helpers.ts";

const MAIN = fromFileUrl(new URL("../../workers/replicate/main.ts", import.meta.url));

for (const format of ["csv", "binary"] as const) {
  Deno.test(`kill -9 of the worker during a load, then a restart, leaves the target equal to the source (${format} files)`, () =>
    killAndRestart(format));
}

async function killAndRestart(format: "csv" | "binary"): Promise<void> {
  const tables = ["public.load_a", "public.load_b"];
  await using f = await fixture(async (sql) => {
    await sql`create table public.load_a (id int primary key, v text)`;
    await sql`create table public.load_b (id int primary key, n bigint)`;
    await sql`insert into public.load_a select g, 'seed' || g from generate_series(1, 100) g`;
  }, tables);
  const env = {
    ...Deno.env.toObject(),
    DATABASE_URL: f.source.url,
    REPLICATE_PIPELINE: f.pipeline,
    REPLICATE_SLOT: f.slot,
    REPLICATE_PUBLICATION: f.publication,
    REPLICATE_TARGET_URL: f.target.url,
    REPLICATE_BUCKET: f.bucket,
    REPLICATE_BATCH_ROWS: "300",
    REPLICATE_BATCH_MS: "50",
    REPLICATE_SPOOL_DIR: f.spoolDir,
    REPLICATE_FILE_FORMAT: format,
    OPS_PORT: "0",
    WHARF_LOG_LEVEL: "info",
  };
  const logPath = join(f.spoolDir, "..", `worker-${f.pipeline}.log`);
  const logFile = await Deno.open(logPath, { write: true, create: true, append: true });
  const spawn = () =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN], env, stdout: "null", stderr: "piped" })
      .spawn();
  const keepLog = (c: Deno.ChildProcess) =>
    c.stderr.pipeTo(logFile.writable, { preventClose: true }).catch(() => {});
  let worker = spawn();
  keepLog(worker);
  try {
    await converged(f.source.sql, f.target.sql, tables);
    // A load in many transactions; the worker dies in the middle of it.
    const load = (async () => {
      // Casts: postgres.js sends numbers untyped, and generate_series has several overloads.
      for (let i = 0; i < 40; i++) {
        await f.source.sql.begin(async (tx) => {
          await tx`insert into public.load_a select g, md5(g::text) from generate_series(${
            1000 + i * 250
          }::int, ${1249 + i * 250}::int) g`;
          await tx`insert into public.load_b select g, g * 2 from generate_series(${i * 100}::int, ${
            i * 100 + 99
          }::int) g`;
          await tx`update public.load_a set v = v || '+' where id % 7 = ${i % 7}`;
          await tx`delete from public.load_b where id = ${i * 50}`;
        });
        await abortableSleep(10);
      }
    })();
    await eventually("a batch of the load to be applied", async () => {
      const [r] = await f.target.sql`select count(*)::int as n from public.load_a`;
      return r.n > 400;
    });
    worker.kill("SIGKILL");
    await worker.status;
    await load;
    assert.notEqual(
      await checksum(f.target.sql, "public.load_a"),
      await checksum(f.source.sql, "public.load_a"),
    );
    worker = spawn();
    keepLog(worker);
    try {
      await converged(f.source.sql, f.target.sql, tables, 60_000);
    } catch (e) {
      console.error((await Deno.readTextFile(logPath)).split("\n").slice(-30).join("\n"));
      throw e;
    }
    const [a] = await f.target
      .sql`select count(*)::int as n, count(distinct id)::int as d from public.load_a`;
    assert.equal(a.n, a.d);
  } finally {
    try {
      worker.kill("SIGTERM");
    } catch { /* exited already: the assertion below reports it */ }
    const st = await worker.status;
    logFile.close();
    assert.equal(st.code, 0);
  }
}
