/**
 * The batch being built, on disk: one CSV file per table (a new one when the table's columns change),
 * written through a small buffer. Memory stays bounded whatever the size of a transaction or a batch:
 * only the write buffer and the counters live in memory; the net effect per key is computed by the
 * target's merge, not here.
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
 */
import { join } from "node:path";
import { writeAll } from "../../shared/io.ts";
import { KIND_TEXT, KIND_UNCHANGED, type Tuple } from "./pgoutput.ts";
import type { Segment } from "./targets/target.ts";
import { type Column, columnNum, type TableInfo } from "./schema.ts";

const FLUSH_AT = 512 * 1024;
/** Bytes of plain twins a batch may hold on disk (see above). */
export const PLAIN_TWIN_LIMIT = 256 * 1024 * 1024;
const KEY_TRACK_LIMIT = 200_000;
const QUOTE = 0x22;
const COMMA = 0x2c;
const NULL_FIELD = [0x5c, 0x4e]; // \N

interface OpenSegment {
  unchanged: Set<number>;
  path: string;
  file: Deno.FsFile;
  columns: Column[];
  rows: number;
  bytes: number;
  /** The plain twin (see above), while every row is an insert. */
  plain?: { path: string; file: Deno.FsFile; bytes: number };
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
  #keys: Set<string | number> | undefined = new Set();
  /** Every row since the last truncate is an insert (see `insertsOnly`). */
  #insertsOnly = true;
  #keyIdx: number[];
  readonly segments: OpenSegment[] = [];
  #buf = new Uint8Array(0);
  #len = 0;
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
  readonly #slug: string;

  readonly #budget: TwinBudget;

