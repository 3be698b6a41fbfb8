/**
 * The SQL that merges a staged batch into a warehouse table, for Postgres and Redshift. One generator
 * for both, so the statements the Postgres target runs for real in the tests are the ones Redshift gets
 * (apart from the dialect switches below).
 *
 * Staging holds change rows: `_seq` (order in the batch), `_op` (`I` insert, `U` update, `D` delete) and
 * `_unchanged` (`,3,7,`: numbers ({@linkcode columnNum}) of columns whose TOASTed value did not change and
 * so was not in the WAL; `-` when none). The merge:
 * 1. fills unchanged columns from the latest earlier row of the same key in the batch, where there is one;
 * 2. keeps the last row per key (`_seq` order) — the batch's net effect;
 * 3. deletes target rows whose key is deleted or fully rewritten, updates in place the rows that still
 *    have unchanged columns (keeping the target's value for those), and inserts the rewritten rows.
 * An update that changes the key arrives as a `D` of the old key and a `U` of the new one.
 *
 * Only identifiers (quoted) and column indexes go into this text: no value ever does.
 */
import { createHash } from "node:crypto";
import { quoteIdent, type Sql } from "../../../shared/db.ts";
import { type Column, columnNum, type TableInfo } from "../schema.ts";
import { STATE_SCHEMA } from "./target.ts";

/** The SQL dialect. */
export type Dialect = "postgres" | "redshift";

/** `"schema"."table"`. */
export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/**
 * The names a file's columns load into: each column goes to the column of `table` (the table as it is now)
 * with the same number, so a file written before a rename loads into the renamed column; a column the
 * table no longer has (dropped on the source) keeps its own name, which the warehouse still has.
 */
export function loadNames(table: TableInfo, columns: readonly Column[]): string[] {
  return columns.map((c) => {
    if (c.num === undefined) return c.name;
    return table.columns.find((t) => t.num === c.num)?.name ?? c.name;
  });
}

/** Columns of `segments` that `table` no longer has (dropped on the source since they were written). */
export function droppedColumns(
  table: TableInfo,
  segments: readonly { columns: readonly Column[] }[],
): Column[] {
  const out: Column[] = [];
  const have = new Set(table.columns.map((c) => c.name));
  for (const s of segments) {
    for (const [i, c] of s.columns.entries()) {
      const name = loadNames(table, [c])[0];
      if (!have.has(name)) {
        have.add(name);
        out.push({ ...c, name, num: columnNum(s.columns, i) });
      }
    }
  }
  return out;
}

/** A statement with its parameters. */
export interface Parameterised {
  sql: string;
  params: string[];
}

/**
 * Sets column `c` to the value rows that predate it read there ({@linkcode Column.missing}) in every row of
 * `into` (quoted) where it is NULL.
 */
export function fillMissingSql(dialect: Dialect, into: string, c: Column): Parameterised {
  const col = quoteIdent(c.name);
  // The parameter is typed as text, read by the column type's input: typed as the column, the client would
  // encode the string for that type (postgres.js writes a boolean's "t" as false).
  const text = dialect === "postgres" ? "text" : "varchar(65535)";
  return {
    sql: `update ${into} set ${col} = $1::${text}::${redshiftType(dialect, c.type)} where ${col} is null`,
    params: [c.missing!],
  };
}

/**
 * Columns of `table` with a value for older rows ({@linkcode Column.missing}) that `columns` (a file's, by
 * the names they load into) lack: the file's rows were written before the column was added, and read that
 * value on the source.
 */
export function missingIn(table: TableInfo, columns: readonly Column[]): Column[] {
  const names = new Set(loadNames(table, columns));
  return table.columns.filter((c) => c.missing !== undefined && !names.has(c.name));
}

/**
 * The staging table's definition (columns typed like the target; change columns first). `extra`: columns
 * the files hold besides the table's own (see {@linkcode droppedColumns}), staged and left out of the merge.
 * With `keep` (Postgres), the table stays in the session for the next batches of the same shape
 * ({@linkcode stagingName}) and is emptied at each commit instead of dropped: creating and dropping a
 * temporary table costs the target a few milliseconds and about 24 KiB of catalog WAL per batch.
 */
