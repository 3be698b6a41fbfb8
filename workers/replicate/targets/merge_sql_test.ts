import assert from "node:assert/strict";
import type { TableInfo } from "../schema.ts";
import {
  columnChangesSql,
  createStagingSql,
  droppedColumns,
  fillMissingSql,
  loadNames,
  mergeSql,
  missingIn,
  type RecordedColumn,
  stagingName,
} from "./merge_sql.ts";
import { redshiftLoadSql } from "./redshift.ts";

/** The statements' text (parameterised ones by their SQL). */
const loadSql = (...a: Parameters<typeof redshiftLoadSql>): string[] =>
  redshiftLoadSql(...a).map((s) => typeof s === "string" ? s : s.sql);

/** `t` after: `a` renamed to `a2`, `b` dropped, `c` from integer to bigint, `d` added (numbers 1–5). */
const now: TableInfo = {
  schema: "public",
  name: "t",
  columns: [
    { name: "id", type: "integer", num: 1 },
    { name: "a2", type: "text", num: 2 },
    { name: "c", type: "bigint", num: 4 },
    { name: "d", type: "character varying(20)", num: 5 },
  ],
  key: ["id"],
  keyIsAllColumns: false,
};
const recorded: RecordedColumn[] = [
  { num: 1, name: "id", type: "integer" },
  { num: 2, name: "a", type: "text" },
  { num: 3, name: "b", type: "text" },
  { num: 4, name: "c", type: "integer" },
];
const pk = { name: "t_pkey", columns: ["id"] };
const before = [
  { name: "id", type: "integer", num: 1 },
  { name: "a", type: "text", num: 2 },
  { name: "b", type: "text", num: 3 },
  { name: "c", type: "integer", num: 4 },
];

/** A Redshift load of `table` from two files: one written `before` the changes, one as `table` is now. */
const twoFiles = (table: TableInfo): Parameters<typeof redshiftLoadSql> => [
  {
    pipeline: "p",
    bucket: "b",
    table,
    kind: "changes",
    truncate: false,
    segments: [
      { key: "k1", columns: before, rows: 1, bytes: 1 },
      { key: "k2", columns: table.columns, rows: 1, bytes: 1 },
    ],
    lsn: 1n,
  },
  ["m1", "m2"],
  { iamRole: "arn:r" },
];

Deno.test("columnChangesSql() renames, retypes and adds columns, and keeps dropped ones (Postgres)", () => {
  assert.deepEqual(columnChangesSql("postgres", now, new Set(["id", "a", "b", "c"]), recorded, pk), [
    `alter table "public"."t" rename column "a" to "a2"`,
    `alter table "public"."t" alter column "c" type bigint using "c"::bigint`,
    `alter table "public"."t" add column "d" character varying(20)`,
  ]);
  // In line already: nothing to do; a table seen for the first time is taken as it is.
  const done = now.columns.map((c) => ({ num: c.num!, name: c.name, type: c.type }));
  assert.deepEqual(columnChangesSql("postgres", now, new Set(["id", "a2", "b", "c", "d"]), done, pk), []);
  assert.deepEqual(columnChangesSql("postgres", now, new Set(["id", "a2", "c", "d"]), [], pk), []);
  // A rename is not done over a column of the new name, nor of a name the table still uses.
  assert.deepEqual(columnChangesSql("postgres", now, new Set(["id", "a", "a2", "c", "d"]), recorded, pk), [
    `alter table "public"."t" alter column "c" type bigint using "c"::bigint`,
  ]);
});

Deno.test("columnChangesSql() re-types a column dropped and added again under its old name", () => {
  const readded: TableInfo = { ...now, columns: [now.columns[0], { name: "b", type: "jsonb", num: 9 }] };
  assert.deepEqual(columnChangesSql("postgres", readded, new Set(["id", "b"]), recorded), [
    `alter table "public"."t" alter column "b" type jsonb using "b"::jsonb`,
  ]);
});

