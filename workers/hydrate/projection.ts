/**
 * The SQL that turns a mapping's rows into Redis keys and values.
 *
 * Both paths use the same projection: the full sync applies it to the table (or query) itself, and the
 * incremental path applies it to the row images the capture trigger recorded, turned back into rows of
 * the table's type with `jsonb_populate_record`. So a key or a value is rendered by Postgres the same
 * way whichever path wrote it (`::text` casts, `to_jsonb` for JSON), and a full sync never flips a value
 * only because it was formatted differently.
 *
 * Identifiers are quoted with `quoteIdent`; literal template text and the key prefix are parameters.
 */
import { quoteIdent } from "../../shared/db.ts";
import { type Mapping, parseTemplate } from "./mapping.ts";

/** A SQL text and its parameters. */
export interface Query {
  text: string;
  params: unknown[];
}

class Params {
  readonly values: unknown[] = [];
  add(v: unknown, cast = "text"): string {
    this.values.push(v);
    return `$${this.values.length}::${cast}`;
  }
}

/** The key expression over row alias `alias`: null when a template column is null. */
function keyExpr(m: Mapping, alias: string, p: Params): string {
  const parts = parseTemplate(m.keyTemplate);
  const pieces: string[] = [];
  let lead = m.keyPrefix;
  for (const part of parts) {
    if ("text" in part) lead += part.text;
    else {
      if (lead) pieces.push(p.add(lead));
      lead = "";
      pieces.push(`(${alias}.${quoteIdent(part.column)})::text`);
    }
  }
  if (lead) pieces.push(p.add(lead));
  return "(" + pieces.join(" || ") + ")";
}

/** The value expressions over `alias`, in the order {@linkcode valueFields} names them. */
function valueExprs(m: Mapping, alias: string, hashColumns: string[]): string[] {
  switch (m.value.shape) {
    case "string":
      return [`(${alias}.${quoteIdent(m.value.column)})::text`];
    case "json":
      return [`to_jsonb(${alias})::text`];
    case "hash":
      return hashColumns.map((c) => `(${alias}.${quoteIdent(c)})::text`);
  }
}

function sourceText(m: Mapping): string {
  return "query" in m.source
    ? `(${m.source.query}\n)`
    : `${quoteIdent(m.source.schema)}.${quoteIdent(m.source.table)}`;
}

/**
 * The full-sync query: one row per source row, `[key, ...values]`. `hashColumns` are the hash fields
 * (the mapping's list, or every column of the source).
 */
export function fullSyncQuery(m: Mapping, hashColumns: string[] = []): Query {
  return fullSyncGroupQuery([m], [hashColumns]);
}

/**
 * One scan for several mappings of the same source: each row is `[key1, ...values1, key2, ...]`.
 */
export function fullSyncGroupQuery(ms: Mapping[], hashColumns: string[][]): Query {
  const p = new Params();
  const cols = ms.flatMap((m, i) => [keyExpr(m, "t", p), ...valueExprs(m, "t", hashColumns[i] ?? [])]);
  return { text: `select ${cols.join(", ")} from ${sourceText(ms[0])} as t`, params: p.values };
}

/**
 * The incremental read, in one statement: deletes the changes of `done` (already applied), then returns
 * the next `limit` recorded changes in change order, each with every mapping's projection of it side by
 * side: `[change id, schema, table, op, lag ms, old key 1, new key 1, ...new values 1, old key 2, ...]`.
 * A mapping's columns are null for a change of another table (its row images are not even read then).
 * `ms` are table mappings; `hashColumns[i]` are mapping i's hash fields.
 */
export function nextChangesQuery(
  ms: Mapping[],
  hashColumns: string[][],
  done: string[],
  limit: number,
): Query {
  const p = new Params();
  const doneParam = p.add(done, "bigint[]");
  const limitParam = p.add(limit, "int");
  const laterals = ms.map((m, i) => {
    if ("query" in m.source) throw new Error("Cannot build a change query for a query mapping");
    const table = `${quoteIdent(m.source.schema)}.${quoteIdent(m.source.table)}`;
    const match = `c.table_schema = ${p.add(m.source.schema)} and c.table_name = ${p.add(m.source.table)}`;
    const cols = [
      keyExpr(m, "o", p),
      `case when c.new_row is null then null else ${keyExpr(m, "n", p)} end`,
      ...valueExprs(m, "n", hashColumns[i] ?? []),
    ];
    return {
      select: cols.map((_, j) => `m${i}.c${j}`).join(", "),
      join: `left join lateral (
        select ${cols.map((e, j) => `${e} as c${j}`).join(", ")}
          from jsonb_populate_record(null::${table}, case when ${match} then c.old_row end) as o,
               jsonb_populate_record(null::${table}, case when ${match} then c.new_row end) as n
         where ${match} and c.op <> 'truncate') as m${i} on true`,
    };
  });
  const text = `
    with done as (delete from control.hydrate_changes where id = any(${doneParam})),
    c as (select * from control.hydrate_changes where id <> all(${doneParam}) order by id limit ${limitParam})
    select c.id::text, c.table_schema, c.table_name, c.op,
           (extract(epoch from clock_timestamp() - c.created_at) * 1000)::text
           ${laterals.map((l) => ", " + l.select).join("")}
      from c
      ${laterals.map((l) => l.join).join("\n")}
     order by c.id`;
  return { text, params: p.values };
}
