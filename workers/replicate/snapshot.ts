/**
 * The initial snapshot: the slot is created with an exported snapshot, and every published table is
 * copied in that snapshot, so the copy and the stream that follows meet exactly at the slot's consistent
 * point (nothing missed, nothing twice). Each table goes through the same path as a batch: CSV file →
 * S3 → the target, in one transaction with the table's applied LSN (`consistent point - 1`, so that every
 * transaction the stream delivers is newer).
 *
 * A table that joins the publication later is copied alone, in the snapshot of a temporary slot made for
 * that purpose (dropped with its connection at the end): the pipeline's own slot keeps its place, and the
 * stream skips the table's transactions up to the temporary slot's consistent point, which the copy holds.
 */
import pg from "pg";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createWriteStream } from "node:fs";
import { quoteIdent, type Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { parseLsn } from "./lsn.ts";
import type { BatchUploads } from "./s3.ts";
import { tableId, type TableInfo } from "./schema.ts";
import { qualified } from "./targets/merge_sql.ts";
import type { Target } from "./targets/target.ts";

/** What {@linkcode runSnapshot} needs. */
export interface SnapshotOptions {
  pipeline: string;
  sourceUrl: string;
  source: Sql;
  /** The slot to create; `temporary`: a slot that only serves this copy (see above). */
  slot: string;
  temporary?: boolean;
  tables: TableInfo[];
  target: Target;
  uploads: BatchUploads;
  bucket: string;
  spoolDir: string;
  log: Logger;
  /** Aborts the snapshot: the slot's creation or the copy under way fails, and no further table starts. */
  signal?: AbortSignal;
  /** Called as rows are copied (for control rows and the terminal bar). */
  onProgress?: (table: string, rows: number, total: number, done: boolean) => void | Promise<void>;
}

/** A terminal progress bar line, such as `[#########-----------]  45% public.items 4,500/10,000`. */
export function progressBar(label: string, done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.min(1, done / total) : 1;
  const n = Math.round(f * width);
  return `[${"#".repeat(n)}${"-".repeat(width - n)}] ${String(Math.round(f * 100)).padStart(3)}% ${label} ` +
    `${done.toLocaleString("en-US")}/${total.toLocaleString("en-US")}`;
}

/** A slot just made with an exported snapshot, its connection held open so that tables can be copied in it. */
export interface OpenSnapshot {
  /** The slot's consistent point: the copies hold every transaction before it. */
  point: bigint;
  /** Copies `tables` in the snapshot and loads each into the target with the applied LSN `point - 1`. */
  copy(tables: TableInfo[]): Promise<void>;
  /** Ends the connection (a temporary slot goes with it). */
  close(): Promise<void>;
}

/** Creates the slot with an exported snapshot (see {@linkcode OpenSnapshot}). */
export async function openSnapshot(o: Omit<SnapshotOptions, "tables">): Promise<OpenSnapshot> {
  const repl = new pg.Client({ connectionString: o.sourceUrl, replication: "database" } as pg.ClientConfig);
  // Errors surface through the awaited calls below; a late one from a dying connection is ignored here.
  repl.on("error", () => {});
  o.signal?.throwIfAborted();
  await repl.connect();
  // Slot creation waits for every running transaction to end: a stop must not wait with it.
  const closeRepl = () => void repl.end().catch(() => {});
  o.signal?.addEventListener("abort", closeRepl, { once: true });
  const close = async () => {
    o.signal?.removeEventListener("abort", closeRepl);
    await repl.end().catch(() => {});
  };
  try {
    o.signal?.throwIfAborted();
    const res = await repl.query(
      `CREATE_REPLICATION_SLOT ${quoteIdent(o.slot)}${
        o.temporary ? " TEMPORARY" : ""
      } LOGICAL pgoutput (SNAPSHOT 'export')`,
    );
    const { consistent_point, snapshot_name } = res.rows[0] as {
      consistent_point: string;
      snapshot_name: string;
    };
    if (!/^[0-9A-F-]+$/i.test(snapshot_name)) {
      throw new Error("Cannot use the exported snapshot: unexpected name");
    }
    const point = parseLsn(consistent_point);
    o.log.info("slot created", { slot: o.slot, consistent_point });
    return { point, copy: (tables) => copyTables(o, tables, point, consistent_point, snapshot_name), close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Creates the slot with an exported snapshot and loads the tables from it. Returns the consistent point. */
export async function runSnapshot(o: SnapshotOptions): Promise<bigint> {
  const snap = await openSnapshot(o);
  try {
    await snap.copy(o.tables);
    return snap.point;
  } finally {
    await snap.close();
  }
}

async function copyTables(
  o: Omit<SnapshotOptions, "tables">,
  tables: TableInfo[],
  point: bigint,
  consistentPoint: string,
  snapshotName: string,
): Promise<void> {
  await Deno.mkdir(o.spoolDir, { recursive: true });
  for (const t of tables) {
    o.signal?.throwIfAborted();
    const id = tableId(t);
    const path = join(o.spoolDir, `snapshot-${id.replace(/[^A-Za-z0-9_.-]/g, "_")}.csv`);
    let rows = 0;
    let total = 0;
    await o.source.begin("isolation level repeatable read read only", async (tx) => {
      // The snapshot name was checked above; SET TRANSACTION SNAPSHOT takes no parameters.
      await tx.unsafe(`set transaction snapshot '${snapshotName}'`);
      const [c] = await tx.unsafe(`select count(*)::bigint as n from ${qualified(t.schema, t.name)}`);
      total = Number(c.n);
      await o.onProgress?.(id, 0, total, false);
      const cols = t.columns.map((c) => quoteIdent(c.name)).join(", ");
      const readable = await tx.unsafe(
        `copy (select ${cols} from ${
          qualified(t.schema, t.name)
        }) to stdout (format csv, null '\\N', force_quote *)`,
      ).readable();
      // Rows are counted for the progress bar only: a newline inside a quoted value may count twice,
      // so the figure is capped at the exact total taken in the same snapshot.
      let lastReport = -Infinity;
      const counter = new Transform({
        transform(chunk: Uint8Array, _enc, cb) {
          for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) rows++;
          if (performance.now() - lastReport > 250) {
            lastReport = performance.now();
            void o.onProgress?.(id, Math.min(rows, total), total, false);
          }
          cb(null, chunk);
        },
      });
      o.log.debug("snapshot copy started", { table: id });
      await pipeline(readable, counter, createWriteStream(path), { signal: o.signal });
      o.log.debug("snapshot copy done", { table: id });
    });
    const key = `${o.pipeline}/snapshot/${id}/${consistentPoint.replace("/", "-")}.csv`;
    await o.uploads.file(o.bucket, key, path);
    o.log.debug("snapshot uploaded", { table: id });
    const size = (await Deno.stat(path)).size;
    await o.target.ensureTable(t);
    await o.target.load({
      pipeline: o.pipeline,
      bucket: o.bucket,
      table: t,
      kind: "snapshot",
      truncate: true,
      segments: [{ key, columns: t.columns, rows: total, bytes: size }],
      lsn: point - 1n,
    });
    await Deno.remove(path).catch(() => {});
    await o.onProgress?.(id, total, total, true);
  }
}