Deno.test("columnChangesSql() for Redshift: varchar grows in place, other types move to a new column", () => {
  const t: TableInfo = {
    ...now,
    columns: [
      { name: "id", type: "bigint", num: 1 },
      { name: "s", type: "character varying(50)", num: 2 },
      { name: "n", type: "character varying(5)", num: 3 },
      { name: "x", type: "text", num: 4 },
    ],
  };
  const rec: RecordedColumn[] = [
    { num: 1, name: "id", type: "integer" },
    { num: 2, name: "s", type: "character varying(10)" },
    { num: 3, name: "n", type: "character varying(10)" },
    { num: 4, name: "x", type: "character varying(10)" },
  ];
  assert.deepEqual(columnChangesSql("redshift", t, new Set(["id", "s", "n", "x"]), rec), [
    `alter table "public"."t" add column "id__wharf_new" bigint`,
    `update "public"."t" set "id__wharf_new" = "id"::bigint`,
    `alter table "public"."t" drop column "id"`,
    `alter table "public"."t" rename column "id__wharf_new" to "id"`,
    `alter table "public"."t" alter column "s" type varchar(50)`,
    // n: shorter, so the wider column stays; x: text is varchar(65535) there.
    `alter table "public"."t" alter column "x" type varchar(65535)`,
  ]);
});

Deno.test("files written before column changes load by column number, dropped columns staged aside", () => {
  assert.deepEqual(loadNames(now, before), ["id", "a2", "b", "c"]);
  assert.deepEqual(loadNames(now, [{ name: "legacy", type: "text" }]), ["legacy"]);
  assert.deepEqual(droppedColumns(now, [{ columns: before }, { columns: now.columns }]), [
    { name: "b", type: "text", num: 3 },
  ]);
  // Unchanged marks are column numbers: big (number 5) is the fourth column now; number 3 is gone.
  const big: TableInfo = {
    ...now,
    columns: [...now.columns.slice(0, 3), { name: "big", type: "text", num: 5 }],
  };
  const sql = mergeSql("postgres", big, "stage", [3, 5]).join("\n");
  assert.match(sql, /update "stage" x set "big" = .*strpos\(x._unchanged, ',5,'\)/s);
  assert.doesNotMatch(sql, /',3,'/);
  assert.match(
    sql,
    /"big" = case when strpos\(f._unchanged, ',5,'\) > 0 then "public"."t"."big" else f."big" end/,
  );
  // Columns the source dropped are set to NULL in rows updated in place, as in rewritten ones.
  assert.match(mergeSql("postgres", big, "stage", [5], false, ["b"]).join("\n"), /, "b" = null from /);

  // Redshift: the same mapping, and the dropped column in staging only.
  const rs = loadSql(...twoFiles(now));
  assert.match(rs[0], /\(_seq bigint, .*"d" character varying\(20\), "b" varchar\(65535\)\)$/);
  assert.match(
    rs[1],
    /^copy "wharf_stage_public_t" \(_seq, _op, _unchanged, "id", "a2", "b", "c"\) from 's3:\/\/b\/m1'/,
  );
  assert.match(rs[2], /\(_seq, _op, _unchanged, "id", "a2", "c", "d"\) from 's3:\/\/b\/m2'/);
  const insert = rs.find((s) => s.startsWith(`insert into "public"."t"`))!;
  assert.doesNotMatch(insert, /"b"/);
});

