/**
 * The Postgres warehouse: each batch file is streamed from S3 into a staging table with
 * `COPY … FROM STDIN`, then merged, and the table's applied LSN is stored, all in one transaction.
 *
 * Loads run on connections of their own ({@linkcode LOADERS}), each keeping the staging tables of the
 * tables it loaded last in its session (temporary, emptied at every commit; at most
 * {@linkcode KEPT_STAGING}). Creating and dropping a temporary table per batch cost the target 1–4 ms of
 * CPU and about 24 KiB of catalog WAL (and left the catalog to vacuum); a kept one costs a lookup. Kept
 * tables go with their connection (idle for 30 s, or after an hour at most), and their columns are of
 * built-in types only (a user-defined type is text in the warehouse), so they hold no type in place.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { once } from "node:events";
import { Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ChangeColumnStripper } from "../csv.ts";
import type postgres from "postgres";
import { connectPostgres, copyIn, quoteIdent, type Sql } from "../../../shared/db.ts";
import { formatLsn, parseLsn } from "../lsn.ts";
import { openObject } from "../s3.ts";
import { tableId, type TableInfo } from "../schema.ts";
import {
  createColumnStateSql,
  createStagingSql,
  droppedColumns,
  ensureWarehouseTable,
  fillMissingSql,
  loadNames,
  mergeSql,
  missingIn,
  qualified,
  stagingName,
} from "./merge_sql.ts";
import { type Segment, STATE_SCHEMA, STATE_TABLE, type TableBatch, type Target } from "./target.ts";

const COPY_OPTIONS = `(format csv, null '\\N')`;
const BINARY_OPTIONS = `(format binary)`;
/** The change columns as every staging table has them (see `createStagingSql`). */
const CHANGE_COLUMNS = `_seq bigint, _op char(1), _unchanged varchar(4096)`;

/** A column of a table in the target, as its catalog has it. */
interface TargetColumn {
  oid: number;
  /** `format_type()`: the type with its modifier. */
  type: string;
}

/** Loads at once, each on a connection of its own. */
const LOADERS = 4;
/**
 * Staging tables a loader's session keeps (each with its table of last rows per key, when a batch needed
 * one). Postgres empties every one of them at each commit of a transaction that used a temporary table
 * (about 0.13 ms each here), so a few, not one per table.
 */
const KEPT_STAGING = 4;
/** A kept staging table unused this long makes room for another table's. */
const STAGING_IDLE_MS = 60_000;

/** A connection that runs loads, and the staging tables its session keeps (name → last use, `performance.now()`). */
interface Loader {
  sql: Sql;
  kept: Map<string, number>;
}

/** Bytes read from a local batch file per COPY data message. */
const COPY_CHUNK = 512 * 1024;

/**
 * Streams a local batch file into `statement` (a `COPY … FROM STDIN`) in large chunks. The worker's one
 * thread also reads the replication stream: each chunk costs a turn of the event loop, so few large
 * chunks keep the load moving while the stream is busy. Two buffers take turns (one is read into while
 * the other is written), and the change columns are stripped in place: no garbage per chunk.
 */
/** A stream that drops the change columns of batch file rows (see {@linkcode ChangeColumnStripper}). */
function stripTransform(): Transform {
  const stripper = new ChangeColumnStripper();
  return new Transform({
    transform(chunk: Uint8Array, _enc, cb) {
      cb(null, stripper.push(chunk));
    },
  });
}

/**
 * Runs `feed` with a `COPY … FROM STDIN` open on `tx`: `feed` writes the bytes, calling `check` after each
 * wait (it throws the stream's error, if any); the COPY ends when `feed` returns and is cancelled when it
 * throws.
 */
