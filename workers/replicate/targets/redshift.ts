/**
 * The Redshift warehouse: the batch's files are listed in a manifest on S3, loaded with
 * `COPY … FROM 's3://…manifest' … MANIFEST CSV`, then merged with the staged delete + insert of
 * {@link ./merge_sql.ts} and the applied LSN stored, in one transaction. The SQL is built by
 * {@linkcode redshiftLoadSql} (unit-tested); {@linkcode RedshiftTarget} runs it when a Redshift URL is
 * configured (Redshift speaks the Postgres protocol, so postgres.js is the client).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { connectPostgres, quoteIdent, type Sql } from "../../../shared/db.ts";
import { formatLsn, parseLsn } from "../lsn.ts";
import { putText } from "../s3.ts";
import { columnNum, tableId, type TableInfo } from "../schema.ts";
import {
  createColumnStateSql,
  createStagingSql,
  droppedColumns,
  ensureWarehouseTable,
  fillMissingSql,
  loadNames,
  mergeSql,
  missingIn,
  type Parameterised,
  qualified,
} from "./merge_sql.ts";
import { STATE_SCHEMA, STATE_TABLE, type TableBatch, type Target } from "./target.ts";

/** How Redshift reads the bucket: an IAM role ARN (preferred) or an access key pair. */
export type RedshiftAuth = { iamRole: string } | { accessKeyId: string; secretAccessKey: string };

/** A SQL string literal (Redshift: quotes doubled, backslashes doubled). */
export function redshiftLiteral(value: string): string {
  return "'" + value.replaceAll("\\", "\\\\").replaceAll("'", "''") + "'";
}

function authClause(auth: RedshiftAuth): string {
  return "iamRole" in auth
    ? `iam_role ${redshiftLiteral(auth.iamRole)}`
    : `access_key_id ${redshiftLiteral(auth.accessKeyId)} secret_access_key ${
      redshiftLiteral(auth.secretAccessKey)
    }`;
}

/** The manifest listing a batch's files (Redshift's JSON manifest format). */
export function manifestJson(batch: TableBatch): string {
  return JSON.stringify({
    entries: batch.segments.map((s) => ({
      url: `s3://${batch.bucket}/${s.key}`,
      mandatory: true,
      meta: { content_length: s.bytes },
    })),
  });
}

/**
 * The statements of one batch load, in order, to run in one transaction (the caller adds the applied-LSN
 * upsert, parameterised). Segments with different column lists (a column added mid-batch) get one COPY
 * each, from a manifest per segment; `manifestKeys[i]` is segment i's manifest.
 */
export function redshiftLoadSql(
  batch: TableBatch,
  manifestKeys: string[],
  auth: RedshiftAuth,
  dropped: readonly string[] = [],
): (string | Parameterised)[] {
  const t = qualified(batch.table.schema, batch.table.name);
  const out: (string | Parameterised)[] = [];
  const copy = (into: string, cols: string[], manifestKey: string) =>
    `copy ${into} (${cols.join(", ")}) from ${redshiftLiteral(`s3://${batch.bucket}/${manifestKey}`)} ` +
    // NULL is Redshift's default null marker `\N`; every other value is quoted (see csv.ts).
    `${authClause(auth)} manifest format as csv timeformat 'auto' dateformat 'auto' ` +
    `acceptinvchars compupdate off statupdate off`;
  if (batch.kind === "snapshot") {
    // TRUNCATE commits in Redshift; DELETE keeps the load atomic.
    out.push(`delete from ${t}`);
    batch.segments.forEach((s, i) =>
      out.push(copy(t, loadNames(batch.table, s.columns).map(quoteIdent), manifestKeys[i]))
    );
    return out;
  }
  if (batch.truncate) out.push(`delete from ${t}`);
  const staging = `wharf_stage_${tableId(batch.table).replace(/[^a-z0-9_]/gi, "_")}`;
  out.push(createStagingSql("redshift", batch.table, staging, droppedColumns(batch.table, batch.segments)));
  batch.segments.forEach((s, i) => {
    out.push(
      copy(quoteIdent(staging), [
        "_seq",
        "_op",
        "_unchanged",
        ...loadNames(batch.table, s.columns).map(quoteIdent),
      ], manifestKeys[i]),
    );
    // A file written before a column was added with a default lacks the value its rows read there.
    for (const c of missingIn(batch.table, s.columns)) {
      out.push(fillMissingSql("redshift", quoteIdent(staging), c));
    }
  });
  // Redshift cannot tell which columns were unchanged before loading, so every column that may hold a
  // TOASTed value (variable-length types) gets the fill-in step; it is a no-op when none is marked.
  const nums = batch.table.columns.flatMap((c, i) =>
    /^(text|bytea|jsonb?|character varying.*|xml)$|\[\]$/.test(c.type)
      ? [columnNum(batch.table.columns, i)]
      : []
  );
  out.push(...mergeSql("redshift", batch.table, staging, nums, batch.distinctKeys, dropped));
  return out;
}

