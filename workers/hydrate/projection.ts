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
 * The incremental query for a table mapping: for each recorded change of `ids` on the mapping's table,
 * `[change id, op, old key, new key, ...new values]`, in change order.
 */
export function changesQuery(m: Mapping, ids: string[], hashColumns: string[] = []): Query {
  if ("query" in m.source) throw new Error("Cannot build a change query for a query mapping");
  const p = new Params();
  const table = `${quoteIdent(m.source.schema)}.${quoteIdent(m.source.table)}`;
  const oldKey = keyExpr(m, "o", p);
  const newKey = keyExpr(m, "n", p);
  const values = valueExprs(m, "n", hashColumns);
  const idsParam = p.add(ids, "bigint[]");
  const text = `
    select c.id::text, c.op, ${oldKey}, case when c.new_row is null then null else ${newKey} end,
           ${values.join(", ")}
      from control.hydrate_changes c
      cross join lateral jsonb_populate_record(null::${table}, c.old_row) as o
      cross join lateral jsonb_populate_record(null::${table}, c.new_row) as n
     where c.id = any(${idsParam})
     order by c.id`;
  return { text, params: p.values };
}
