/**
 * The batch being built: one file per table (a new one when the table's columns change). A file is kept
 * in memory while the batches of the process hold less than their shared {@linkcode MemoryBudget}, and
 * goes to disk once it does not fit (with what it had so far), written through a small buffer from then
 * on. So memory stays bounded whatever the size of a transaction or a batch, and the usual small batch
 * costs no file at all: on some file systems creating a file costs the kernel as much as writing a
 * megabyte, and a batch made several (a file and its plain twin per table). The net effect per key is
 * computed by the target's merge, not here.
 *
 * Rows are written as bytes straight from the replication message ({@linkcode TableSpool.writeTuple}):
 * the format is the one `csvLine()` writes (every value quoted, NULL the bare `\N`).
 *
 * While every row of a table is an insert, each file also gets a plain twin: the same rows without the
 * change columns, which a target can copy straight into the table (an inserts-only batch needs no
 * merge). Writing it costs one copy of each row's bytes; taking the change columns off when loading
 * would cost a scan of every byte. The twin is dropped (and its files removed) at the first row that is
 * not an insert, and by the table whose row takes a batch's twins past {@linkcode PLAIN_TWIN_LIMIT} bytes, so
 * that a huge bulk load does not take twice its size on disk (the target then strips the change columns).
 *
 * In a `binary` session the files are `COPY … (FORMAT binary)` instead ({@linkcode BINARY_HEADER}): the
 * change columns `_seq` (int8), `_op` and `_unchanged` (text), then each value as the message holds it
 * (a length, then its type's send output: the very layout of a binary COPY field). A file's columns then
 * also have their wire types (`Segment.wire`, the relation message's type oids), and a new file starts
 * when they change.
 */
import { join } from "node:path";
import { writeAll } from "../../shared/io.ts";
import { KIND_BINARY, KIND_NULL, KIND_TEXT, KIND_UNCHANGED, TextFallback, type Tuple } from "./pgoutput.ts";
import type { Segment } from "./targets/target.ts";
import { type Column, columnNum, type TableInfo } from "./schema.ts";

const FLUSH_AT = 512 * 1024;
/** The default of the memory budget that the batches of a process share (see the top of this file). */
export const SPOOL_MEMORY_BYTES = 64 * 1024 * 1024;

/** Bytes of batch files that the batches sharing this may still keep in memory. */
export interface MemoryBudget {
  left: number;
  /** Files that went to disk because they did not fit. */
  spilled?: number;
}
/** Bytes of plain twins a batch may hold on disk (see above). */
export const PLAIN_TWIN_LIMIT = 256 * 1024 * 1024;
const KEY_TRACK_LIMIT = 200_000;
const QUOTE = 0x22;
const COMMA = 0x2c;
const NULL_FIELD = [0x5c, 0x4e]; // \N

/** The batch file format: CSV (see `csv.ts`), or Postgres's binary COPY format. */
export type FileFormat = "csv" | "binary";

/** A binary COPY file's header: signature, flags (none), header extension length (none). */
export const BINARY_HEADER = new Uint8Array([
  ...new TextEncoder().encode("PGCOPY\n"),
  0xff,
  0x0d,
  0x0a,
  0x00,
  ...new Uint8Array(8),
]);
/** A binary COPY file's trailer: a field count of -1. */
const BINARY_TRAILER = new Uint8Array([0xff, 0xff]);
/** Type oids of int2, int4 and int8, whose binary values the key tracking reads as numbers. */
const INT_OIDS = new Set([21, 23, 20]);

/** A change row as {@linkcode TableSpool.writeTuple} takes it: sequence, op, message, tuple, message length. */
type RowArgs = [seq: number, op: "I" | "U" | "D", msg: Uint8Array, t: Tuple, size: number];
/** Appends a row to a segment (the binary or the CSV writer). */
type AppendRow = (this: TableSpool, seg: OpenSegment, ...row: RowArgs) => Promise<void> | undefined;

interface OpenSegment {
  unchanged: Set<number>;
  /** Where the file is, or goes if it has to leave memory. */
  path: string;
  /** The file, once the segment is on disk (none while its bytes are in memory). */
  file?: Deno.FsFile;
  /** The bytes of an ended segment kept in memory. */
  data?: Uint8Array;
  /** Bytes of the memory budget the segment holds (its own and its twin's). */
  held: number;
  columns: Column[];
  /** Wire type oids of the columns (binary files). */
  wire?: number[];
  rows: number;
  bytes: number;
  /** The plain twin (see above), while every row is an insert: on disk with its segment, or in memory. */
  plain?: { path: string; file?: Deno.FsFile; data?: Uint8Array; bytes: number };
}