/** A Redshift target (used when `REPLICATE_TARGET=redshift` and a Redshift URL is set). */
export class RedshiftTarget implements Target {
  readonly kind = "redshift" as const;
  readonly sql: Sql;
  readonly #s3: S3Client;
  /** Per table, the columns it keeps that the source dropped (from the last `ensureTable`). */
  readonly #dropped = new Map<string, string[]>();
  readonly #auth: RedshiftAuth;

  constructor(url: string, s3: S3Client, auth: RedshiftAuth) {
    this.sql = connectPostgres(url, { max: 4, applicationName: "wharf-replicate" });
    this.#s3 = s3;
    this.#auth = auth;
  }

  async prepare(): Promise<void> {
    await this.sql.unsafe(`create schema if not exists ${quoteIdent(STATE_SCHEMA)}`);
    await this.sql.unsafe(`create table if not exists ${qualified(STATE_SCHEMA, STATE_TABLE)} (
      pipeline varchar(256) not null, table_name varchar(1024) not null, lsn varchar(32) not null,
      applied_at timestamp not null default getdate(), primary key (pipeline, table_name))`);
    await this.sql.unsafe(createColumnStateSql("redshift"));
  }

  async ensureTable(table: TableInfo): Promise<void> {
    this.#dropped.set(tableId(table), await ensureWarehouseTable(this.sql, "redshift", table));
  }

  async applied(pipeline: string): Promise<Map<string, bigint>> {
    const rows = await this.sql<{ table_name: string; lsn: string }[]>`
      select table_name, lsn from ${this.sql(STATE_SCHEMA)}.${
      this.sql(STATE_TABLE)
    } where pipeline = ${pipeline}`;
    return new Map(rows.map((r) => [r.table_name, parseLsn(r.lsn)]));
  }

  async reset(pipeline: string): Promise<void> {
    await this.sql`delete from ${this.sql(STATE_SCHEMA)}.${
      this.sql(STATE_TABLE)
    } where pipeline = ${pipeline}`;
  }

  async load(batch: TableBatch): Promise<boolean> {
    const manifests: string[] = [];
    for (const [i, s] of batch.segments.entries()) {
      const key = `${s.key}.manifest`;
      await putText(this.#s3, batch.bucket, key, manifestJson({ ...batch, segments: [batch.segments[i]] }));
      manifests.push(key);
    }
    const id = tableId(batch.table);
    return await this.sql.begin(async (tx) => {
      const [cur] = await tx<{ lsn: string }[]>`
        select lsn from ${tx(STATE_SCHEMA)}.${
        tx(STATE_TABLE)
      } where pipeline = ${batch.pipeline} and table_name = ${id}`;
      if (cur && batch.kind === "changes" && parseLsn(cur.lsn) >= batch.lsn) return false;
      for (const stmt of redshiftLoadSql(batch, manifests, this.#auth, this.#dropped.get(id))) {
        await (typeof stmt === "string" ? tx.unsafe(stmt) : tx.unsafe(stmt.sql, stmt.params));
      }
      await tx`delete from ${tx(STATE_SCHEMA)}.${
        tx(STATE_TABLE)
      } where pipeline = ${batch.pipeline} and table_name = ${id}`;
      await tx`insert into ${tx(STATE_SCHEMA)}.${tx(STATE_TABLE)} (pipeline, table_name, lsn)
               values (${batch.pipeline}, ${id}, ${formatLsn(batch.lsn)})`;
      return true;
    });
  }

  async close(): Promise<void> {
    await this.sql.end({ timeout: 5 });
  }
}
