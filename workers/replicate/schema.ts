/**
 * What the pipeline knows about a source table: its columns (names, Postgres types) and the key used to
 * merge changes. Read from the source catalog, because the replication stream carries type oids only.
 */
import type { Sql } from "../../shared/db.ts";
import { abortableSleep } from "../../shared/worker.ts";

/** One column of a replicated table. */
export interface Column {
  name: string;
  /** `format_type()` of the column; types outside `pg_catalog` (enums, domains…) travel as `text`. */
  type: string;
  /**
   * The column's number on the source (`attnum`): what stays when the column is renamed or its type
   * changes. Absent in hand-built descriptions (see {@linkcode columnNum}).
   */
  num?: number;
  /**
   * The value rows that predate the column read in it (text form), when it was added with a constant
   * default: Postgres keeps it in the catalog (`attmissingval`) instead of writing it into those rows, so the
   * stream never carries it.
   */
  missing?: string;
  /** The source column's type oid (`atttypid`), when read from the catalog. */
  oid?: number;
}

/**
 * The number that identifies column `i` of `columns` in `_unchanged` marks and across renames: its source
 * `attnum`, else its position counted from 1 (which is the `attnum` of a table that never dropped a column).
 */
export function columnNum(columns: readonly Column[], i: number): number {
  return columns[i].num ?? i + 1;
}

/** A replicated table, as the targets create and merge it. */
export interface TableInfo {
  schema: string;
  name: string;
  columns: Column[];
  /** Merge key: the primary key, else the replica identity index, else every column. */
  key: string[];
  /** True when the key is every column (no primary key nor identity index): matched null-safely. */
  keyIsAllColumns: boolean;
}

/** `schema.table` as used in control rows and the target's state table. */
export function tableId(t: { schema: string; name: string }): string {
  return `${t.schema}.${t.name}`;
}

/**
 * Waits until transaction `xid` (its 32 bits, as the stream gives it) is visible to new snapshots on `sql`;
 * false after `timeoutMs`. The stream can deliver a transaction as soon as its commit record is on disk, a
 * moment before the committing backend makes it visible to others: a catalog read in that moment still
 * sees the table as it was before the transaction's `ALTER TABLE`.
 */
export async function waitVisible(sql: Sql, xid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    // The full id: the snapshot's epoch, one less when the xid is above the low half of its xmax.
    const [r] = await sql<{ visible: boolean }[]>`
      with s as (select pg_current_snapshot() as snap),
           x as (select snap, pg_snapshot_xmax(snap)::text::numeric as xmax from s)
      select pg_visible_in_snapshot((greatest(0, (floor(xmax / 4294967296)
               - case when ${xid}::numeric > mod(xmax, 4294967296) then 1 else 0 end)) * 4294967296
               + ${xid}::numeric)::text::xid8, snap) as visible
        from x`;
    if (r.visible) return true;
    if (performance.now() >= deadline) return false;
    await abortableSleep(2);
  }
}

/** Reads a table's columns and merge key from the source catalog. */
export async function describeTable(sql: Sql, schema: string, name: string): Promise<TableInfo> {
  const rows = await sql<
    {
      name: string;
      type: string;
      num: number;
      oid: number;
      missing: string | null;
      builtin: boolean;
      pk: boolean;
      ri: boolean;
    }[]
  >`
    select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnum::int as num,
           a.atttypid::int as oid,
           case when a.atthasmissing then (a.attmissingval::text::text[])[1] end as missing,
           t.typnamespace = 'pg_catalog'::regnamespace as builtin,
           coalesce(a.attnum = any(pk.indkey), false) as pk,
           coalesce(a.attnum = any(ri.indkey), false) as ri
      from pg_attribute a
      join pg_class c on c.oid = a.attrelid
      join pg_namespace n on n.oid = c.relnamespace
      join pg_type t on t.oid = a.atttypid
      left join pg_index pk on pk.indrelid = c.oid and pk.indisprimary
      left join pg_index ri on ri.indrelid = c.oid and ri.indisreplident
     where n.nspname = ${schema} and c.relname = ${name} and a.attnum > 0 and not a.attisdropped
       and a.attgenerated = ''
     order by a.attnum`;
  if (!rows.length) throw new Error(`Cannot describe table ${schema}.${name}: it does not exist`);
  const columns = rows.map((r): Column => ({
    name: r.name,
    type: r.builtin ? r.type : "text",
    num: r.num,
    oid: r.oid,
    ...(r.missing === null ? {} : { missing: r.missing }),
  }));
  let key = rows.filter((r) => r.pk).map((r) => r.name);
  if (!key.length) key = rows.filter((r) => r.ri).map((r) => r.name);
  const keyIsAllColumns = key.length === 0;
  if (keyIsAllColumns) key = columns.map((c) => c.name);
  return { schema, name, columns, key, keyIsAllColumns };
}

/** The tables of a publication, in a stable order. */
export async function publishedTables(
  sql: Sql,
  publication: string,
): Promise<{ schema: string; name: string }[]> {
  const rows = await sql<{ schema: string; name: string }[]>`
    select schemaname as schema, tablename as name from pg_publication_tables
     where pubname = ${publication} order by 1, 2`;
  return rows.map((r) => ({ schema: r.schema, name: r.name }));
}

/**
 * The built-in types whose values a `binary` session can carry into `COPY … (FORMAT binary)` files: types
 * of `pg_catalog` with binary send and receive functions (and so their element type, for arrays), but
 * for the `reg*` types (their binary form is an oid of the source database, their text a name) and the
 * planner's internal types (whose receive functions refuse every value). A user-defined type's binary
 * form may hold oids the target does not share.
 */
export async function binaryTypeOids(sql: Sql): Promise<Set<number>> {
  const rows = await sql<{ oid: number }[]>`
    with usable as (
      select oid from pg_type
       where typnamespace = 'pg_catalog'::regnamespace and oid < 16384 and typsend <> 0 and typreceive <> 0
         and typname !~ '^reg' and typname not in ('pg_node_tree', 'pg_ndistinct', 'pg_dependencies',
                                                  'pg_mcv_list', 'pg_brin_bloom_summary',
                                                  'pg_brin_minmax_multi_summary'))
    select t.oid::int as oid from pg_type t
     where t.oid in (select oid from usable) and (t.typelem = 0 or t.typelem in (select oid from usable))`;
  return new Set(rows.map((r) => r.oid));
}
