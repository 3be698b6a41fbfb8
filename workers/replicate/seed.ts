/**
 * Demo for `deno task dev`: a `public.replicate_demo` table with a few rows, a publication `wharf_demo`
 * over it and the dispatch demo table (whose schedule adds a row every minute, so changes keep flowing),
 * and a warehouse database `<database>_warehouse` on the same server that the demo pipeline fills.
 * Idempotent.
 */
import type { Sql } from "../../shared/db.ts";
import type { SeedStep } from "../../shared/stack/seed.ts";

/** The demo pipeline's publication (and slot) name. */
export const DEMO_PUBLICATION = "wharf_demo";

/** The warehouse database the demo loads into: the wharf database's name + `_warehouse`. */
export function warehouseUrl(databaseUrl: string): string {
  const u = new URL(databaseUrl);
  u.pathname = "/" + encodeURIComponent(decodeURIComponent(u.pathname.slice(1)) + "_warehouse");
  return u.toString();
}

/** Creates the demo table, publication and warehouse database. */
export async function seedReplicateDemo(sql: Sql): Promise<void> {
  await sql`create table if not exists public.replicate_demo (
    id bigserial primary key, name text not null, note text, amount numeric(12, 2),
    updated_at timestamptz not null default now())`;
  await sql`insert into public.replicate_demo (name, note, amount)
            select 'item ' || g, case when g % 3 = 0 then null when g % 3 = 1 then '' else 'a, "quoted"
note' end, g * 1.25
              from generate_series(1, 20) g
             where not exists (select 1 from public.replicate_demo)`;
  const [pub] = await sql`select 1 from pg_publication where pubname = ${DEMO_PUBLICATION}`;
  if (!pub) {
    const [d] = await sql`select to_regclass('public.dispatch_demo') is not null as present`;
    await sql.unsafe(
      `create publication ${DEMO_PUBLICATION} for table public.replicate_demo${
        d.present ? ", public.dispatch_demo" : ""
      }`,
    );
  }
  const [{ db }] = await sql`select current_database() || '_warehouse' as db`;
  const [exists] = await sql`select 1 from pg_database where datname = ${db}`;
  // The name comes from current_database() (an existing database's name) with a fixed suffix.
  if (!exists) await sql.unsafe(`create database "${String(db).replaceAll('"', '""')}"`);
}

/** The seed step. */
export const replicateSeed: SeedStep = {
  name: "replicate demo table, publication and warehouse database",
  async run({ sql }) {
    await seedReplicateDemo(sql);
  },
};

/** The demo pipeline's environment under `deno task dev`, given the shared dev environment. */
export function replicateDemoEnv(shared: Record<string, string>): Record<string, string> {
  return {
    REPLICATE_PIPELINE: "demo",
    REPLICATE_PUBLICATION: DEMO_PUBLICATION,
    REPLICATE_SLOT: DEMO_PUBLICATION,
    REPLICATE_TARGET: "postgres",
    REPLICATE_TARGET_URL: warehouseUrl(shared.DATABASE_URL),
    REPLICATE_BUCKET: "wharf-warehouse",
  };
}
