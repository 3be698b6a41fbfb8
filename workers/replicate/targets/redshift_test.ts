import assert from "node:assert/strict";
import type { TableInfo } from "../schema.ts";
import { manifestJson, redshiftLiteral, redshiftLoadSql } from "./redshift.ts";
import type { TableBatch } from "./target.ts";

/** The statements' text (parameterised ones by their SQL). */
const loadSql = (...a: Parameters<typeof redshiftLoadSql>): string[] =>
  redshiftLoadSql(...a).map((s) => typeof s === "string" ? s : s.sql);

const table: TableInfo = {
  schema: "app",
  name: "it'ems",
  columns: [{ name: "id", type: "bigint" }, { name: 'na"me', type: "text" }, { name: "doc", type: "jsonb" }],
  key: ["id"],
  keyIsAllColumns: false,
};

const batch = (over: Partial<TableBatch> = {}): TableBatch => ({
  pipeline: "main",
  bucket: "wharf-warehouse",
  table,
  kind: "changes",
  truncate: false,
  segments: [{ key: "main/app.items/0-1.csv", columns: table.columns, rows: 3, bytes: 120 }],
  lsn: 42n,
  ...over,
});

Deno.test("redshiftLoadSql() copies a change batch from its manifest into staging, then deletes and inserts", () => {
  const sql = loadSql(batch(), ["main/app.items/0-1.csv.manifest"], {
    iamRole: "arn:aws:iam::1:role/r",
  });
  assert.match(
    sql[0],
    /^create temp table "wharf_stage_app_it_ems" \(_seq bigint, _op char\(1\), _unchanged varchar\(4096\), "id" bigint, "na""me" varchar\(65535\), "doc" varchar\(65535\)\)$/,
  );
  assert.equal(
    sql[1],
    `copy "wharf_stage_app_it_ems" (_seq, _op, _unchanged, "id", "na""me", "doc") from ` +
      `'s3://wharf-warehouse/main/app.items/0-1.csv.manifest' iam_role 'arn:aws:iam::1:role/r' manifest ` +
      `format as csv timeformat 'auto' dateformat 'auto' acceptinvchars compupdate off statupdate off`,
  );
  assert.ok(sql.some((s) => /row_number\(\) over \(partition by "id" order by _seq desc\)/.test(s)));
  const del = sql.findIndex((s) => s.startsWith(`delete from "app"."it'ems" using`));
  const ins = sql.findIndex((s) => s.startsWith(`insert into "app"."it'ems" ("id", "na""me", "doc") select`));
  assert.ok(del > 0 && ins > del, "the delete runs before the insert");
  assert.match(sql[del], /"app"."it'ems"."id" = f."id" and \(f._op = 'D' or f._unchanged = '-'\)/);
  assert.ok(!sql.some((s) => /\btruncate\b/i.test(s)), "TRUNCATE would commit the transaction in Redshift");
  assert.deepEqual(sql.slice(-2), [
    `drop table "wharf_stage_app_it_ems_fin"`,
    `drop table "wharf_stage_app_it_ems"`,
  ]);
});

Deno.test("redshiftLoadSql() fills unchanged TOAST columns from earlier rows and keeps the target's value", () => {
  const sql = loadSql(batch(), ["m"], { iamRole: "arn:r" });
  // name (column 2) and doc (column 3) may be TOASTed; id (bigint, column 1) cannot.
  assert.ok(sql.some((s) => s.includes(`position(',2,' in x._unchanged) > 0`)));
  assert.ok(sql.some((s) => s.includes(`position(',3,' in x._unchanged) > 0`)));
  assert.ok(!sql.some((s) => s.includes(`',1,'`)));
  const upd = sql.find((s) => s.startsWith(`update "app"."it'ems" set`))!;
  assert.match(
    upd,
    /"na""me" = case when position\(',2,' in f._unchanged\) > 0 then "app"."it'ems"."na""me" else f."na""me" end/,
  );
});

Deno.test("redshiftLoadSql() replaces the table with DELETE for a snapshot and for a truncate", () => {
  const snap = loadSql(batch({ kind: "snapshot" }), ["m1"], {
    accessKeyId: "AK",
    secretAccessKey: "s'k",
  });
  assert.equal(snap[0], `delete from "app"."it'ems"`);
  assert.match(
    snap[1],
    /^copy "app"."it'ems" \("id", "na""me", "doc"\) from 's3:\/\/wharf-warehouse\/m1' access_key_id 'AK' secret_access_key 's''k' manifest/,
  );
  const tr = loadSql(batch({ truncate: true }), ["m"], { iamRole: "r" });
  assert.equal(tr[0], `delete from "app"."it'ems"`);
});

Deno.test("redshiftLoadSql() merges straight from staging when every key occurs once", () => {
  const sql = loadSql(batch({ distinctKeys: true }), ["m"], { iamRole: "r" });
  assert.ok(!sql.some((s) => s.includes("row_number()")));
  assert.ok(sql.some((s) => s.startsWith(`delete from "app"."it'ems" using "wharf_stage_app_it_ems" f`)));
  assert.equal(sql.at(-1), `drop table "wharf_stage_app_it_ems"`);
});

Deno.test("manifestJson() lists every segment as a mandatory entry with its length", () => {
  const m = JSON.parse(manifestJson(batch()));
  assert.deepEqual(m, {
    entries: [{
      url: "s3://wharf-warehouse/main/app.items/0-1.csv",
      mandatory: true,
      meta: { content_length: 120 },
    }],
  });
});

Deno.test("redshiftLiteral() doubles quotes and backslashes", () => {
  assert.equal(redshiftLiteral(`a'b\\c`), `'a''b\\\\c'`);
});

// The same conformance suite as Postgres, against a real Redshift when one is configured
// (`REDSHIFT_TEST_URL`, `REDSHIFT_TEST_BUCKET`, `REDSHIFT_TEST_IAM_ROLE`, and S3 credentials in `S3_*`).
const redshiftUrl = Deno.env.get("REDSHIFT_TEST_URL");
if (redshiftUrl) {
  const { targetConformance } = await import("./conformance.ts");
  const { RedshiftTarget } = await import("./redshift.ts");
  const { s3Client } = await import("../s3.ts");
  const { qualified } = await import("./merge_sql.ts");
  targetConformance("redshift", () => {
    const s3 = s3Client({
      region: Deno.env.get("S3_REGION") ?? "us-east-1",
      forcePathStyle: false,
      accessKeyId: Deno.env.get("S3_ACCESS_KEY_ID"),
      secretAccessKey: Deno.env.get("S3_SECRET_ACCESS_KEY"),
    });
    const target = new RedshiftTarget(redshiftUrl, s3, {
      iamRole: Deno.env.get("REDSHIFT_TEST_IAM_ROLE") ?? "",
    });
    return Promise.resolve({
      target,
      s3,
      bucket: Deno.env.get("REDSHIFT_TEST_BUCKET") ?? "",
      rows: async (t: TableInfo) =>
        (await target.sql.unsafe(
          `select id::text as id, v, big from ${qualified(t.schema, t.name)} order by id`,
        ))
          .map((r) => [r.id, r.v, r.big] as [string, string | null, string | null]),
      dispose: async () => {
        await target.close();
        s3.destroy();
      },
    });
  });
}
