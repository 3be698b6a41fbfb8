/**
 * The stream's decoder. Row changes (insert, update, delete: nearly every message) are not decoded into
 * JavaScript values at all: they stay the bytes Postgres sent, and the spool copies each value's text
 * (or, in a binary session, its binary form) straight into the batch file ({@linkcode Tuple},
 * `TableSpool.writeTuple`). Values thus arrive exactly as Postgres printed them (a timestamp keeps its
 * microseconds), and a row costs no strings, objects or UTF-8 round trips. Every other message (begin, commit, relation, truncate…) goes through
 * pg-logical-replication's pgoutput parser, kept on text output.
 */
import { type Pgoutput, PgoutputPlugin } from "pg-logical-replication";

/** A decoded pgoutput message (the library's shapes; values are text). */
export type Message = Pgoutput.Message;
/** A relation (table) description from the stream. */
export type MessageRelation = Pgoutput.MessageRelation;
/** A pgoutput truncate message. */
export type MessageTruncate = Pgoutput.MessageTruncate;

/** `I`, `U`, `D`: the tags of the row change messages. */
export const OP_INSERT = 0x49;
/** See {@linkcode OP_INSERT}. */
export const OP_UPDATE = 0x55;
/** See {@linkcode OP_INSERT}. */
export const OP_DELETE = 0x44;

/** A row change as it came off the wire, copied out of the socket's buffer (which the client reuses). */
export interface RawChange {
  tag: "raw";
  /** {@linkcode OP_INSERT}, {@linkcode OP_UPDATE} or {@linkcode OP_DELETE}. */
  op: number;
  relationOid: number;
  /**
   * The bytes the message lies in (a slab shared with other messages): the whole pgoutput message, its
   * tag byte first, is `buf[off, off + len)`. Offsets into the message (a {@linkcode Tuple}'s) count
   * from the start of `buf`.
   */
  buf: Uint8Array;
  off: number;
  len: number;
}

/** The plugin, with its parser callable on plain bytes. */
export type StreamPlugin = PgoutputPlugin & {
  /** Decodes the message at `buf[off, off + len)` (default: all of `buf`); the bytes are not kept. */
  parseStream(buf: Uint8Array, off?: number, len?: number): StreamMessage;
};

/** What the plugin hands out per message. */
export type StreamMessage = Message | RawChange;

/** Column kinds in a pgoutput tuple. */
export const KIND_NULL = 0x6e; // 'n'
/** An unchanged TOAST value: not in the WAL, so not in the message. */
export const KIND_UNCHANGED = 0x75; // 'u'
/** A value in text form. */
export const KIND_TEXT = 0x74; // 't'
/** A value in its type's binary form (its `typsend` output), in a `binary` session. */
export const KIND_BINARY = 0x62; // 'b'

/**
 * Thrown when a `binary` session meets what it cannot write as binary batch files (a column of a type
 * without binary send and receive functions, or a user-defined type). The pipeline then starts a new
 * session in text, which replays from the slot: nothing is lost, the batch being built is thrown away.
 */
export class TextFallback extends Error {
  override name = "TextFallback";
}

const raw = (s: string) => s;
const SLAB = 256 * 1024;

function int32(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

/**
 * A pgoutput plugin for `publications`: row changes as {@linkcode RawChange}, the rest parsed (text values).
 * With `binary`, the server sends each value with its type's send function where the type has one
 * (`KIND_BINARY`), which costs it less than text output.
 */
export function textPgoutputPlugin(publications: string[], o: { binary?: boolean } = {}): StreamPlugin {
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: publications });
  if (o.binary) {
    type Client = { query(sql: string): Promise<unknown> };
    const start = plugin.start.bind(plugin) as (c: Client, slot: string, lsn: string) => Promise<unknown>;
    // The library's START_REPLICATION has no binary option: its statement, with the option added.
    (plugin as unknown as { start: typeof start }).start = (client, slot, lsn) =>
      start({ query: (sql) => client.query(sql.replace(/\)$/, ", binary 'true')")) }, slot, lsn);
  }
  const parser = (plugin as unknown as { parser: Record<string, unknown> }).parser;
  const readColumn = (parser.readRelationColumn as (r: unknown) => Record<string, unknown>).bind(parser);
  parser.readRelationColumn = (reader: unknown) => ({ ...readColumn(reader), parser: raw });
  const parse = plugin.parse.bind(plugin);
  // Messages are copied into shared slabs: one small allocation per row would cost more than the copy.
  let slab = new Uint8Array(SLAB);
  let used = 0;
  const parseStream = (buf: Uint8Array, off = 0, len = buf.length - off): StreamMessage => {
    const tag = buf[off];
    // A plain view: a Buffer's subarray goes through its species constructor, which costs.
    const from = off === 0 && len === buf.length
      ? buf
      : new Uint8Array(buf.buffer, buf.byteOffset + off, len);
    if (tag === OP_INSERT || tag === OP_UPDATE || tag === OP_DELETE) {
      if (len > SLAB / 8) {
        const own = new Uint8Array(len);
        own.set(from);
        return { tag: "raw", op: tag, relationOid: int32(own, 1), buf: own, off: 0, len };
      }
      if (used + len > SLAB) {
        slab = new Uint8Array(SLAB);
        used = 0;
      }
      // No view per message either: queued messages outlive young-generation collections, which copy
      // every object still alive.
      slab.set(from, used);
      const at = used;
      used += len;
      return { tag: "raw", op: tag, relationOid: int32(slab, at + 1), buf: slab, off: at, len };
    }
    return parse(from as Parameters<typeof parse>[0]) as Message;
  };
  (plugin as unknown as { parse: typeof parseStream }).parse = parseStream;
  return Object.assign(plugin, { parseStream });
}