async function copyInto(
  tx: postgres.ReservedSql<Record<string, unknown>>,
  statement: string,
  feed: (writable: Writable, check: () => void) => Promise<void>,
): Promise<void> {
  const { stream: writable, done } = await copyIn(tx, statement);
  let failed: unknown;
  const onError = (e: unknown) => (failed ??= e);
  const check = () => {
    if (failed) throw failed;
  };
  writable.on("error", onError);
  try {
    await feed(writable, check);
    check();
    writable.end();
    await done;
  } catch (e) {
    writable.destroy(e as Error);
    throw e;
  } finally {
    writable.off("error", onError);
  }
}

async function copyLocalFile(
  tx: postgres.ReservedSql<Record<string, unknown>>,
  statement: string,
  path: string,
  size: number,
  stripChangeColumns: boolean,
): Promise<void> {
  using file = await Deno.open(path, { read: true });
  await copyInto(tx, statement, async (writable, check) => {
    const stripper = stripChangeColumns ? new ChangeColumnStripper() : undefined;
    const length = Math.min(COPY_CHUNK, size + 1);
    const buffers = [new Uint8Array(length), new Uint8Array(length)];
    // The write of each buffer's last chunk: the buffer is reused only once the socket has taken it.
    const written: (Promise<void> | undefined)[] = [undefined, undefined];
    for (let k = 0;; k ^= 1) {
      await written[k];
      const chunk = buffers[k];
      const n = await file.read(chunk);
      check();
      if (n === null) break;
      const data = stripper ? stripper.push(chunk.subarray(0, n), true) : chunk.subarray(0, n);
      if (!data.length) continue;
      const w = new Promise<void>((resolve, reject) =>
        writable.write(data, (e) => (e ? reject(e) : resolve()))
      );
      w.catch(() => {});
      written[k] = w;
      if (writable.writableNeedDrain) await once(writable, "drain");
    }
    await Promise.all(written);
  });
}

/** Copies `data` (a batch file kept in memory) into `statement`, a `COPY … FROM STDIN`. */
async function copyBytes(
  tx: postgres.ReservedSql<Record<string, unknown>>,
  statement: string,
  data: Uint8Array,
  stripChangeColumns: boolean,
): Promise<void> {
  await copyInto(tx, statement, async (writable, check) => {
    // Not in place: the bytes are read again if the load is retried.
    const stripper = stripChangeColumns ? new ChangeColumnStripper() : undefined;
    for (let at = 0; at < data.length; at += COPY_CHUNK) {
      const piece = data.subarray(at, Math.min(data.length, at + COPY_CHUNK));
      const out = stripper ? stripper.push(piece) : piece;
      if (out.length && !writable.write(out)) await once(writable, "drain");
      check();
    }
  });
}

/** A batch file's bytes copied into `statement` from where the worker has them: memory or a local file. */
function copyLocal(
  tx: postgres.ReservedSql<Record<string, unknown>>,
  statement: string,
  local: { path?: string; data?: Uint8Array },
  size: number,
  stripChangeColumns: boolean,
): Promise<void> {
  return local.data && local.path === undefined
    ? copyBytes(tx, statement, local.data, stripChangeColumns)
    : copyLocalFile(tx, statement, local.path!, size, stripChangeColumns);
}

/**
 * Waits for every one of `queries` (pipelined on one connection) and throws the first failure in their
 * order, so that a statement refused in the middle of a pipeline is the error reported, not the ones
 * after it that an aborted transaction refused too.
 */
async function all(queries: Promise<unknown>[]): Promise<unknown[]> {
  const settled = await Promise.allSettled(queries);
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value);
}

/** A Postgres target at `url`, reading batch files with `s3`. */
export class PostgresTarget implements Target {
  readonly kind = "postgres" as const;
  readonly sql: Sql;
  readonly #s3: S3Client;
  /** Per table, the columns it keeps that the source dropped (from the last `ensureTable`). */
  readonly #dropped = new Map<string, string[]>();
  readonly #url: string;
  /** Every open loader, busy or idle. */
  readonly #loaders = new Set<Loader>();
  readonly #idle: Loader[] = [];
  readonly #waiting: (() => void)[] = [];
  #closed = false;