export function createStagingSql(
  dialect: Dialect,
  table: TableInfo,
  staging: string,
  extra: Column[] = [],
  keep = false,
): string {
  const cols = [...table.columns, ...extra].map((c) =>
    `${quoteIdent(c.name)} ${redshiftType(dialect, c.type)}`
  );
  keep &&= dialect === "postgres";
  const head = `create temp table ${keep ? "if not exists " : ""}${
    quoteIdent(staging)
  } (_seq bigint, _op char(1), _unchanged varchar(4096), ${cols.join(", ")})`;
  if (dialect !== "postgres") return head;
  return head + (keep ? " on commit delete rows" : " on commit drop");
}

/**
 * The name of a kept staging table ({@linkcode createStagingSql}) for `table` with `extra` columns: the
 * same for the same table and columns (names and types), another when any of them changes.
 */
export function stagingName(table: TableInfo, extra: Column[] = []): string {
  const shape = JSON.stringify([
    table.schema,
    table.name,
    [...table.columns, ...extra].map((c) => [c.name, c.type]),
  ]);
  return `wharf_stage_${createHash("sha256").update(shape).digest("hex").slice(0, 16)}`;
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

function hasNum(dialect: Dialect, alias: string, num: number): string {
  return dialect === "postgres"
    ? `strpos(${alias}._unchanged, ',${num},') > 0`
    : `position(',${num},' in ${alias}._unchanged) > 0`;
}

/**
 * Statements 1–3 above (run inside the load's transaction after the staging table is filled).
 * `unchangedNums` lists the column numbers that appear in `_unchanged` in this batch (often none); those of
 * columns `table` no longer has are ignored. `dropped`: the warehouse's columns that the source dropped,
 * set to NULL in rows updated in place, as they are in rewritten ones. `keep` (Postgres): the staging
 * table is a kept one, and so is the table of its last rows per key (`<staging>_fin`).
 */
export function mergeSql(
  dialect: Dialect,
  table: TableInfo,
  staging: string,
  unchangedNums: number[],
  distinctKeys = false,
  dropped: readonly string[] = [],
  keep = false,
): string[] {
  const nums = table.columns.map((_, i) => columnNum(table.columns, i));
  const unchangedIdx = unchangedNums.map((n) => nums.indexOf(n)).filter((i) => i >= 0);
  const t = qualified(table.schema, table.name);
  const s = quoteIdent(staging);
  // With one row per key, staging already is the net effect (and no earlier row can fill a value in).
  const fin = distinctKeys ? s : quoteIdent(staging + "_fin");
  const out: string[] = [];
  for (const idx of distinctKeys ? [] : unchangedIdx) {
    const c = quoteIdent(table.columns[idx].name);
    const num = nums[idx];
    const earlier = `from ${s} p where ${keyMatch(table, "p", "x")} and p._seq < x._seq and p._op <> 'D'
        and not ${hasNum(dialect, "p", num)}`;
    const removeNum = `replace(x._unchanged, ',${num},', ',')`;
    out.push(
      `update ${s} x set ${c} = (select p.${c} ${earlier} order by p._seq desc limit 1), ` +
        `_unchanged = case when ${removeNum} = ',' then '-' else ${removeNum} end ` +
        `where ${hasNum(dialect, "x", num)} and exists (select 1 ${earlier})`,
    );
  }
  const keys = table.key.map(quoteIdent).join(", ");
  if (distinctKeys) {
    // fin is the staging table itself.
  } else if (dialect === "postgres" && keep) {
    out.push(
      `create temp table if not exists ${fin} (like ${s}) on commit delete rows`,
      `insert into ${fin} select distinct on (${keys}) * from ${s} order by ${keys}, _seq desc`,
    );
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
        ? `${c} = case when ${hasNum(dialect, "f", nums[i])} then ${t}.${c} else f.${c} end`
        : `${c} = f.${c}`;
    }).concat(dropped.map((d) => `${quoteIdent(d)} = null`));
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

/** The state table of the columns each warehouse table was given, by source column number. */
export const COLUMNS_TABLE = "columns";

/** Creates {@linkcode COLUMNS_TABLE} in the state schema when missing. */
export function createColumnStateSql(dialect: Dialect): string {
  const text = dialect === "postgres" ? "text" : "varchar(1024)";
  return `create table if not exists ${
    qualified(STATE_SCHEMA, COLUMNS_TABLE)
  } (table_name ${text} not null, ` +
    `num int not null, name ${text} not null, type ${text} not null, primary key (table_name, num))`;
}

/** What the warehouse recorded of a column it was given: the source column's number, name and type. */
export interface RecordedColumn {
  num: number;
  name: string;
  type: string;
}

/** `varchar(n)` / `character varying(n)` → n (Redshift's default 256 without one); else undefined. */
function varcharLength(type: string): number | undefined {
  const m = /^(?:character varying|varchar)(?:\((\d+)\))?$/.exec(type);
  return m ? Number(m[1] ?? 256) : undefined;
}

/** The statements that change column `c` of `t` (quoted) from `from` to `c.type`. */
function alterTypeSql(dialect: Dialect, t: string, c: Column, from: string): string[] {
  const col = quoteIdent(c.name);
  if (dialect === "postgres") {
    return [`alter table ${t} alter column ${col} type ${c.type} using ${col}::${c.type}`];
  }
  const to = redshiftType(dialect, c.type);
  const [oldLen, newLen] = [varcharLength(redshiftType(dialect, from)), varcharLength(to)];
  if (oldLen !== undefined && newLen !== undefined) {
    // Redshift changes a varchar's length in place, but only upwards; a shorter one keeps the wider column.
    return newLen > oldLen ? [`alter table ${t} alter column ${col} type varchar(${newLen})`] : [];
  }
  if (to === redshiftType(dialect, from)) return [];
  // Any other change: a new column filled from the old one takes its place.
  const tmp = quoteIdent(`${c.name}__wharf_new`);
  return [
    `alter table ${t} add column ${tmp} ${to}`,
    `update ${t} set ${tmp} = ${col}::${to}`,
    `alter table ${t} drop column ${col}`,
    `alter table ${t} rename column ${tmp} to ${col}`,
  ];
}

/**
 * The statements that bring a warehouse table's columns (`existing`, by name) in line with `table`, given
 * what was `recorded` of them:
 * - a column renamed on the source (same number, new name) is renamed, so its values stay in one column;
 * - a column the table lacks is added (without a default; {@linkcode ensureWarehouseTable} then gives the
 *   rows already there the value that rows older than the column read on the source, if any);
 * - a column whose source type changed since it was recorded gets the new type (Postgres: `ALTER COLUMN
 *   … TYPE … USING`; Redshift: a longer varchar in place, any other change through a new column filled
 *   from the old one);
 * - a column dropped on the source stays, with the values it had (rows written later hold NULL there);
 * - a primary key (`primaryKey`, as the table has it now) follows the merge key.
 * A table recorded for the first time is taken as it is, but for its primary key.
 */
export function columnChangesSql(
  dialect: Dialect,
  table: TableInfo,
  existing: ReadonlySet<string>,
  recorded: readonly RecordedColumn[],
  primaryKey?: { name: string; columns: string[] },
): string[] {
  const t = qualified(table.schema, table.name);
  const have = new Set(existing);
  const names = new Set(table.columns.map((c) => c.name));
  const out: string[] = [];
  const renamed = new Map<string, string>();
  for (const c of table.columns) {
    const prev = c.num === undefined ? undefined : recorded.find((r) => r.num === c.num);
    let last = prev?.name === c.name ? prev : undefined;
    if (prev && !last && have.has(prev.name) && !have.has(c.name) && !names.has(prev.name)) {
      out.push(`alter table ${t} rename column ${quoteIdent(prev.name)} to ${quoteIdent(c.name)}`);
      renamed.set(prev.name, c.name);
      have.delete(prev.name);
      have.add(c.name);
      last = prev;
    }
    if (!have.has(c.name)) {
      out.push(`alter table ${t} add column ${quoteIdent(c.name)} ${redshiftType(dialect, c.type)}`);
      have.add(c.name);
      continue;
    }
    // A column dropped and added again under its old name has a new number: its name tells its last type.
    last ??= recorded.find((r) => r.name === c.name);
    if (last && last.type !== c.type) out.push(...alterTypeSql(dialect, t, c, last.type));
  }
  // The merge key changed on the source (another primary key or identity index, or none any more): the
  // warehouse's primary key follows, or rows of one new key would collide on the old one. A table without
  // a primary key (made so by hand) is left so.
  const want = table.keyIsAllColumns ? [] : table.key;
  const now = (primaryKey?.columns ?? []).map((c) => renamed.get(c) ?? c);
  if (primaryKey && want.join("\u0000") !== now.join("\u0000")) {
    out.push(`alter table ${t} drop constraint ${quoteIdent(primaryKey.name)}`);
    if (want.length) out.push(`alter table ${t} add primary key (${want.map(quoteIdent).join(", ")})`);
  }
  return out;
}

/**
 * Creates the warehouse table when missing and brings its columns in line with the source's (see
 * {@linkcode columnChangesSql}), then records them. Returns the columns it keeps that the source dropped. On Postgres in one transaction; Redshift runs some of
 * these `ALTER TABLE`s only outside a transaction block, so there each statement stands alone (a repeat
 * after a failure in between is harmless: the checks start from what the table has).
 */
export async function ensureWarehouseTable(sql: Sql, dialect: Dialect, table: TableInfo): Promise<string[]> {
  await sql.unsafe(`create schema if not exists ${quoteIdent(table.schema)}`);
  await sql.unsafe(createTableSql(dialect, table));
  const id = `${table.schema}.${table.name}`;
  const columnsNow = async (q: Sql) =>
    new Set(
      (await q<{ name: string }[]>`
        select column_name as name from information_schema.columns
         where table_schema = ${table.schema} and table_name = ${table.name}`).map((r) => r.name),
    );
  const apply = async (q: Sql) => {
    const have = await columnsNow(q);
    const recorded = await q<RecordedColumn[]>`
      select num, name, type from ${q(STATE_SCHEMA)}.${q(COLUMNS_TABLE)} where table_name = ${id}`;
    // On Redshift (not run here) a failure of this catalog query only skips the primary key's follow-up;
    // on Postgres it would abort the transaction, and cannot fail.
    const pk = await q<{ name: string; col: string }[]>`
      select tc.constraint_name as name, k.column_name as col
        from information_schema.table_constraints tc
        join information_schema.key_column_usage k
          on k.constraint_schema = tc.constraint_schema and k.constraint_name = tc.constraint_name
         and k.table_schema = tc.table_schema and k.table_name = tc.table_name
       where tc.table_schema = ${table.schema} and tc.table_name = ${table.name}
         and tc.constraint_type = 'PRIMARY KEY'
       order by k.ordinal_position`.catch((e) => {
      if (dialect === "postgres") throw e;
      return [];
    });
    const primaryKey = pk.length ? { name: pk[0].name, columns: pk.map((r) => r.col) } : undefined;
    for (const stmt of columnChangesSql(dialect, table, have, recorded, primaryKey)) await q.unsafe(stmt);
    // A column added with a constant default: the rows already here predate it, and read that value. (A
    // column renamed just now is not new: its NULLs are values.)
    const renamed = (c: Column) =>
      recorded.some((r) => r.num === c.num && r.name !== c.name && have.has(r.name));
    for (const c of table.columns) {
      if (have.has(c.name) || c.missing === undefined || renamed(c)) continue;
      const fill = fillMissingSql(dialect, qualified(table.schema, table.name), c);
      await q.unsafe(fill.sql, fill.params);
    }
    for (const [i, c] of table.columns.entries()) {
      const num = columnNum(table.columns, i);
      if (
        c.num === undefined || recorded.some((r) => r.num === num && r.name === c.name && r.type === c.type)
      ) {
        continue;
      }
      await q`delete from ${q(STATE_SCHEMA)}.${q(COLUMNS_TABLE)} where table_name = ${id} and num = ${num}`;
      await q`insert into ${q(STATE_SCHEMA)}.${q(COLUMNS_TABLE)} (table_name, num, name, type)
              values (${id}, ${num}, ${c.name}, ${c.type})`;
    }
    // Columns the source once had and no longer has; any other column (added to the warehouse table by
    // hand, say a load time with a default) is not wharf's to touch.
    const names = new Set(table.columns.map((c) => c.name));
    const ever = new Set(recorded.map((r) => r.name));
    return [...await columnsNow(q)].filter((n) => !names.has(n) && ever.has(n));
  };
  return dialect === "postgres" ? await sql.begin((tx) => apply(tx as unknown as Sql)) : await apply(sql);
}