/**
 * A view of one tuple (`TupleData`) of a pgoutput message: per column its kind ({@linkcode KIND_NULL},
 * {@linkcode KIND_UNCHANGED}, {@linkcode KIND_TEXT}) and where its text lies in the message. Reused from
 * message to message: nothing is allocated per row.
 */
export class Tuple {
  /** Number of columns. */
  n = 0;
  kind = new Uint8Array(16);
  start = new Int32Array(16);
  len = new Int32Array(16);

  /** Reads the tuple at `off` in `b`; returns the offset after it. */
  read(b: Uint8Array, off: number): number {
    const n = (b[off] << 8) | b[off + 1];
    off += 2;
    if (n > this.kind.length) {
      const size = Math.max(n, this.kind.length * 2);
      this.kind = new Uint8Array(size);
      this.start = new Int32Array(size);
      this.len = new Int32Array(size);
    }
    for (let i = 0; i < n; i++) {
      const k = b[off++];
      this.kind[i] = k;
      if (k === KIND_TEXT || k === KIND_BINARY) {
        const len = int32(b, off);
        off += 4;
        this.start[i] = off;
        this.len[i] = len;
        off += len;
      } else if (k === KIND_NULL || k === KIND_UNCHANGED) {
        this.start[i] = off;
        this.len[i] = 0;
      } else {
        throw new Error(`Cannot decode a pgoutput tuple: unknown column kind ${k}`);
      }
    }
    this.n = n;
    return off;
  }

  /** Column `i` of this tuple takes column `i` of `from` (both views of the same message). */
  take(i: number, from: Tuple): void {
    this.kind[i] = from.kind[i];
    this.start[i] = from.start[i];
    this.len[i] = from.len[i];
  }

  /** True when column `i` holds the same value (kind and bytes) in both tuples of message `b`. */
  same(b: Uint8Array, i: number, other: Tuple): boolean {
    if (this.kind[i] !== other.kind[i] || this.len[i] !== other.len[i]) return false;
    const a = this.start[i];
    const c = other.start[i];
    for (let j = 0; j < this.len[i]; j++) if (b[a + j] !== b[c + j]) return false;
    return true;
  }
}

/** A row change message taken apart: its old tuple (`K` key or `O` full old row) and new tuple. */
export interface DecodedChange {
  /** `K`, `O`, or 0 when the message has no old tuple. */
  oldKind: number;
  old: Tuple;
  new: Tuple;
}

/**
 * Splits `msg` into `into.old` / `into.new`. For an update with a full old row (`REPLICA IDENTITY
 * FULL`), an unchanged TOAST value in the new row takes the old row's value, which the WAL holds.
 */
export function decodeChange(msg: RawChange, into: DecodedChange): void {
  const b = msg.buf;
  const end = msg.off + msg.len;
  let off = msg.off + 5;
  into.oldKind = 0;
  const sub = b[off];
  if (sub === 0x4b /* K */ || sub === 0x4f /* O */) {
    into.oldKind = sub;
    off = into.old.read(b, off + 1);
    if (off > end) throw new Error("Cannot decode a pgoutput change: its old row runs past the message");
    if (msg.op === OP_DELETE) return;
  } else if (msg.op === OP_DELETE) {
    throw new Error(`Cannot decode a pgoutput delete: unknown part ${sub}`);
  }
  if (off >= end || b[off] !== 0x4e /* N */) {
    throw new Error(`Cannot decode a pgoutput change: unknown part ${off < end ? b[off] : "(none)"}`);
  }
  if (into.new.read(b, off + 1) > end) {
    throw new Error("Cannot decode a pgoutput change: its new row runs past the message");
  }
  if (into.oldKind === 0x4f) {
    const nw = into.new;
    for (let i = 0; i < nw.n && i < into.old.n; i++) if (nw.kind[i] === KIND_UNCHANGED) nw.take(i, into.old);
  }
}

/**
 * True when an update moved its row to another key: some key column (`keyIdx`) of the old tuple differs
 * from the new one. A key-only old tuple (`K`) holds NULL for columns it does not carry; a value missing
 * from the old tuple is never a difference.
 */
export function keyChanged(msg: RawChange, d: DecodedChange, keyIdx: number[]): boolean {
  if (!d.oldKind) return false;
  for (const i of keyIdx) {
    if (i < 0 || i >= d.old.n) continue;
    const k = d.old.kind[i];
    if (k === KIND_UNCHANGED || (k === KIND_NULL && d.oldKind === 0x4b)) continue;
    if (!d.old.same(msg.buf, i, d.new)) return true;
  }
  return false;
}
