import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import pg from "pg";
import { Parser } from "pg-protocol/dist/parser.js";
import { takeOverCopyData } from "./copy_frames.ts";

/** A backend message: its code, its length, its body. */
function message(code: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const m = new Uint8Array(5 + body.length);
  m[0] = code.charCodeAt(0);
  new DataView(m.buffer).setUint32(1, 4 + body.length);
  m.set(body, 5);
  return m;
}

const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, (o += p.length) - p.length);
  return out;
};

Deno.test("takeOverCopyData() is refused outside a parse, and by then the messages come as before", () => {
  assert.equal(takeOverCopyData(() => {}), false);
});

Deno.test("a parser taken over gives CopyData frames to the sink, split anywhere, and the rest as messages", () => {
  // Frames of every size up to 300 bytes, a few other messages between them.
  const frames = Array.from(
    { length: 300 },
    (_, i) => Uint8Array.from({ length: i + 1 }, (_, j) => (i * 7 + j) & 255),
  );
  const tail = [message("c"), message("C", new TextEncoder().encode("COPY 0\0"))];
  const wire = concat([
    message("W", new Uint8Array(3)), // CopyBothResponse: the handler below takes the parser over
    message("d", frames[0]), // still in the chunk being parsed then: comes as a message
    ...frames.slice(1, 150).map((f) => message("d", f)),
    message("N", new TextEncoder().encode("SNOTICE\0Mhello\0\0")),
    ...frames.slice(150).map((f) => message("d", f)),
    ...tail,
  ]);
  for (const size of [1, 2, 5, 7, 64, 1000, wire.length]) {
    const parser = new Parser();
    const got: Uint8Array[] = [];
    const events: string[] = [];
    let taken: boolean | undefined;
    const first = Math.max(size, 5 + 3 + 5 + 1); // the CopyBothResponse and the first frame in one chunk
    const chunks = [wire.subarray(0, first)];
    for (let o = first; o < wire.length; o += size) chunks.push(wire.subarray(o, o + size));
    for (const c of chunks) {
      parser.parse(Buffer.from(c), (msg: { name: string; chunk?: Uint8Array }) => {
        events.push(msg.name);
        if (msg.name === "copyData") got.push(Uint8Array.from(msg.chunk!));
        if (msg.name === "replicationStart") {
          taken = takeOverCopyData((buf, off, len) =>
            got.push(Uint8Array.from(buf.subarray(off, off + len)))
          );
        }
      });
    }
    assert.equal(taken, true);
    assert.equal(got.length, frames.length, `chunks of ${size}`);
    got.forEach((g, i) => assert.deepEqual(g, frames[i], `frame ${i}, chunks of ${size}`));
    // The library made messages of the frames in the chunk it was parsing when taken over; after that
    // chunk, only of what is not CopyData.
    let inFirst = 0;
    for (let o = 0; o + 5 <= first;) {
      const end = o + 1 + new DataView(wire.buffer, o + 1, 4).getUint32(0);
      if (end > first) break;
      if (wire[o] === 0x64) inFirst++;
      o = end;
    }
    assert.equal(events.filter((e) => e === "copyData").length, inFirst, `chunks of ${size}`);
    assert.deepEqual(events.filter((e) => e !== "copyData"), [
      "replicationStart",
      "notice",
      "copyDone",
      "commandComplete",
    ]);
  }
});

Deno.test("the parser taken over is the one pg's connections use", () => {
  const conn = new pg.Connection();
  const stream = new EventEmitter();
  (conn as unknown as { attachListeners(s: EventEmitter): void }).attachListeners(stream);
  const got: Uint8Array[] = [];
  let taken = false;
  conn.on("replicationStart", () => {
    taken = takeOverCopyData((buf, off, len) => got.push(Uint8Array.from(buf.subarray(off, off + len))));
  });
  let events = 0;
  conn.on("copyData", () => events++);
  stream.emit("data", Buffer.from(message("W", new Uint8Array(3))));
  stream.emit(
    "data",
    Buffer.from(concat([message("d", Uint8Array.of(1, 2)), message("d", Uint8Array.of(3))])),
  );
  assert.equal(taken, true);
  assert.deepEqual(got, [Uint8Array.of(1, 2), Uint8Array.of(3)]);
  assert.equal(events, 0);
});