/**
 * The value of the ASCII integer at `msg[start..start+len)` when it is written the one way Postgres
 * prints an integer (`0`, or an optional `-` then digits without a leading zero) and fits a double
 * exactly; else undefined.
 */
export function integerKey(msg: Uint8Array, start: number, len: number): number | undefined {
  if (len === 0 || len > 15) return undefined;
  let i = start;
  const end = start + len;
  const negative = msg[i] === 0x2d;
  if (negative) i++;
  if (i === end || (msg[i] === 0x30 && (end - i > 1 || negative))) return undefined;
  let v = 0;
  for (; i < end; i++) {
    const d = msg[i] - 0x30;
    if (d < 0 || d > 9) return undefined;
    v = v * 10 + d;
  }
  return negative ? -v : v;
}

/**
 * The value of the big-endian two's complement integer of `len` (2, 4 or 8) bytes at `msg[start]` when it
 * fits a double exactly; else undefined. The same answer as {@linkcode integerKey} of its text.
 */
export function binaryIntegerKey(msg: Uint8Array, start: number, len: number): number | undefined {
  if (len === 2) return ((msg[start] << 24) | (msg[start + 1] << 16)) >> 16;
  const hi = (msg[start] << 24) | (msg[start + 1] << 16) | (msg[start + 2] << 8) | msg[start + 3];
  if (len === 4) return hi;
  if (len !== 8 || hi > 0x1fffff || hi < -0x200000) return undefined;
  const lo = ((msg[start + 4] << 24) | (msg[start + 5] << 16) | (msg[start + 6] << 8) | msg[start + 7]) >>> 0;
  const v = hi * 0x100000000 + lo;
  // integerKey reads at most 15 characters of text
  return v < 1e15 && v > -1e14 ? v : undefined;
}

/**
 * The keys of a batch's rows, to tell whether one repeats. Integer keys that come in increasing order (a
 * serial key's inserts, an update of a range in key order) go to a sorted list, where a key higher than
 * its last cannot be a repeat; only the others go to a hash set.
 */
export class KeySet {
  /** Increasing integer keys; every integer in `#other` is below the last. */
  readonly #run: number[] = [];
  readonly #other = new Set<string | number>();
  /** Lowest and highest integer key, and how many keys are not integers. */
  #lo = Infinity;
  #hi = -Infinity;
  #strings = 0;

  get size(): number {
    return this.#run.length + this.#other.size;
  }