  constructor(dir: string, table: TableInfo, budget: TwinBudget = { left: PLAIN_TWIN_LIMIT }) {
    this.#dir = dir;
    this.#budget = budget;
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

  /** Rows written since the last truncate. */
  get rows(): number {
    return this.segments.reduce((a, s) => a + s.rows, 0);
  }

  async #current(): Promise<OpenSegment> {
    const last = this.segments.at(-1);
    if (last && last.columns === this.#table.columns) return last;
    await this.#flush();
    const path = join(this.#dir, `${this.#slug}.${++this.#n}.csv`);
    const seg: OpenSegment = {
      path,
      file: await Deno.open(path, { write: true, create: true, truncate: true }),
      columns: this.#table.columns,
      rows: 0,
      bytes: 0,
      unchanged: new Set<number>(),
    };
    if (this.#plainOn) {
      const plain = join(this.#dir, `${this.#slug}.${this.#n}.plain.csv`);
      seg.plain = {
        path: plain,
        file: await Deno.open(plain, { write: true, create: true, truncate: true }),
        bytes: 0,
      };
    }
    this.segments.push(seg);
    return seg;
  }

  /** Stops writing the plain twins and removes their files (in the background, until `close`). */
  #dropPlain(): void {
    this.#plainOn = false;
    for (const s of this.segments) {
      if (!s.plain) continue;
      s.plain.file.close();
      // A file left behind goes with the batch's folder.
      this.#removing.push(Deno.remove(s.plain.path).catch(() => {}));
      s.plain = undefined;
    }
    this.#plainLen = 0;
    this.#budget.left += this.#plainBytes; // the files are gone
    this.#plainBytes = 0;
    this.#plainBuf = new Uint8Array(0);
  }

  async #flush(): Promise<void> {
    const last = this.segments.at(-1);
    if (!last || !this.#len) return;
    await writeAll(last.file, this.#buf.subarray(0, this.#len));
    last.bytes += this.#len;
    this.#len = 0;
    if (last.plain && this.#plainLen) {
      await writeAll(last.plain.file, this.#plainBuf.subarray(0, this.#plainLen));
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
   * `D` writes it with unchanged values as NULL. `tuple` is a view of `msg` whose columns follow
   * `table.columns`. Returns a promise only when it has to wait for the disk (a new file, or a full
   * buffer); `tuple` must not change until then.
   */
  writeTuple(seq: number, op: "I" | "U" | "D", msg: Uint8Array, tuple: Tuple): Promise<void> | undefined {
    const last = this.segments.at(-1);
    if (last && last.columns === this.#table.columns) return this.#append(last, seq, op, msg, tuple);
    return this.#current().then((seg) => this.#append(seg, seq, op, msg, tuple));
  }

  #append(
    seg: OpenSegment,
    seq: number,
    op: "I" | "U" | "D",
    msg: Uint8Array,
    t: Tuple,
  ): Promise<void> | undefined {
    const ncols = seg.columns.length;
    const n = Math.min(t.n, ncols);
    // Worst case: every byte of the message doubled (the values are in it), quotes, commas and NULL
    // markers per column, the change columns and the unchanged marks.
    const buf = this.#reserve(64 + ncols * 16 + msg.length * 2);
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
    this.#len = p;
    if (op !== "I") {
      this.#insertsOnly = false;
      if (this.#plainOn) this.#dropPlain();
    }
    if (seg.plain) {
      // A table without columns has no comma after the change columns: its plain row is the newline.
      const from = ncols ? data : p - 1;
      const n = p - from;
      this.#plainBytes += n;
      if ((this.#budget.left -= n) < 0) this.#dropPlain();
      else {
        this.#plainBuf = withRoom(this.#plainBuf, this.#plainLen, this.#plainLen + n);
        this.#plainBuf.set(buf.subarray(from, p), this.#plainLen);
        this.#plainLen += n;
      }
    }
    if (this.#keys) this.#trackKey(msg, t);
    seg.rows++;
    return this.#len >= FLUSH_AT ? this.#flush() : undefined;
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
    if (idx.length === 1 && idx[0] >= 0 && idx[0] < t.n && t.kind[idx[0]] === KIND_TEXT) {
      entry = integerKey(msg, t.start[idx[0]], t.len[idx[0]]);
    }
    if (entry === undefined) {
      let k = "";
      for (const i of idx) {
        if (i < 0) {
          this.#keys = undefined;
          return;
        }
        if (i < t.n && t.kind[i] === KIND_TEXT) {
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
    if (keys.has(entry) || keys.size >= KEY_TRACK_LIMIT) this.#keys = undefined;
    else keys.add(entry);
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
    const sets: Set<string | number>[] = [];
    for (const s of spools) {
      if (!s.#keys) return false;
      sets.push(s.#keys);
    }
    if (sets.reduce((a, k) => a + k.size, 0) > KEY_TRACK_LIMIT) return false;
    for (let i = 1; i < sets.length; i++) {
      for (const k of sets[i]) {
        for (let j = 0; j < i; j++) if (sets[j].has(k)) return false;
      }
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
    this.#keys = new Set();
    this.#insertsOnly = true;
    for (const s of this.segments.splice(0)) {
      s.file.close();
      await Deno.remove(s.path).catch(() => {});
      if (s.plain) {
        s.plain.file.close();
        await Deno.remove(s.plain.path).catch(() => {});
      }
    }
    this.truncate = true;
  }

  /** Flushes and closes the files; returns them as segments (key left empty for the uploader). */
  async close(): Promise<(Segment & { path: string })[]> {
    await this.#flush();
    await Promise.all(this.#removing.splice(0));
    this.#buf = new Uint8Array(0);
    this.#plainBuf = new Uint8Array(0);
    for (const s of this.segments) {
      s.file.close();
      s.plain?.file.close();
    }
    return this.segments.filter((s) => s.rows > 0).map((s) => ({
      key: "",
      path: s.path,
      columns: s.columns,
      rows: s.rows,
      bytes: s.bytes,
      unchanged: [...s.unchanged],
      ...(s.plain ? { plain: { path: s.plain.path, bytes: s.plain.bytes } } : {}),
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

  readonly #twins: TwinBudget;

  /**
   * `seq` continues from the previous batch, so batches loaded together keep their order.
   * `plainTwinLimit`: see {@linkcode PLAIN_TWIN_LIMIT}.
   */
  constructor(dir: string, seq = 0, o: { plainTwinLimit?: number } = {}) {
    this.dir = dir;
    this.seq = seq;
    this.#twins = { left: o.plainTwinLimit ?? PLAIN_TWIN_LIMIT };
  }

  /** The spool of `table` (created on first use). */
  spool(id: string, table: TableInfo): TableSpool {
    let s = this.tables.get(id);
    if (!s) {
      s = new TableSpool(this.dir, table, this.#twins);
      this.tables.set(id, s);
    }
    return s;
  }

  /** Removes the batch's folder. */
  async discard(): Promise<void> {
    for (const t of this.tables.values()) {
      for (const f of t.segments.flatMap((s) => [s.file, s.plain?.file])) {
        try {
          f?.close();
        } catch { /* closed */ }
      }
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
