/**
 * The migration runner: forward-only numbered SQL files in `sql/`, used by dev, tests and deploy.
 *
 * Each file runs in its own transaction that first takes a transaction-scoped advisory lock and then
 * re-checks whether the file was applied. Two runners started at once therefore serialise on the lock,
 * and the second one finds the work done instead of applying it again. A file that was applied and later
 * edited is refused (its checksum no longer matches): migrations only move forward.
 *
 * Run as a program (`deno task migrate`) it migrates `DATABASE_URL`.
 */
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import type { Sql } from "./db.ts";
import { connectPostgres } from "./db.ts";
import { WharfError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";

/** The folder of the project's migrations. */
export const MIGRATIONS_DIR = fromFileUrl(new URL("../sql/", import.meta.url));

/** `hashtext('wharf.migrations')`-like constant: one advisory lock key for all runners. */
const LOCK_KEY = 727_001_001;

/** One migration file. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

const FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

async function sha256(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads and orders the migrations of `dir`; refuses misnamed files and duplicate numbers. */
export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const out: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".sql")) continue;
    const m = FILE.exec(entry.name);
    if (!m) {
      throw new WharfError(500, `Cannot read migration ${entry.name}: name must look like 0001_name.sql`);
    }
    const sql = await Deno.readTextFile(join(dir, entry.name));
    out.push({ version: Number(m[1]), name: m[2], sql, checksum: await sha256(sql) });
  }
  out.sort((a, b) => a.version - b.version);
  for (let i = 1; i < out.length; i++) {
    if (out[i].version === out[i - 1].version) {
      throw new WharfError(500, `Cannot order migrations: two files have number ${out[i].version}`);
    }
  }
  return out;
}

/** What {@linkcode migrate} did. */
export interface MigrateResult {
  applied: number[];
  skipped: number[];
}

/** Applies every pending migration of `dir` to the database behind `sql`. Safe to run concurrently. */
export async function migrate(
  sql: Sql,
  options: { dir?: string; log?: Logger } = {},
): Promise<MigrateResult> {
  const log = options.log ?? createLogger("migrate");
  const migrations = await readMigrations(options.dir);
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
    await tx`
      create table if not exists public.wharf_migrations (
        version integer primary key,
        name text not null,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`;
  });
  const result: MigrateResult = { applied: [], skipped: [] };
  for (const m of migrations) {
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      const [done] = await tx<{ checksum: string }[]>`
        select checksum from public.wharf_migrations where version = ${m.version}`;
      if (done) {
        if (done.checksum !== m.checksum) {
          throw new WharfError(
            500,
            `Cannot migrate: ${m.version}_${m.name}.sql was changed after it was applied (migrations are forward-only; add a new file)`,
            { code: "migration_changed" },
          );
        }
        result.skipped.push(m.version);
        return;
      }
      // The file is the project's own, trusted text; it may hold several statements.
      await tx.unsafe(m.sql);
      await tx`insert into public.wharf_migrations (version, name, checksum)
               values (${m.version}, ${m.name}, ${m.checksum})`;
      result.applied.push(m.version);
      log.info("migration applied", { version: m.version, name: m.name });
    });
  }
  return result;
}

if (import.meta.main) {
  const url = Deno.env.get("DATABASE_URL");
  if (!url) {
    console.error("Cannot migrate: DATABASE_URL is not set");
    Deno.exit(2);
  }
  const sql = connectPostgres(url, { max: 1, applicationName: "wharf-migrate" });
  try {
    const r = await migrate(sql);
    console.log(`migrations: ${r.applied.length} applied, ${r.skipped.length} already there`);
  } finally {
    await sql.end();
  }
}