  readonly #keptStaging: number;
  readonly #stagingIdleMs: number;

  /**
   * `keptStaging` and `stagingIdleMs` (default {@linkcode KEPT_STAGING} and {@linkcode STAGING_IDLE_MS}):
   * how many staging tables a loader's session keeps, and after how long unused one makes room.
   */
  constructor(url: string, s3: S3Client, o: { keptStaging?: number; stagingIdleMs?: number } = {}) {
    this.#url = url;
    this.sql = this.#connect(2);
    this.#s3 = s3;
    this.#keptStaging = o.keptStaging ?? KEPT_STAGING;
    this.#stagingIdleMs = o.stagingIdleMs ?? STAGING_IDLE_MS;
  }

  #connect(max: number): Sql {
    return connectPostgres(this.#url, { max, applicationName: "wharf-replicate-target", connectTimeout: 5 });
  }

  /** An idle loader, preferably one that keeps staging table `staging`; waits while all are busy. */
  async #acquire(staging: string | undefined): Promise<Loader> {
    for (;;) {
      if (this.#closed) throw new Error("The Postgres target is closed");
      if (this.#idle.length) {
        const i = staging ? this.#idle.findIndex((l) => l.kept.has(staging)) : -1;
        return this.#idle.splice(i >= 0 ? i : this.#idle.length - 1, 1)[0];
      }
      if (this.#loaders.size < LOADERS) {
        const loader = { sql: this.#connect(1), kept: new Map() };
        this.#loaders.add(loader);
        return loader;
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  /**
   * Gives `loader` back, or ends its session (`end`: after a failed load, what its transaction did to the
   * kept tables is not known); a new one starts with a later load.
   */
  #release(loader: Loader, end: boolean): void {
    if (end || this.#closed) {
      this.#loaders.delete(loader);
      loader.sql.end({ timeout: 5 }).catch(() => {});
    } else this.#idle.push(loader);
    this.#waiting.shift()?.();
  }

  /**
   * How `loader` stages a batch in kept table `name` ({@linkcode stagingName}): there when its session has
   * it or has room for it (making room by dropping, in the same transaction, a kept table idle for a
   * minute: `drop`), else in a table of this transaction only (`name` undefined).
   */
  #stagingFor(loader: Loader, name: string): { name?: string; drop: string[] } {
    const now = performance.now();
    const drop: string[] = [];
    if (!loader.kept.has(name) && loader.kept.size >= this.#keptStaging) {
      const [oldest, used] = [...loader.kept].reduce((a, b) => (b[1] < a[1] ? b : a));
      if (now - used < this.#stagingIdleMs) return { drop };
      loader.kept.delete(oldest);
      drop.push(oldest, oldest + "_fin");
    }
    loader.kept.set(name, now);
    return { name, drop };
  }

  async prepare(): Promise<void> {
    await this.sql.unsafe(`create schema if not exists ${quoteIdent(STATE_SCHEMA)}`);
    await this.sql.unsafe(`create table if not exists ${qualified(STATE_SCHEMA, STATE_TABLE)} (
      pipeline text not null, table_name text not null, lsn pg_lsn not null,
      applied_at timestamptz not null default now(), primary key (pipeline, table_name))`);
    await this.sql.unsafe(createColumnStateSql("postgres"));
  }

  async ensureTable(table: TableInfo): Promise<void> {
    this.#dropped.set(tableId(table), await ensureWarehouseTable(this.sql, "postgres", table));
  }

  async applied(pipeline: string): Promise<Map<string, bigint>> {
    const rows = await this.sql<{ table_name: string; lsn: string }[]>`
      select table_name, lsn::text as lsn from ${this.sql(STATE_SCHEMA)}.${this.sql(STATE_TABLE)}
       where pipeline = ${pipeline}`;
    return new Map(rows.map((r) => [r.table_name, parseLsn(r.lsn)]));
  }

  async reset(pipeline: string): Promise<void> {
    await this.sql`delete from ${this.sql(STATE_SCHEMA)}.${
      this.sql(STATE_TABLE)
    } where pipeline = ${pipeline}`;
  }

  /**
   * Loads a batch in one transaction on a reserved connection, its statements pipelined where no answer is
   * awaited in between: BEGIN, the state row's lock (and the staging table) in one round trip, the COPYs,
   * then the merge, the new LSN and COMMIT in one. A round trip costs a few hundred µs of CPU on each side,
   * and a load used to make nine or ten. Any statement's failure fails the load: the statements behind it
   * in the pipeline then run in an aborted transaction, whose COMMIT rolls it back.
   */
  async load(batch: TableBatch): Promise<boolean> {
    const id = tableId(batch.table);
    const t = qualified(batch.table.schema, batch.table.name);
    // Files written before a column was added with a default lack its value: staged, then filled in.
    const missing = batch.segments.map((seg) => missingIn(batch.table, seg.columns));
    const staged = batch.kind === "changes" && (!batch.insertsOnly || missing.some((m) => m.length));
    const extra = staged ? droppedColumns(batch.table, batch.segments) : [];
    const kept = staged ? stagingName(batch.table, extra) : undefined;
    const loader = await this.#acquire(kept);
    let endSession = true; // unless the load ends as planned
    let tx: postgres.ReservedSql<Record<string, unknown>> | undefined;
    let open = true; // until COMMIT or ROLLBACK went through: otherwise ROLLBACK before the release
    try {
      tx = await loader.sql.reserve();
      const plan = kept ? this.#stagingFor(loader, kept) : undefined;
      const staging = plan ? plan.name ?? `wharf_stage_${crypto.randomUUID().slice(0, 8)}` : undefined;
      const keep = plan?.name !== undefined;
      // The row lock serialises two loaders of one table (a restarted worker racing its predecessor).
      const first: Promise<unknown>[] = [
        tx`begin`,
        // The source's slot is acknowledged once this commit returns: it must then be durable, also where
        // the target runs with synchronous_commit off (a crash would otherwise lose a batch the source no
        // longer holds). Any other setting waits for the local flush at least, and is left as it is.
        tx`select set_config('synchronous_commit', 'local', true) where current_setting('synchronous_commit') = 'off'`,
        tx<{ lsn: string }[]>`
          select lsn::text as lsn from ${tx(STATE_SCHEMA)}.${tx(STATE_TABLE)}
           where pipeline = ${batch.pipeline} and table_name = ${id} for update`,
      ];
      // Each file's columns by the names they load into now (a file written before a rename or a drop).
      const into = batch.segments.map((seg) => loadNames(batch.table, seg.columns));
      const names = into.map((cols) => cols.map(quoteIdent).join(", "));
      if (plan?.drop.length) {
        first.push(tx.unsafe(`drop table if exists ${plan.drop.map(quoteIdent).join(", ")}`));
      }
      if (staging) first.push(tx.unsafe(createStagingSql("postgres", batch.table, staging, extra, keep)));
      // Binary files load as they are only into columns of their values' types: the destination's are read.
      const binary = batch.kind === "changes" && batch.segments.some((s) => s.format === "binary");
      if (binary) {
        first.push(tx<{ name: string; oid: number; type: string }[]>`
          select attname as name, atttypid::int as oid, format_type(atttypid, atttypmod) as type
            from pg_attribute
           where attrelid = ${
          staging ? quoteIdent(staging) : t
        }::regclass and attnum > 0 and not attisdropped`);
      }
      const [, , [cur], ...rest] = await all(first) as [unknown, unknown, { lsn: string }[], ...unknown[]];
      const destTypes = new Map<string, TargetColumn>();
      if (binary) {
        for (const c of rest.at(-1) as { name: string; oid: number; type: string }[]) {
          destTypes.set(c.name, c);
        }
      }
      if (cur && batch.kind === "changes" && parseLsn(cur.lsn) >= batch.lsn) {
        await tx`rollback`;
        open = false;
        // A kept table dropped to make room came back with the rollback: its session is ended instead.
        endSession = (plan?.drop.length ?? 0) > 0;
        return false;
      }
      const last: Promise<unknown>[] = [];
      if (batch.kind === "snapshot") {
        await tx.unsafe(`truncate ${t}`);
        for (const [i, seg] of batch.segments.entries()) {
          await this.#copy(tx, `copy ${t} (${names[i]}) from stdin ${COPY_OPTIONS}`, batch.bucket, seg);
        }
      } else if (!staging) {
        // Inserts of keys the target cannot hold yet: appended straight into the table, no merge.
        if (batch.truncate) await tx.unsafe(`truncate ${t}`);
        for (const [i, seg] of batch.segments.entries()) {
          if (seg.format === "binary") {
            await this.#copyBinary(tx, t, into[i], false, batch.bucket, seg, destTypes);
          } else {
            await this.#copy(
              tx,
              `copy ${t} (${names[i]}) from stdin ${COPY_OPTIONS}`,
              batch.bucket,
              seg,
              true,
            );
          }
        }
      } else {
        if (batch.truncate) await tx.unsafe(`truncate ${t}`);
        for (const [i, seg] of batch.segments.entries()) {
          if (seg.format === "binary") {
            await this.#copyBinary(tx, quoteIdent(staging), into[i], true, batch.bucket, seg, destTypes);
          } else {
            const cols = `_seq, _op, _unchanged${names[i] ? ", " + names[i] : ""}`;
            await this.#copy(
              tx,
              `copy ${quoteIdent(staging)} (${cols}) from stdin ${COPY_OPTIONS}`,
              batch.bucket,
              seg,
            );
          }
          for (const c of missing[i]) {
            const fill = fillMissingSql("postgres", quoteIdent(staging), c);
            await tx.unsafe(fill.sql, fill.params);
          }
        }
        // Column numbers marked unchanged: known from the writer when it tracked them, else looked up.
        const tracked = batch.segments.every((s) => s.unchanged !== undefined);
        const idx = tracked
          ? [...new Set(batch.segments.flatMap((s) => s.unchanged!))].map((i) => ({ i }))
          : await tx<{ i: number }[]>`
          select distinct x::int as i from ${tx(staging)},
                 unnest(string_to_array(trim(both ',' from _unchanged), ',')) x
           where _unchanged <> '-'`;
        const merge = mergeSql(
          "postgres",
          batch.table,
          staging,
          idx.map((r) => r.i).sort((a, b) => a - b),
          batch.distinctKeys,
          this.#dropped.get(id),
          keep,
        );
        // Sent now (a query starts when first observed), so that the target merges while the batch's
        // upload may still be going on; a refusal is handled here and reported by `all` below.
        for (const stmt of merge) {
          const q = tx.unsafe(stmt);
          q.catch(() => {});
          last.push(q);
        }
      }
      await batch.stored;
      last.push(
        tx`
        insert into ${tx(STATE_SCHEMA)}.${tx(STATE_TABLE)} (pipeline, table_name, lsn)
        values (${batch.pipeline}, ${id}, ${formatLsn(batch.lsn)}::pg_lsn)
        on conflict (pipeline, table_name) do update set lsn = excluded.lsn, applied_at = now()`,
        tx`commit`,
      );
      await all(last);
      open = false;
      endSession = false;
      return true;
    } finally {
      if (tx) {
        if (open) await tx`rollback`.catch(() => {});
        tx.release();
      }
      this.#release(loader, endSession);
    }
  }

  /**
   * Loads binary segment `seg` into `dest` (a quoted name: the staging table, with the change columns, or
   * the table itself, without), its data columns into the columns named `into`. When every value's type
   * is the destination column's, the file is copied straight in (the plain twin into the table). Else
   * (a column retyped since the file was written, or the table's types made by hand), and for a table
   * load without a plain twin, it is copied into a temporary table typed like the file, then inserted
   * with each differing value cast through its text form, as a CSV load would read it.
   */
  async #copyBinary(
    tx: postgres.ReservedSql<Record<string, unknown>>,
    dest: string,
    into: string[],
    changeColumns: boolean,
    bucket: string,
    seg: Segment,
    destTypes: Map<string, TargetColumn>,
  ): Promise<void> {
    const wire = seg.wire ?? [];
    if (wire.length !== into.length) {
      throw new Error(`Cannot load a binary batch file: ${into.length} columns but ${wire.length} types`);
    }
    const same = into.every((n, j) => destTypes.get(n)?.oid === wire[j]);
    const cols = into.map(quoteIdent);
    if (same && (changeColumns || seg.plain)) {
      const list = (changeColumns ? ["_seq", "_op", "_unchanged", ...cols] : cols).join(", ");
      await this.#copy(
        tx,
        `copy ${dest} (${list}) from stdin ${BINARY_OPTIONS}`,
        bucket,
        seg,
        !changeColumns,
      );
      return;
    }
    const names = await tx<{ type: string }[]>`
      select format_type(o::oid, null) as type from unnest(${"{" + wire.join(",") + "}"}::int[])
        with ordinality x(o, n) order by n`;
    const file = `wharf_file_${crypto.randomUUID().slice(0, 8)}`;
    const fileCols = wire.map((_, j) => `c${j + 1} ${names[j].type}`);
    await tx.unsafe(
      `create temp table ${file} (${[CHANGE_COLUMNS, ...fileCols].join(", ")}) on commit drop`,
    );
    await this.#copy(tx, `copy ${file} from stdin ${BINARY_OPTIONS}`, bucket, seg);
    const values = into.map((n, j) => {
      const d = destTypes.get(n);
      return d && d.oid !== wire[j] ? `c${j + 1}::text::${d.type}` : `c${j + 1}`;
    });
    const list = changeColumns ? ["_seq", "_op", "_unchanged", ...cols] : cols;
    const select = changeColumns ? ["_seq", "_op", "_unchanged", ...values] : values;
    await tx.unsafe(`insert into ${dest} (${list.join(", ")}) select ${select.join(", ")} from ${file}`);
    await tx.unsafe(`drop table ${file}`);
  }

  async #copy(
    tx: postgres.ReservedSql<Record<string, unknown>>,
    statement: string,
    bucket: string,
    seg: Segment,
    stripChangeColumns = false,
  ): Promise<void> {
    if (stripChangeColumns && seg.plain) {
      return await copyLocal(tx, statement, seg.plain, seg.plain.bytes, false);
    }
    if (stripChangeColumns && seg.format === "binary") {
      throw new Error("Cannot strip the change columns of a binary batch file");
    }
    if (seg.path || seg.data) return await copyLocal(tx, statement, seg, seg.bytes, stripChangeColumns);
    const body = await openObject(this.#s3, bucket, seg.key);
    const { stream: writable, done } = await copyIn(tx, statement);
    // The pipeline ends with the stream's `finish`, which a refusal of the last rows never brings: the
    // load waits for whichever of the two comes.
    const stages = stripChangeColumns ? [body, stripTransform(), writable] : [body, writable];
    await Promise.race([(pipeline as (...s: unknown[]) => Promise<void>)(...stages), done]);
    await done;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const wake of this.#waiting.splice(0)) wake();
    this.#idle.length = 0;
    const loaders = [...this.#loaders];
    this.#loaders.clear();
    await Promise.all([this.sql.end({ timeout: 5 }), ...loaders.map((l) => l.sql.end({ timeout: 5 }))]);
  }
}
