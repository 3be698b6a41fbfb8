/**
 * The warehouse side of a pipeline. Every target passes one conformance suite
 * (`targets/conformance.ts`): whatever the warehouse, a batch is applied in one transaction together
 * with the table's applied LSN, so a replay of an applied batch changes nothing.
 */
import type { Column, TableInfo } from "../schema.ts";

/** One batch file of one table on S3. */
export interface Segment {
  /** Object key in the pipeline's bucket. */
  key: string;
  /**
   * Data columns in file order (after the `_seq, _op, _unchanged` change columns), as the source had them
   * when the file was written: a target loads each into the column with the same number in the batch's
   * `table` (the table as it is now), so a column renamed since still gets its values.
   */
  columns: Column[];
  rows: number;
  bytes: number;
  /**
   * Numbers (`columnNum` in `schema.ts`) of the columns marked unchanged in some row, when the writer tracked
   * them; absent means unknown (the target then looks).
   */
  unchanged?: number[];
  /**
   * `binary`: the file is in `COPY … (FORMAT binary)` (written by a binary session for a Postgres target);
   * absent: CSV (see `csv.ts`).
   */
  format?: "binary";
  /**
   * Binary files: the type oid of each data column's values (the source's, as the stream sent them), which
   * a target must load into columns of the same types (else through a cast from their text form).
   */
  wire?: number[];
  /**
   * The same bytes in a local file, when the loader has them (the worker that wrote the batch): a
   * target that loads through its client reads that instead of downloading the object again.
   */
  path?: string;
  /** The same bytes in memory (instead of `path`), when the worker that wrote the batch kept them there. */
  data?: Uint8Array;
  /**
   * The same rows without the change columns in a local file or in memory (written while every row of the
   * table was an insert): an inserts-only load can copy it straight into the table.
   */
  plain?: { path?: string; data?: Uint8Array; bytes: number };
}

/** What a target applies in one transaction. */
export interface TableBatch {
  pipeline: string;
  bucket: string;
  table: TableInfo;
  /**
   * `changes`: files of change rows (`_seq, _op, _unchanged, …columns`; `_op` is `I` insert, `U` update,
   * `D` delete) merged by key.
   * `snapshot`: files of plain rows that replace the table's content.
   */
  kind: "changes" | "snapshot";
  /** The table was truncated in this batch before its rows (changes only). */
  truncate: boolean;
  segments: Segment[];
  /**
   * Every row is an insert (`_op` `I`) of a key the target cannot hold yet (changes only): a target may
   * append the rows without a merge.
   */
  insertsOnly?: boolean;
  /** Every key occurs in one row only (changes only): the merge can skip its last-row-per-key step. */
  distinctKeys?: boolean;
  /**
   * Resolves when the batch's files are safely on S3; the load commits only after it (so S3 always holds
   * every applied batch), and rolls back if it rejects.
   */
  stored?: Promise<unknown>;
  /** Commit LSN of the last transaction in the batch; stored as the table's applied LSN. */
  lsn: bigint;
}

/** A warehouse. */
export interface Target {
  readonly kind: "postgres" | "redshift";
  /** Creates the target's state table (where applied LSNs live). Idempotent. */
  prepare(): Promise<void>;
  /**
   * Creates the table when missing and follows the source's column changes: adds columns, renames and
   * retypes them (see `columnChangesSql` in `merge_sql.ts`). Idempotent.
   */
  ensureTable(table: TableInfo): Promise<void>;
  /** Applied LSN per table (`schema.table`) of `pipeline`. */
  applied(pipeline: string): Promise<Map<string, bigint>>;
  /**
   * Applies a batch in one transaction with its LSN. Returns false (and changes nothing) when the
   * stored LSN already covers it.
   */
  load(batch: TableBatch): Promise<boolean>;
  /** Forgets a pipeline's applied LSNs (before a new initial snapshot). */
  reset(pipeline: string): Promise<void>;
  close(): Promise<void>;
}

/** The name of the state table every target keeps, in its `wharf_replicate` schema. */
export const STATE_SCHEMA = "wharf_replicate";
/** See {@linkcode STATE_SCHEMA}. */
export const STATE_TABLE = "applied";
