/**
 * The batch being built, on disk: one CSV file per table (a new one when the table's columns change),
 * written through a small buffer. Memory stays bounded whatever the size of a transaction or a batch:
 * only the write buffer and the counters live in memory; the net effect per key is computed by the
 * target's merge, not here.
 */
import { join } from "node:path";
import { csvLine } from "./csv.ts";
import type { Segment } from "./targets/target.ts";
import type { Column, TableInfo } from "./schema.ts";

const FLUSH_AT = 256 * 1024;
const KEY_TRACK_LIMIT = 200_000;
const encoder = new TextEncoder();

interface OpenSegment {
  unchanged: Set<number>;
  path: string;
  file: Deno.FsFile;
  columns: Column[];
  rows: number;
  bytes: number;
}

/** The spooled changes of one table in one batch. */
export class TableSpool {
  table: TableInfo;
  truncate = false;
  /**
   * Keys written so far, to know whether every key occurs once in the batch (then the target can skip
   * its keep-the-last-row-per-key step). Tracking stops, answering "maybe not", past `KEY_TRACK_LIMIT`.
   */
  #keys: Set<string> | undefined = new Set();
  /** Every row since the last truncate is an insert (see `insertsOnly`). */
  #insertsOnly = true;
  #keyIdx: number[];
  readonly segments: OpenSegment[] = [];
  #buf = "";
  #n = 0;
  readonly #dir: string;
  readonly #slug: string;

  constructor(dir: string, table: TableInfo) {
    this.#dir = dir;
    this.table = table;
    this.#keyIdx = table.key.map((k) => table.columns.findIndex((c) => c.name === k));
    this.#slug = `${table.schema}.${table.name}`.replace(/[^A-Za-z0-9_.-]/g, "_");
  }

  /** Rows written since the last truncate. */
  get rows(): number {
    return this.segments.reduce((a, s) => a + s.rows, 0);
  }

  async #current(): Promise<OpenSegment> {
    const last = this.segments.at(-1);
    if (last && last.columns === this.table.columns) return last;
    await this.#flush();
    const path = join(this.#dir, `${this.#slug}.${++this.#n}.csv`);
    const seg = {
      path,
      file: await Deno.open(path, { write: true, create: true, truncate: true }),
      columns: this.table.columns,
      rows: 0,
      bytes: 0,
      unchanged: new Set<number>(),
    };
    this.segments.push(seg);
    return seg;
  }

  async #flush(): Promise<void> {
    const last = this.segments.at(-1);
    if (!last || !this.#buf) return;
    const bytes = encoder.encode(this.#buf);
    this.#buf = "";
    let off = 0;
    while (off < bytes.length) off += await last.file.write(bytes.subarray(off));
    last.bytes += bytes.length;
  }

  /**
   * Appends one change row. `values` follow `table.columns`; `undefined` marks an unchanged TOAST value.
   * Returns a promise only when it has to wait for the disk (a new file, or a full buffer).
   */
  write(seq: number, op: "I" | "U" | "D", values: (string | null | undefined)[]): Promise<void> | undefined {
    const last = this.segments.at(-1);
    if (last && last.columns === this.table.columns) return this.#append(last, seq, op, values);
    return this.#current().then((seg) => this.#append(seg, seq, op, values));
  }

  #append(
    seg: OpenSegment,
    seq: number,
    op: "I" | "U" | "D",
    values: (string | null | undefined)[],
  ): Promise<void> | undefined {
    let unchanged = "";
    for (let i = 0; i < values.length; i++) {
      if (values[i] === undefined) {
        unchanged += `${i},`;
        seg.unchanged.add(i);
      }
    }
    if (op !== "I") this.#insertsOnly = false;
    if (this.#keys) {
      let k = "";
      for (const i of this.#keyIdx) k += (values[i] ?? "\u0000") + "\u0001";
      if (this.#keys.has(k) || this.#keys.size >= KEY_TRACK_LIMIT || this.#keyIdx.includes(-1)) {
        this.#keys = undefined;
      } else this.#keys.add(k);
    }
    this.#buf += csvLine([String(seq), op, unchanged ? "," + unchanged : "-", ...values]);
    seg.rows++;
    return this.#buf.length >= FLUSH_AT ? this.#flush() : undefined;
  }

  /**
   * True when every row since the last truncate is an insert. The target then holds none of these keys
   * (it mirrors the source as of the batch's start, where they did not exist), so the rows can be
   * appended without a merge.
   */
  get insertsOnly(): boolean {
    return this.#insertsOnly;
  }

  /** True when every row of the batch has its own key (so far as tracked). */
  get distinctKeys(): boolean {
    return this.#keys !== undefined;
  }

  /** A TRUNCATE: what was spooled before it no longer matters. */
  async truncateAll(): Promise<void> {
    this.#buf = "";
    this.#keys = new Set();
    this.#insertsOnly = true;
    for (const s of this.segments.splice(0)) {
      s.file.close();
      await Deno.remove(s.path).catch(() => {});
    }
    this.truncate = true;
  }

  /** Flushes and closes the files; returns them as segments (key left empty for the uploader). */
  async close(): Promise<(Segment & { path: string })[]> {
    await this.#flush();
    for (const s of this.segments) s.file.close();
    return this.segments.filter((s) => s.rows > 0).map((s) => ({
      key: "",
      path: s.path,
      columns: s.columns,
      rows: s.rows,
      bytes: s.bytes,
      unchanged: [...s.unchanged],
    }));
  }
}

/** A batch: the spools of the tables it touched, and the positions it covers. */
export class BatchSpool {
  readonly dir: string;
  readonly tables = new Map<string, TableSpool>();
  rows = 0;
  seq = 0;
  transactions = 0;
  /** Commit LSN of the last transaction in the batch (the tables' applied LSN after the load). */
  lastCommitLsn = 0n;
  /** End LSN of the last transaction (what the slot is acknowledged to after the load). */
  endLsn = 0n;
  /** Source commit time (ms) of the first transaction, for lag in seconds. */
  firstCommitMs?: number;
  readonly createdAt = Date.now();

  /** `seq` continues from the previous batch, so batches loaded together keep their order. */
  constructor(dir: string, seq = 0) {
    this.dir = dir;
    this.seq = seq;
  }

  /** The spool of `table` (created on first use). */
  spool(id: string, table: TableInfo): TableSpool {
    let s = this.tables.get(id);
    if (!s) {
      s = new TableSpool(this.dir, table);
      this.tables.set(id, s);
    }
    return s;
  }

  /** Removes the batch's folder. */
  async discard(): Promise<void> {
    for (const t of this.tables.values()) {
      for (const s of t.segments) {
        try {
          s.file.close();
        } catch { /* closed */ }
      }
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