Deno.test("files written before a column was added with a default get its value for their rows", () => {
  const flag = { name: "flag", type: "boolean", num: 6, missing: "t" };
  const table: TableInfo = { ...now, columns: [...now.columns, flag] };
  assert.deepEqual(missingIn(table, before), [flag]);
  assert.deepEqual(missingIn(table, table.columns), []);
  // Parameterised: the value is never part of the SQL text.
  assert.deepEqual(fillMissingSql("postgres", `"stage"`, flag), {
    sql: `update "stage" set "flag" = $1::text::boolean where "flag" is null`,
    params: ["t"],
  });
  const rs = redshiftLoadSql(...twoFiles(table));
  // Right after the first file's COPY, before the second's.
  assert.deepEqual(rs[2], {
    sql: `update "wharf_stage_public_t" set "flag" = $1::varchar(65535)::boolean where "flag" is null`,
    params: ["t"],
  });
  assert.match(String(rs[3]), /^copy "wharf_stage_public_t" .* from 's3:\/\/b\/m2'/);
});

Deno.test("columnChangesSql() moves the primary key to a new merge key, after a rename of its column", () => {
  const t: TableInfo = { ...now, key: ["id", "c"] };
  assert.deepEqual(columnChangesSql("postgres", t, new Set(["id", "a2", "c", "d"]), [], pk), [
    `alter table "public"."t" drop constraint "t_pkey"`,
    `alter table "public"."t" add primary key ("id", "c")`,
  ]);
  // No key any more (every column is the merge key): the constraint goes.
  assert.deepEqual(
    columnChangesSql(
      "postgres",
      { ...now, keyIsAllColumns: true, key: ["id", "a2", "c", "d"] },
      new Set(["id", "a2", "c", "d"]),
      [],
      pk,
    ),
    [`alter table "public"."t" drop constraint "t_pkey"`],
  );
  // The key's column renamed: the constraint follows the rename by itself.
  const renamed: TableInfo = {
    ...now,
    columns: [{ name: "ident", type: "integer", num: 1 }],
    key: ["ident"],
  };
  assert.deepEqual(
    columnChangesSql("postgres", renamed, new Set(["id"]), [{ num: 1, name: "id", type: "integer" }], pk),
    [`alter table "public"."t" rename column "id" to "ident"`],
  );
  // A table without a primary key is left without one.
  assert.deepEqual(columnChangesSql("postgres", now, new Set(["id", "a2", "c", "d"]), []), []);
});

Deno.test("kept staging tables: created once per session and emptied at commit, named by the table's shape", () => {
  const table = now;
  assert.match(
    createStagingSql("postgres", table, "s", [], true),
    /^create temp table if not exists "s" \(_seq bigint, .*"d" character varying\(20\)\) on commit delete rows$/,
  );
  assert.match(createStagingSql("postgres", table, "s"), /^create temp table "s" .* on commit drop$/);
  assert.doesNotMatch(createStagingSql("redshift", table, "s", [], true), /if not exists|on commit/);
  // The table of last rows per key is kept beside it, shaped like it.
  const kept = mergeSql("postgres", table, "s", [], false, [], true);
  assert.equal(kept[0], `create temp table if not exists "s_fin" (like "s") on commit delete rows`);
  assert.match(
    kept[1],
    /^insert into "s_fin" select distinct on \("id"\) \* from "s" order by "id", _seq desc$/,
  );
  assert.match(
    mergeSql("postgres", table, "s", [])[0],
    /^create temp table "s_fin" on commit drop as select/,
  );
  // One name per shape: the same for the same columns, another when a name, a type or the table changes.
  const name = stagingName(table);
  assert.match(name, /^wharf_stage_[0-9a-f]{16}$/);
  assert.equal(stagingName({ ...table, columns: table.columns.map((c) => ({ ...c })) }), name);
  const others = [
    stagingName({ ...table, name: "t2" }),
    stagingName({ ...table, columns: [...table.columns.slice(0, 3), { name: "d", type: "text", num: 5 }] }),
    stagingName({
      ...table,
      columns: [...table.columns.slice(0, 3), { name: "e", type: "character varying(20)", num: 5 }],
    }),
    stagingName(table, [{ name: "b", type: "text", num: 3 }]),
  ];
  assert.equal(new Set([name, ...others]).size, 5);
});