  /** Adds `k`; false when it was there already. */
  add(k: string | number): boolean {
    if (typeof k === "number") {
      const run = this.#run;
      if (run.length === 0 || k > run[run.length - 1]) {
        run.push(k);
        if (k < this.#lo) this.#lo = k;
        this.#hi = k;
        return true;
      }
      if (this.#inRun(k) || this.#other.has(k)) return false;
      if (k < this.#lo) this.#lo = k;
    } else {
      if (this.#other.has(k)) return false;
      this.#strings++;
    }
    this.#other.add(k);
    return true;
  }

  has(k: string | number): boolean {
    return (typeof k === "number" && this.#inRun(k)) || this.#other.has(k);
  }

  /** True when no key is in both. */
  disjoint(o: KeySet): boolean {
    const numbersApart = this.#hi < o.#lo || o.#hi < this.#lo;
    if (numbersApart && (this.#strings === 0 || o.#strings === 0)) return true;
    const [small, big] = this.size <= o.size ? [this, o] : [o, this];
    for (const k of small.#run) if (big.has(k)) return false;
    for (const k of small.#other) if (big.has(k)) return false;
    return true;
  }

  #inRun(k: number): boolean {
    const run = this.#run;
    let lo = 0, hi = run.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = run[mid];
      if (v === k) return true;
      if (v < k) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }
}

/** What is left of a batch's {@linkcode PLAIN_TWIN_LIMIT}, shared by its tables. */
interface TwinBudget {
  left: number;
}

/** `buf` with room for `need` bytes, its first `len` kept (a new, larger buffer when it has not). */
function withRoom(buf: Uint8Array<ArrayBuffer>, len: number, need: number): Uint8Array<ArrayBuffer> {
  if (need <= buf.length) return buf;
  const grown = new Uint8Array(Math.max(need, FLUSH_AT + 64 * 1024, buf.length * 2));
  grown.set(buf.subarray(0, len));
  return grown;
}

/** The spooled changes of one table in one batch. */
export class TableSpool {
  #table: TableInfo;
  truncate = false;
  /**
   * Keys written so far, to know whether every key occurs once in the batch (then the target can skip
   * its keep-the-last-row-per-key step). Tracking stops, answering "maybe not", past `KEY_TRACK_LIMIT`.
   */
  #keys: KeySet | undefined = new KeySet();
  /** Every row since the last truncate is an insert (see `insertsOnly`). */
  #insertsOnly = true;
  #keyIdx: number[];
  readonly segments: OpenSegment[] = [];
  #buf = new Uint8Array(0);
  #len = 0;
  /**
   * The buffer's length at which the last segment's bytes are written out (on disk), or taken from the
   * memory budget (in memory).
   */
  #flushAt = FLUSH_AT;
  /** The plain twin's write buffer (bytes for the last segment's `plain` file). */
  #plainBuf = new Uint8Array(0);
  #plainLen = 0;
  /** Whether new segments get a plain twin: every row an insert, and the twins under the limit so far. */
  #plainOn = true;
  /** Bytes of this table's plain twins, taken from the batch's budget. */
  #plainBytes = 0;
  /** Removals of dropped twins' files. */
  #removing: Promise<void>[] = [];
  #n = 0;
  readonly #dir: string;
  /** Makes the folder for the files (when a file is first needed). */
  readonly #makeDir: () => Promise<unknown>;
  readonly #slug: string;

  readonly #budget: TwinBudget;
  /** Segments start in memory while this has room (none: always on disk). */
  readonly #memory: MemoryBudget | undefined;
  readonly format: FileFormat;
  /** Wire type oids of the rows being written (binary), see {@linkcode wire}. */
  #wire: number[] | undefined;
  /** The key columns' wire types when the key tracking started (binary). */
  #keyWire: string | undefined;

  /** The files go in `dir`, which `makeDir` makes when the first one is needed. */
  constructor(
    dir: string,
    table: TableInfo,
    budget: TwinBudget = { left: PLAIN_TWIN_LIMIT },
    format: FileFormat = "csv",
    memory?: MemoryBudget,
    makeDir: () => Promise<unknown> = () => Deno.mkdir(dir, { recursive: true }),
  ) {
    this.#dir = dir;
    this.#makeDir = makeDir;
    this.#budget = budget;
    this.#memory = memory;
    this.format = format;
    this.#table = table;
    this.#keyIdx = TableSpool.#keyIndexes(table);
    this.#slug = `${table.schema}.${table.name}`.replace(/[^A-Za-z0-9_.-]/g, "_");
  }

  static #keyIndexes(table: TableInfo): number[] {
    return table.key.map((k) => table.columns.findIndex((c) => c.name === k));
  }

  /** The table as the rows being written have it (a change of its columns starts a new file). */
  get table(): TableInfo {
    return this.#table;
  }

  set table(table: TableInfo) {
    // Keys seen under another key say nothing about the new one: stop tracking (answer "maybe not").
    if (table.key.join("\u0000") !== this.#table.key.join("\u0000")) this.#keys = undefined;
    this.#table = table;
    // The key's place in the rows may have moved (a column dropped before it).
    this.#keyIdx = TableSpool.#keyIndexes(table);
  }

  /**
   * The wire types (the relation message's type oids) of the rows that follow, in a binary session: set
   * before each row (a new array when they change, which starts a new file).
   */
  set wire(wire: number[]) {
    if (wire === this.#wire) return;
    this.#wire = wire;
    // A loop rather than a closure: this setter runs for every row, and a closure would cost each call a
    // context for the `wire` it captures.
    let sig = "";
    for (let j = 0; j < this.#keyIdx.length; j++) sig += (j ? "," : "") + (wire[this.#keyIdx[j]] ?? "");
    // Keys seen as values of other types may not compare as bytes: stop tracking (answer "maybe not").
    if (this.#keyWire !== undefined && sig !== this.#keyWire) this.#keys = undefined;
    this.#keyWire = sig;
  }

  /** Rows written since the last truncate. */
  get rows(): number {
    return this.segments.reduce((a, s) => a + s.rows, 0);
  }

  async #current(): Promise<OpenSegment> {
    const last = this.segments.at(-1);
    if (last && last.columns === this.#table.columns && last.wire === this.#wire) return last;
    const binary = this.format === "binary";
    if (binary && !this.#wire) {
      throw new Error("Cannot write a binary batch file: the row's types are unknown");
    }
    if (binary && this.#wire!.length !== this.#table.columns.length) {
      // The stream's columns are not the table's as known (a stream behind a column change of a table that
      // just joined): text files load by name and number whatever the types.
      throw new TextFallback(
        `The stream's columns of ${this.#table.schema}.${this.#table.name} are not its known ones`,
      );
    }
    if (last && binary) this.#endBinary(last);
    if (last) await this.#end(last);
    const ext = binary ? "pgcopy" : "csv";
    const path = join(this.#dir, `${this.#slug}.${++this.#n}.${ext}`);
    const seg: OpenSegment = {
      path,
      columns: this.#table.columns,
      ...(binary ? { wire: this.#wire } : {}),
      rows: 0,
      bytes: 0,
      held: 0,
      unchanged: new Set<number>(),
    };
    if (this.#plainOn) {
      seg.plain = { path: join(this.#dir, `${this.#slug}.${this.#n}.plain.${ext}`), bytes: 0 };
    }
    if (!this.#memory) await this.#toDisk(seg);
    this.#flushAt = FLUSH_AT;
    this.segments.push(seg);
    if (binary) {
      this.#reserve(BINARY_HEADER.length).set(BINARY_HEADER, this.#len);
      this.#len += BINARY_HEADER.length;
      if (seg.plain) this.#plainPut(BINARY_HEADER);
    }
    return seg;
  }

  /** Creates the files of `seg`, which had none (its bytes so far are still in the buffers). */
  async #toDisk(seg: OpenSegment): Promise<void> {
    const open = (path: string) => Deno.open(path, { write: true, create: true, truncate: true });
    if (this.#memory) {
      this.#memory.left += seg.held;
      this.#memory.spilled = (this.#memory.spilled ?? 0) + 1;
    }
    seg.held = 0;
    await this.#makeDir();
    seg.file = await open(seg.path);
    if (seg.plain) seg.plain.file = await open(seg.plain.path);
  }

  /**
   * Takes the bytes that `seg` (the last segment, in memory) has in the buffers from the memory budget;
   * false when they do not fit.
   */
  #keep(seg: OpenSegment): boolean {
    const want = this.#len + this.#plainLen;
    if (want - seg.held > this.#memory!.left) return false;
    this.#memory!.left -= want - seg.held;
    seg.held = want;
    return true;
  }

  /**
   * Ends `seg`, the last segment: its buffered bytes written to its files, or handed to it in memory (the
   * buffers start afresh), or, when they do not fit the memory budget, its files created and written.
   */
  async #end(seg: OpenSegment): Promise<void> {
    if (!seg.file && !this.#keep(seg)) await this.#toDisk(seg);
    if (seg.file) return await this.#flush();
    seg.data = this.#handOver(this.#buf, this.#len, (b) => this.#buf = b);
    seg.bytes = this.#len;
    if (seg.plain) {
      seg.plain.data = this.#handOver(this.#plainBuf, this.#plainLen, (b) => this.#plainBuf = b);
      seg.plain.bytes = this.#plainLen;
    }
    this.#len = this.#plainLen = 0;
  }

  /**
   * The first `len` bytes of `buf` for a segment to keep. A buffer mostly empty (it grows by doubling, and
   * starts at over 512 KiB) is copied to one of their size and stays for the next segment, so that memory
   * held follows the budget; a fuller one is handed over whole and `replace` gets a fresh one.
   */
  #handOver(buf: Uint8Array, len: number, replace: (b: Uint8Array<ArrayBuffer>) => void): Uint8Array {
    if (buf.length > len + (len >> 1)) return buf.slice(0, len);
    replace(new Uint8Array(0));
    return buf.subarray(0, len);
  }

  /** Appends `bytes` to the plain twin's buffer. */
  #plainPut(bytes: Uint8Array): void {
    this.#plainBuf = withRoom(this.#plainBuf, this.#plainLen, this.#plainLen + bytes.length);
    this.#plainBuf.set(bytes, this.#plainLen);
    this.#plainLen += bytes.length;
  }

  /** Ends binary segment `seg` (the last one, whose bytes are buffered): its trailer. */
  #endBinary(seg: OpenSegment): void {
    this.#reserve(BINARY_TRAILER.length).set(BINARY_TRAILER, this.#len);
    this.#len += BINARY_TRAILER.length;
    if (seg.plain) this.#plainPut(BINARY_TRAILER);
  }

  /** Stops writing the plain twins and removes their files (in the background, until `close`). */
  #dropPlain(): void {
    this.#plainOn = false;
    for (const s of this.segments) {
      if (!s.plain) continue;
      if (s.plain.file) {
        s.plain.file.close();
        // A file left behind goes with the batch's folder.
        this.#removing.push(Deno.remove(s.plain.path).catch(() => {}));
      } else if (s.plain.data) {
        this.#memory!.left += s.plain.data.length;
        s.held -= s.plain.data.length;
      }
      s.plain = undefined;
    }
    // The last segment's twin bytes, taken from the memory budget while buffered.
    const last = this.segments.at(-1);
    if (last && !last.file && last.held > this.#len) {
      this.#memory!.left += last.held - this.#len;
      last.held = this.#len;
    }
    this.#plainLen = 0;
    this.#budget.left += this.#plainBytes; // the files are gone
    this.#plainBytes = 0;
    this.#plainBuf = new Uint8Array(0);
  }

  /**
   * Writes the buffers out to the last segment's files; for a segment in memory, takes them from the
   * memory budget instead, or when they do not fit, creates its files and writes them there.
   */
  async #flush(): Promise<void> {
    const last = this.segments.at(-1);
    if (!last || !this.#len) return;
    if (!last.file) {
      if (this.#keep(last)) {
        this.#flushAt = this.#len + FLUSH_AT;
        return;
      }
      await this.#toDisk(last);
    }
    this.#flushAt = FLUSH_AT;
    await writeAll(last.file!, this.#buf.subarray(0, this.#len));
    last.bytes += this.#len;
    this.#len = 0;
    if (last.plain && this.#plainLen) {
      await writeAll(last.plain.file!, this.#plainBuf.subarray(0, this.#plainLen));
      last.plain.bytes += this.#plainLen;
      this.#plainLen = 0;
    }
    // A huge row grew the buffers: do not keep them.
    if (this.#buf.length > 4 * FLUSH_AT) this.#buf = new Uint8Array(0);
    if (this.#plainBuf.length > 4 * FLUSH_AT) this.#plainBuf = new Uint8Array(0);
  }

  /** Room for `more` bytes after what is buffered. */
  #reserve(more: number): Uint8Array {
    return this.#buf = withRoom(this.#buf, this.#len, this.#len + more);
  }

  /**
   * Appends one change row: op `I`/`U` write `tuple` (an unchanged TOAST value is marked in `_unchanged`),
   * `D` writes it with unchanged values as NULL. `tuple` is a view of the message in `msg` (its offsets
   * count from the start of `msg`, which may hold other messages too: `size` is the message's length)
   * whose columns follow `table.columns`. Returns a promise only when it has to wait for the disk (a new
   * file, or a full buffer); `tuple` must not change until then.
   */
  writeTuple(
    seq: number,
    op: "I" | "U" | "D",
    msg: Uint8Array,
    tuple: Tuple,
    size = msg.length,
  ): Promise<void> | undefined {
    const last = this.segments.at(-1);
    const append = this.format === "binary" ? this.#appendBinary : this.#append;
    if (last && last.columns === this.#table.columns && last.wire === this.#wire) {
      return append.call(this, last, seq, op, msg, tuple, size);
    }
    // In a function of its own: a closure here would cost every call a context for what it captures.
    return this.#appendToNew(append, seq, op, msg, tuple, size);
  }

  async #appendToNew(append: AppendRow, ...row: RowArgs): Promise<void> {
    await append.call(this, await this.#current(), ...row);
  }

  /**
   * Writes the `_unchanged` marks of a row at `buf[p]`: `,3,7,` (the numbers of its unchanged TOAST
   * columns, also added to `seg.unchanged`) or `-`. Returns the offset after them.
   */
  #unchangedMarks(buf: Uint8Array, p: number, seg: OpenSegment, op: string, t: Tuple, n: number): number {
    let marked = false;
    if (op !== "D") {
      for (let i = 0; i < n; i++) {
        if (t.kind[i] !== KIND_UNCHANGED) continue;
        if (!marked) buf[p++] = COMMA;
        marked = true;
        const num = columnNum(seg.columns, i);
        seg.unchanged.add(num);
        const d = String(num);
        for (let j = 0; j < d.length; j++) buf[p++] = d.charCodeAt(j);
        buf[p++] = COMMA;
      }
    }
    if (!marked) buf[p++] = 0x2d; // -
    return p;
  }

  /**
   * Ends a row written into the buffer up to `p`: its plain twin (the bytes from `from`, after a binary
   * row's field count `fields` when given), the inserts-only state, the key tracking, and a flush when the
   * buffer is full.
   */
  #endRow(
    seg: OpenSegment,
    op: string,
    msg: Uint8Array,
    t: Tuple,
    from: number,
    p: number,
    fields?: number,
  ): Promise<void> | undefined {
    this.#len = p;
    if (op !== "I") {
      this.#insertsOnly = false;
      if (this.#plainOn) this.#dropPlain();
    }
    if (seg.plain) {
      const head = fields === undefined ? 0 : 2;
      const size = head + p - from;
      this.#plainBytes += size;
      if ((this.#budget.left -= size) < 0) this.#dropPlain();
      else {
        const pb = this.#plainBuf = withRoom(this.#plainBuf, this.#plainLen, this.#plainLen + size);
        if (fields !== undefined) {
          pb[this.#plainLen] = fields >> 8;
          pb[this.#plainLen + 1] = fields & 0xff;
        }
        // A short row by hand: cheaper than a view of it (an allocation per row) for `set`.
        if (p - from <= 128) {
          const buf = this.#buf;
          for (let j = from, w = this.#plainLen + head; j < p; j++, w++) pb[w] = buf[j];
        } else pb.set(this.#buf.subarray(from, p), this.#plainLen + head);
        this.#plainLen += size;
      }
    }
    if (this.#keys) this.#trackKey(msg, t);
    seg.rows++;
    return this.#len >= this.#flushAt ? this.#flush() : undefined;
  }

  /** {@linkcode writeTuple} for a binary file (see the top of this file). */
  #appendBinary(
    seg: OpenSegment,
    seq: number,
    op: "I" | "U" | "D",
    msg: Uint8Array,
    t: Tuple,
    size: number,
  ): Promise<void> | undefined {
    const ncols = seg.columns.length;
    const n = Math.min(t.n, ncols);
    // Worst case: the message's bytes (the values with their lengths are in it), a NULL's length per
    // column, the change columns and the unchanged marks.
    const buf = this.#reserve(64 + ncols * 12 + size);
    let p = this.#len;
    const fields = 3 + ncols;
    buf[p++] = fields >> 8;
    buf[p++] = fields & 0xff;
    // _seq: int8
    buf[p++] = 0, buf[p++] = 0, buf[p++] = 0, buf[p++] = 8;
    const hi = Math.floor(seq / 0x100000000);
    const lo = seq >>> 0;
    buf[p++] = hi >>> 24, buf[p++] = (hi >>> 16) & 0xff, buf[p++] = (hi >>> 8) & 0xff, buf[p++] = hi & 0xff;
    buf[p++] = lo >>> 24, buf[p++] = (lo >>> 16) & 0xff, buf[p++] = (lo >>> 8) & 0xff, buf[p++] = lo & 0xff;
    // _op: one character
    buf[p++] = 0, buf[p++] = 0, buf[p++] = 0, buf[p++] = 1;
    buf[p++] = op.charCodeAt(0);
    // _unchanged: ",3,7," (the columns' numbers) or "-"; its length is written once known
    const lenAt = p;
    p = this.#unchangedMarks(buf, p + 4, seg, op, t, n);
    const ulen = p - lenAt - 4;
    buf[lenAt] = 0, buf[lenAt + 1] = 0, buf[lenAt + 2] = ulen >> 8, buf[lenAt + 3] = ulen & 0xff;
    const data = p;
    for (let i = 0; i < ncols; i++) {
      const k = i < n ? t.kind[i] : KIND_NULL;
      if (k === KIND_BINARY) {
        // The length and the value, as the message has them.
        const from = t.start[i] - 4;
        const end = t.start[i] + t.len[i];
        if (end - from <= 64) { for (let j = from; j < end; j++) buf[p++] = msg[j]; }
        else {
          buf.set(msg.subarray(from, end), p);
          p += end - from;
        }
      } else if (k === KIND_NULL || k === KIND_UNCHANGED) {
        buf[p++] = 0xff, buf[p++] = 0xff, buf[p++] = 0xff, buf[p++] = 0xff;
      } else {
        throw new TextFallback(
          `Column ${
            seg.columns[i]?.name
          } of ${this.#table.schema}.${this.#table.name} came as text in a binary session`,
        );
      }
    }
    return this.#endRow(seg, op, msg, t, data, p, ncols);
  }

  #append(
    seg: OpenSegment,
    seq: number,
    op: "I" | "U" | "D",
    msg: Uint8Array,
    t: Tuple,
    size: number,
  ): Promise<void> | undefined {
    const ncols = seg.columns.length;
    const n = Math.min(t.n, ncols);
    // Worst case: every byte of the message doubled (the values are in it), quotes, commas and NULL
    // markers per column, the change columns and the unchanged marks.
    const buf = this.#reserve(64 + ncols * 16 + size * 2);
    let p = this.#len;
    // "seq","op",
    buf[p++] = QUOTE;
    let digits = 1;
    for (let x = seq; x >= 10; x = Math.floor(x / 10)) digits++;
    for (let j = digits - 1, x = seq; j >= 0; j--, x = Math.floor(x / 10)) buf[p + j] = 0x30 + (x % 10);
    p += digits;
    buf[p++] = QUOTE;
    buf[p++] = COMMA;
    buf[p++] = QUOTE;
    buf[p++] = op.charCodeAt(0);
    buf[p++] = QUOTE;
    buf[p++] = COMMA;
    // "_unchanged": ",3,7," (the columns' numbers) or "-"
    buf[p++] = QUOTE;
    p = this.#unchangedMarks(buf, p, seg, op, t, n);
    buf[p++] = QUOTE;
    const data = p + 1; // the data columns start after the next comma
    for (let i = 0; i < ncols; i++) {
      buf[p++] = COMMA;
      if (i < n && t.kind[i] === KIND_TEXT) {
        buf[p++] = QUOTE;
        const end = t.start[i] + t.len[i];
        for (let j = t.start[i]; j < end; j++) {
          const c = msg[j];
          buf[p++] = c;
          if (c === QUOTE) buf[p++] = QUOTE;
        }
        buf[p++] = QUOTE;
      } else {
        buf[p++] = NULL_FIELD[0];
        buf[p++] = NULL_FIELD[1];
      }
    }
    buf[p++] = 0x0a;
    // A table without columns has no comma after the change columns: its plain row is the newline.
    return this.#endRow(seg, op, msg, t, ncols ? data : p - 1, p);
  }

  /**
   * Adds the row's key to the keys seen, or stops tracking (a repeat, too many, a key column missing).
   * A one-column key printed as a plain integer (no sign or leading zero issues: Postgres prints
   * integers one way only) is kept as a number; any other key as a string of its bytes, one char per
   * byte. Equal keys always get equal entries, different keys different ones.
   */
  #trackKey(msg: Uint8Array, t: Tuple): void {
    const keys = this.#keys!;
    const idx = this.#keyIdx;
    let entry: string | number | undefined;
    if (idx.length === 1 && idx[0] >= 0 && idx[0] < t.n) {
      const i = idx[0];
      if (t.kind[i] === KIND_TEXT) entry = integerKey(msg, t.start[i], t.len[i]);
      else if (t.kind[i] === KIND_BINARY && INT_OIDS.has(this.#wire?.[i] ?? 0)) {
        entry = binaryIntegerKey(msg, t.start[i], t.len[i]);
      }
    }
    if (entry === undefined) {
      let k = "";
      for (const i of idx) {
        if (i < 0) {
          this.#keys = undefined;
          return;
        }
        if (i < t.n && (t.kind[i] === KIND_TEXT || t.kind[i] === KIND_BINARY)) {
          const s = t.start[i];
          const end = s + t.len[i];
          for (let j = s; j < end; j += 4096) {
            k += String.fromCharCode.apply(
              null,
              msg.subarray(j, Math.min(end, j + 4096)) as unknown as number[],
            );
          }
        } else k += "\u0000";
        k += "\u0001";
      }
      entry = k;
    }
    if (keys.size >= KEY_TRACK_LIMIT || !keys.add(entry)) this.#keys = undefined;
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

  /**
   * True when every key occurs once over all of `spools` (the parts of several batches of one table
   * loaded as one): each tracked its keys, and no two share one.
   */
  static distinctAcross(spools: TableSpool[]): boolean {
    const sets: KeySet[] = [];
    for (const s of spools) {
      if (!s.#keys || s.#keyWire !== spools[0].#keyWire) return false;
      sets.push(s.#keys);
    }
    if (sets.reduce((a, k) => a + k.size, 0) > KEY_TRACK_LIMIT) return false;
    for (let i = 1; i < sets.length; i++) {
      for (let j = 0; j < i; j++) if (!sets[i].disjoint(sets[j])) return false;
    }
    return true;
  }

  /** A TRUNCATE: what was spooled before it no longer matters. */
  async truncateAll(): Promise<void> {
    this.#len = 0;
    this.#plainLen = 0;
    this.#budget.left += this.#plainBytes; // removed below
    this.#plainBytes = 0;
    this.#plainOn = true;
    this.#keys = new KeySet();
    this.#insertsOnly = true;
    this.#flushAt = FLUSH_AT;
    this.release();
    for (const s of this.segments.splice(0)) {
      if (s.file) {
        s.file.close();
        await Deno.remove(s.path).catch(() => {});
      }
      if (s.plain?.file) {
        s.plain.file.close();
        await Deno.remove(s.plain.path).catch(() => {});
      }
    }
    this.truncate = true;
  }

  /** Gives the memory budget back what the segments hold (once their bytes are no longer needed). */
  release(): void {
    for (const s of this.segments) {
      if (this.#memory) this.#memory.left += s.held;
      s.held = 0;
      s.data = undefined;
      if (s.plain) s.plain.data = undefined;
    }
  }

  /**
   * Ends the last segment and closes the files; returns the segments (key left empty for the uploader),
   * each with its file's `path` or, kept in memory, its `data`. The memory stays taken until
   * {@linkcode release}.
   */
  async close(): Promise<Segment[]> {
    const last = this.segments.at(-1);
    if (last && this.format === "binary") this.#endBinary(last);
    if (last) await this.#end(last);
    await Promise.all(this.#removing.splice(0));
    this.#buf = new Uint8Array(0);
    this.#plainBuf = new Uint8Array(0);
    for (const s of this.segments) {
      s.file?.close();
      s.plain?.file?.close();
    }
    return this.segments.filter((s) => s.rows > 0).map((s) => ({
      key: "",
      ...(s.file ? { path: s.path } : { data: s.data }),
      columns: s.columns,
      rows: s.rows,
      bytes: s.bytes,
      unchanged: [...s.unchanged],
      ...(s.wire ? { format: "binary" as const, wire: s.wire } : {}),
      ...(s.plain
        ? {
          plain: s.plain.file
            ? { path: s.plain.path, bytes: s.plain.bytes }
            : { data: s.plain.data, bytes: s.plain.bytes },
        }
        : {}),
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
  readonly createdAt = performance.now();

  readonly #twins: TwinBudget;
  readonly #memory: MemoryBudget | undefined;
  /** The folder, made when the first file needs it. */
  #made: Promise<void> | undefined;

  /**
   * `dir`: the batch's own folder (made when a file needs it, removed by {@linkcode discard}). `seq`
   * continues from the previous batch, so batches loaded together keep their order. `plainTwinLimit`: see
   * {@linkcode PLAIN_TWIN_LIMIT}. `memory`: the budget the process's batches share to keep files in memory
   * (see the top of this file); without it every file is on disk.
   */
  constructor(
    dir: string,
    seq = 0,
    o: { plainTwinLimit?: number; format?: FileFormat; memory?: MemoryBudget } = {},
  ) {
    this.dir = dir;
    this.seq = seq;
    this.#twins = { left: o.plainTwinLimit ?? PLAIN_TWIN_LIMIT };
    this.format = o.format ?? "csv";
    this.#memory = o.memory;
  }

  /** The format of the batch's files. */
  readonly format: FileFormat;

  /** The spool of `table` (created on first use). */
  spool(id: string, table: TableInfo): TableSpool {
    let s = this.tables.get(id);
    if (!s) {
      const makeDir = () => this.#made ??= Deno.mkdir(this.dir, { recursive: true });
      s = new TableSpool(this.dir, table, this.#twins, this.format, this.#memory, makeDir);
      this.tables.set(id, s);
    }
    return s;
  }

  /** Gives back the batch's memory and removes its folder. */
  async discard(): Promise<void> {
    for (const t of this.tables.values()) {
      t.release();
      for (const f of t.segments.flatMap((s) => [s.file, s.plain?.file])) {
        try {
          f?.close();
        } catch { /* closed */ }
      }
    }
    if (this.#made) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
