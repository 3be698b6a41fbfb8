/**
 * The replication stream's CopyData frames without a message object each. `pg`'s protocol parser makes an
 * object and a `Buffer` view for every message it frames, and the connection emits an event for each: at a
 * million rows that is a quarter of what the worker allocates. Once a replication connection is streaming,
 * {@linkcode takeOverCopyData} hands its parser's CopyData frames straight to a function, as the bytes they
 * lie in and where; every other message (an error, the end of the copy) still goes the library's way.
 *
 * The parser is `pg-protocol`'s, which `pg` uses: its `parse` is wrapped once, so that a handler the
 * connection calls while parsing can find the parser at work (`takeOverCopyData` must be called from one,
 * such as the `replicationStart` event's). A parser taken over frames the way the library's own loop
 * does, reusing its buffer handling (`mergeBuffer`) and its message decoding (`handlePacket`).
 */
import { Buffer } from "node:buffer";
import { Parser } from "pg-protocol/dist/parser.js";

/** Receives one CopyData frame: its payload is `buf[offset, offset + length)`, valid during the call. */
export type CopyDataSink = (buf: Uint8Array, offset: number, length: number) => void;

interface ParserState {
  buffer: Uint8Array;
  bufferOffset: number;
  bufferLength: number;
  mergeBuffer(buffer: Uint8Array): void;
  handlePacket(offset: number, code: number, length: number, bytes: Uint8Array): unknown;
  copyDataSink?: CopyDataSink;
}

type Parse = (this: ParserState, buffer: Uint8Array, callback: (msg: unknown) => void) => void;

const COPY_DATA = 0x64; // 'd'
const EMPTY = Buffer.alloc(0);
const proto = Parser.prototype as unknown as { parse: Parse; mergeBuffer?: unknown; handlePacket?: unknown };
/** The parser whose `parse` is running (handlers called from it may take it over). */
let parsing: ParserState | undefined;
const usable = typeof proto.parse === "function" && typeof proto.mergeBuffer === "function" &&
  typeof proto.handlePacket === "function";

if (usable) {
  const original = proto.parse;
  proto.parse = function (buffer, callback) {
    if (this.copyDataSink) return framed(this, buffer, callback);
    const was = parsing;
    parsing = this;
    try {
      original.call(this, buffer, callback);
    } finally {
      parsing = was;
    }
  };
}

/** The library's parse loop, with CopyData frames given to the sink instead of made into messages. */
function framed(p: ParserState, buffer: Uint8Array, callback: (msg: unknown) => void): void {
  p.mergeBuffer(buffer);
  const b = p.buffer;
  const end = p.bufferOffset + p.bufferLength;
  let off = p.bufferOffset;
  while (off + 5 <= end) {
    const length = ((b[off + 1] << 24) | (b[off + 2] << 16) | (b[off + 3] << 8) | b[off + 4]) >>> 0;
    if (off + 1 + length > end) break;
    const code = b[off];
    if (code === COPY_DATA && p.copyDataSink) p.copyDataSink(b, off + 5, length - 4);
    else callback(p.handlePacket(off + 5, code, length, b));
    off += 1 + length;
  }
  if (off === end) {
    p.buffer = EMPTY;
    p.bufferOffset = 0;
    p.bufferLength = 0;
  } else {
    p.bufferLength = end - off;
    p.bufferOffset = off;
  }
}

/**
 * Sends the CopyData frames of the parser now at work (called from a handler of one of its messages) to
 * `sink`, from the next chunk the connection reads on; frames left in the current chunk still come as
 * messages. False when no parser is at work or the library is not the one this was written against: the
 * messages then keep coming as events.
 */
export function takeOverCopyData(sink: CopyDataSink): boolean {
  if (!usable || !parsing) return false;
  parsing.copyDataSink = sink;
  return true;
}
