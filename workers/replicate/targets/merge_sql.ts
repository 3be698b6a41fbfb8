/**
 * The SQL that merges a staged batch into a warehouse table, for Postgres and Redshift. One generator
 * for both, so the statements the Postgres target runs for real in the tests are the ones Redshift gets
 * (apart from the dialect switches below).
 *
 * Staging holds change rows: `_seq` (order in the batch), `_op` (`I` insert, `U` update, `D` delete) and
 * `_unchanged` (`,3,7,`: indexes of columns whose TOASTed value did not change and so was not in the WAL;
 * `-` when none). The merge:
 * 1. fills unchanged columns from the latest earlier row of the same key in the batch, where there is one;
 * 2. keeps the last row per key (`_seq` order) — the batch's net effect;
 * 3. deletes target rows whose key is deleted or fully rewritten, updates in place the rows that still
 *    have unchanged columns (keeping the target's value for those), and inserts the rewritten rows.
 * An update that changes the key arrives as a `D` of the old key and a `U` of the new one.
 *
 * Only identifiers (quoted) and column indexes go into this text: no value ever does.
 */
import { quoteIdent, type Sql } from "../../../shared/db.ts";
import type { TableInfo } from "../schema.ts";

/** The SQL dialect. */
export type Dialect = "postgres" | "redshift";

/** `"schema"."table"`. */
export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** The staging table's definition (columns typed like the target; change columns first). */
export function createStagingSql(dialect: Dialect, table: TableInfo, staging: string): string {
  const cols = table.columns.map((c) => `${quoteIdent(c.name)} ${redshiftType(dialect, c.type)}`);
  const head = `create temp table ${
    quoteIdent(staging)
  } (_seq bigint, _op char(1), _unchanged varchar(4096), ${cols.join(", ")})`;
  return dialect === "postgres" ? head + " on commit drop" : head;
}

/** Redshift has no `bytea`, `jsonb`, arrays…: such types land as wide varchar there. */
export function redshiftType(dialect: Dialect, type: string): string {
  if (dialect === "postgres") return type;
  if (/^(bytea|jsonb?|uuid|inet|cidr|xml|interval)$/.test(type) || type.endsWith("[]") || type === "text") {
    return "varchar(65535)";
  }
  return type;
}

function keyMatch(table: TableInfo, a: string, b: string): string {
  const op = table.keyIsAllColumns ? " is not distinct from " : " = ";
  return table.key.map((k) => `${a}.${quoteIdent(k)}${op}${b}.${quoteIdent(k)}`).join(" and ");
}

function hasIdx(dialect: Dialect, alias: string, idx: number): string {
  return dialect === "postgres"
    ? `strpos(${alias}._unchanged, ',${idx},') > 0`
    : `position(',${idx},' in ${alias}._unchanged) > 0`;
}

/**
 * Statements 1–3 above (run inside the load's transaction after the staging table is filled).
 * `unchangedIdx` lists the column indexes that appear in `_unchanged` in this batch (often none).
 */
export function mergeSql(
  dialect: Dialect,
  table: TableInfo,
  staging: string,
  unchangedIdx: number[],
  distinctKeys = false,
): string[] {
  const t = qualified(table.schema, table.name);
  const s = quoteIdent(staging);
  // With one row per key, staging already is the net effect (and no earlier row can fill a value in).
  const fin = distinctKeys ? s : quoteIdent(staging + "_fin");
  const out: string[] = [];
  for (const idx of distinctKeys ? [] : unchangedIdx) {
    const c = quoteIdent(table.columns[idx].name);
    const earlier = `from ${s} p where ${keyMatch(table, "p", "x")} and p._seq < x._seq and p._op <> 'D'
        and not ${hasIdx(dialect, "p", idx)}`;
    const removeIdx = dialect === "postgres"
      ? `replace(x._unchanged, ',${idx},', ',')`
      : `replace(x._unchanged, ',${idx},', ',')`;
    out.push(
      `update ${s} x set ${c} = (select p.${c} ${earlier} order by p._seq desc limit 1), ` +
        `_unchanged = case when ${removeIdx} = ',' then '-' else ${removeIdx} end ` +
        `where ${hasIdx(dialect, "x", idx)} and exists (select 1 ${earlier})`,
    );
  }
  const keys = table.key.map(quoteIdent).join(", ");
  if (distinctKeys) {
    // fin is the staging table itself.
  } else if (dialect === "postgres") {
    out.push(
      `create temp table ${fin} on commit drop as select distinct on (${keys}) * from ${s} order by ${keys}, _seq desc`,
    );
  } else {
    const cols = ["_seq", "_op", "_unchanged", ...table.columns.map((c) => quoteIdent(c.name))].join(", ");
    out.push(
      `create temp table ${fin} as select ${cols} from (select *, row_number() over (partition by ${keys} ` +
        `order by _seq desc) as _rn from ${s}) where _rn = 1`,
    );
  }
  out.push(
    `delete from ${t} using ${fin} f where ${
      keyMatch(table, t, "f")
    } and (f._op = 'D' or f._unchanged = '-')`,
  );
  if (unchangedIdx.length) {
    const sets = table.columns.map((col, i) => {
      const c = quoteIdent(col.name);
      return unchangedIdx.includes(i)
        ? `${c} = case when ${hasIdx(dialect, "f", i)} then ${t}.${c} else f.${c} end`
        : `${c} = f.${c}`;
    });
    out.push(
      `update ${t} set ${sets.join(", ")} from ${fin} f where ${
        keyMatch(table, t, "f")
      } and f._op <> 'D' and f._unchanged <> '-'`,
    );
  }
  const cols = table.columns.map((c) => quoteIdent(c.name)).join(", ");
  out.push(`insert into ${t} (${cols}) select ${cols} from ${fin} where _op <> 'D' and _unchanged = '-'`);
  if (dialect === "redshift") out.push(...(distinctKeys ? [] : [`drop table ${fin}`]), `drop table ${s}`);
  return out;
}

/** The table's definition in the target, with its merge key as primary key when it has one. */
export function createTableSql(dialect: Dialect, table: TableInfo): string {
  const cols = table.columns.map((c) => `${quoteIdent(c.name)} ${redshiftType(dialect, c.type)}`);
  const pk = table.keyIsAllColumns ? "" : `, primary key (${table.key.map(quoteIdent).join(", ")})`;
  return `create table if not exists ${qualified(table.schema, table.name)} (${cols.join(", ")}${pk})`;
}

/**
 * Creates the warehouse table when missing and adds the columns the source gained since (a column added
 * while running). Only missing columns are altered: Redshift has no `add column if not exists`.
 */
export async function ensureWarehouseTable(sql: Sql, dialect: Dialect, table: TableInfo): Promise<void> {
  await sql.unsafe(`create schema if not exists ${quoteIdent(table.schema)}`);
  await sql.unsafe(createTableSql(dialect, table));
  const have = new Set(
    (await sql<{ name: string }[]>`
      select column_name as name from information_schema.columns
       where table_schema = ${table.schema} and table_name = ${table.name}`).map((r) => r.name),
  );
  for (const c of table.columns) {
    if (have.has(c.name)) continue;
    const ifMissing = dialect === "postgres" ? "if not exists " : "";
    await sql.unsafe(
      `alter table ${qualified(table.schema, table.name)} add column ${ifMissing}${quoteIdent(c.name)} ${
        redshiftType(dialect, c.type)
      }`,
    );
  }
}
