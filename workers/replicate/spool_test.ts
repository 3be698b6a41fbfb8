import assert from "node:assert/strict";
import { csvLine, parseCsv } from "./csv.ts";
import {
  decodeChange,
  type DecodedChange,
  keyChanged,
  OP_DELETE,
  OP_INSERT,
  OP_UPDATE,
  type RawChange,
  textPgoutputPlugin,
  Tuple,
} from "./pgoutput.ts";
import type { TableInfo } from "./schema.ts";
import { BatchSpool, binaryIntegerKey, integerKey, KeySet, TableSpool } from "./spool.ts";

const enc = new TextEncoder();

/** A pgoutput tuple: a string is a text value, null is NULL, undefined an unchanged TOAST value. */
function tuple(values: (string | null | undefined)[]): number[] {
  const out = [values.length >> 8, values.length & 255];
  for (const v of values) {
    if (v === null) out.push(0x6e);
    else if (v === undefined) out.push(0x75);
    else {
      const b = enc.encode(v);
      out.push(
        0x74,
        (b.length >>> 24) & 255,
        (b.length >>> 16) & 255,
        (b.length >>> 8) & 255,
        b.length & 255,
      );
      for (const x of b) out.push(x);
    }
  }
  return out;
}

function message(
  op: number,
  parts: { old?: ["K" | "O", (string | null | undefined)[]]; new?: (string | null | undefined)[] },
): RawChange {
  const bytes = [op, 0, 0, 0, 42];
  const all = [bytes];
  if (parts.old) all.push([parts.old[0].charCodeAt(0)], tuple(parts.old[1]));
  if (parts.new) all.push([0x4e], tuple(parts.new));
  const buf = new Uint8Array(all.flat());
  return { tag: "raw", op, relationOid: 42, buf, off: 0, len: buf.length };
}

const TABLE: TableInfo = {
  schema: "public",
  name: "t",
  columns: [{ name: "id", type: "bigint" }, { name: "v", type: "text" }, { name: "big", type: "text" }],
  key: ["id"],
  keyIsAllColumns: false,
};

const TRICKY = [
  "",
  "a,b",
  'say "hi"',
  '""',
  "line\nbreak\r\n",
  "back\\slash \\N",
  "ünï 😀 中文",
  "NULL",
  "\\x00ff",
];

function fresh(): DecodedChange {
  return { oldKind: 0, old: new Tuple(), new: new Tuple() };
}

/** A segment's bytes: kept in memory, or in its file. */
async function bytesOf(s: { path?: string; data?: Uint8Array }): Promise<Uint8Array> {
  if (s.data) return s.data;
  assert.ok(s.path, "a segment has its bytes in memory or a file");
  return await Deno.readFile(s.path);
}

const textOf = async (s: { path?: string; data?: Uint8Array }) => new TextDecoder().decode(await bytesOf(s));

/** A budget large enough for every test here: every file stays in memory. */
const plenty = () => ({ left: 1 << 30 });

for (const memory of [false, true]) {
  Deno.test(`rows written from pgoutput bytes are the same CSV csvLine() writes, tricky values included${memory ? ", kept in memory" : ""}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const batch = new BatchSpool(dir, 0, { memory: memory ? plenty() : undefined });
      const spool = batch.spool("public.t", TABLE);
      const d = fresh();
      const want: string[] = [];
      // Sequence numbers cross a power of ten on the way.
      let seq = 999_995;
      for (const [i, v] of TRICKY.entries()) {
        const m = message(OP_INSERT, { new: [String(i), v, i % 2 ? null : v] });
        decodeChange(m, d);
        await spool.writeTuple(++seq, "I", m.buf, d.new);
        want.push(csvLine([String(seq), "I", "-", String(i), v, i % 2 ? null : v]));
      }
      const upd = message(OP_UPDATE, { new: ["1", "x", undefined] });
      decodeChange(upd, d);
      await spool.writeTuple(++seq, "U", upd.buf, d.new);
      // The unchanged column is marked by its number (the third column: 3).
      want.push(csvLine([String(seq), "U", ",3,", "1", "x", null]));
      const del = message(OP_DELETE, { old: ["K", ["2", null, null]] });
      decodeChange(del, d);
      await spool.writeTuple(++seq, "D", del.buf, d.old);
      want.push(csvLine([String(seq), "D", "-", "2", null, null]));
      const [seg] = await spool.close();
      const text = await textOf(seg);
      assert.equal(text, want.join(""));
      assert.equal(seg.rows, TRICKY.length + 2);
      assert.deepEqual(seg.unchanged, [3]);
      assert.equal(parseCsv(text)[2][4], 'say "hi"');
      assert.equal(spool.insertsOnly, false);
      assert.equal(spool.distinctKeys, false, "key 1 and key 2 were written twice");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("an inserts-only spool also writes its rows without the change columns, until a row is not an insert", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const batch = new BatchSpool(dir);
    const spool = batch.spool("public.t", TABLE);
    const d = fresh();
    const plain: string[] = [];
    // Rows much larger than the write buffer too, so that both files are flushed in several parts.
    const values = [...TRICKY, "z".repeat(700_000), ...TRICKY];
    for (const [i, v] of values.entries()) {
      const m = message(OP_INSERT, { new: [String(i), v, i % 2 ? null : v] });
      decodeChange(m, d);
      await spool.writeTuple(i + 1, "I", m.buf, d.new);
      plain.push(csvLine([String(i), v, i % 2 ? null : v]));
    }
    // A column added while running starts a new file, with its own twin.
    spool.table = { ...TABLE, columns: [...TABLE.columns, { name: "extra", type: "text" }] };
    const wide = message(OP_INSERT, { new: ["99", "w", null, "x"] });
    decodeChange(wide, d);
    await spool.writeTuple(values.length + 1, "I", wide.buf, d.new);
    let [seg, seg2] = await spool.close();
    assert.ok(seg.plain, "an inserts-only segment has its plain twin");
    assert.equal(await textOf(seg.plain), plain.join(""));
    assert.equal(seg.plain.bytes, (await bytesOf(seg.plain)).length);
    assert.equal(parseCsv(await textOf(seg)).length, values.length);
    assert.equal(await textOf(seg2.plain!), csvLine(["99", "w", null, "x"]));

    // A delete ends the twin; a truncate starts it again.
    const other = new BatchSpool(dir + "/b");
    await Deno.mkdir(other.dir);
    const s2 = other.spool("public.t", TABLE);
    const ins = message(OP_INSERT, { new: ["1", "a", null] });
    decodeChange(ins, d);
    await s2.writeTuple(1, "I", ins.buf, d.new);
    const del = message(OP_DELETE, { old: ["K", ["1", null, null]] });
    decodeChange(del, d);
    await s2.writeTuple(2, "D", del.buf, d.old);
    await s2.writeTuple(3, "I", ins.buf, d.new);
    const s3 = other.spool("public.u", { ...TABLE, name: "u" });
    await s3.writeTuple(4, "D", del.buf, d.old);
    await s3.truncateAll();
    await s3.writeTuple(5, "I", ins.buf, d.new);
    [seg] = await s2.close();
    assert.equal(seg.plain, undefined);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(other.dir))).map((e) => e.name).filter((n) => n.includes("plain")),
      [`public.u.2.plain.csv`],
      "a dropped twin's file is removed (public.u's second file is the twin written after the truncate)",
    );
    assert.equal(seg.rows, 3);
    const [seg3] = await s3.close();
    assert.equal(await textOf(seg3.plain!), csvLine(["1", "a", null]));
    assert.equal(await textOf(seg3), csvLine(["5", "I", "-", "1", "a", null]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const memory of [false, true]) {
  Deno.test(`the plain twins of a batch share a size limit: the table that crosses it drops its own${memory ? ", kept in memory" : ""}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const batch = new BatchSpool(dir, 0, { plainTwinLimit: 1_500, memory: memory ? plenty() : undefined });
      const a = batch.spool("public.a", { ...TABLE, name: "a" });
      const b = batch.spool("public.b", { ...TABLE, name: "b" });
      const d = fresh();
      const row = (i: number) => {
        const m = message(OP_INSERT, { new: [String(i), "v".repeat(20), null] });
        decodeChange(m, d);
        return m;
      };
      let seq = 0;
      // a: 20 rows of ~33 bytes (about 660 of the 1,500); then b takes the rest and crosses the limit.
      for (let i = 0; i < 20; i++) await a.writeTuple(++seq, "I", row(i).buf, d.new);
      for (let i = 0; i < 40; i++) await b.writeTuple(++seq, "I", row(i).buf, d.new);
      const [segA] = await a.close();
      const [segB] = await b.close();
      assert.ok(segA.plain, "the table under the limit keeps its twin");
      assert.equal(parseCsv(await textOf(segA.plain)).length, 20);
      assert.equal(segB.plain, undefined);
      assert.equal(b.insertsOnly, true, "still inserts only: the target strips the change columns itself");
      assert.equal(parseCsv(await textOf(segB)).length, 40);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a full old row fills the new row's unchanged TOAST values, and key changes are seen", () => {
  const d = fresh();
  const full = message(OP_UPDATE, { old: ["O", ["1", "a", "big"]], new: ["1", "b", undefined] });
  decodeChange(full, d);
  assert.equal(d.new.kind[2], 0x74);
  assert.equal(
    new TextDecoder().decode(full.buf.subarray(d.new.start[2], d.new.start[2] + d.new.len[2])),
    "big",
  );
  assert.equal(keyChanged(full, d, [0]), false);
  const moved = message(OP_UPDATE, { old: ["K", ["1", null, null]], new: ["2", "b", undefined] });
  decodeChange(moved, d);
  assert.equal(d.new.kind[2], 0x75, "a key-only old row holds no values to fill in");
  assert.equal(keyChanged(moved, d, [0]), true);
  const same = message(OP_UPDATE, { new: ["2", "c", "x"] });
  decodeChange(same, d);
  assert.equal(keyChanged(same, d, [0]), false);
  // Every column as the key (no primary key): NULL to NULL is no change, NULL to a value is one.
  const nulls = message(OP_UPDATE, { old: ["O", ["3", null, "z"]], new: ["3", null, "y"] });
  decodeChange(nulls, d);
  assert.equal(keyChanged(nulls, d, [0, 1]), false);
  assert.equal(keyChanged(nulls, d, [0, 1, 2]), true);
});

Deno.test("row messages share slabs: each is read at its offset, and one cut short is refused", () => {
  const plugin = textPgoutputPlugin(["p"]);
  const d = fresh();
  const text = (m: RawChange, t: Tuple, i: number) =>
    new TextDecoder().decode(m.buf.subarray(t.start[i], t.start[i] + t.len[i]));
  // Handed over inside a larger buffer (as the connection's parser has them), copied into one slab.
  const wire = [
    message(OP_INSERT, { new: ["1", "one", null] }),
    message(OP_UPDATE, { old: ["K", ["1", null, null]], new: ["2", "two", "x"] }),
    message(OP_DELETE, { old: ["K", ["2", null, null]] }),
  ].map((m) => m.buf);
  const outer = new Uint8Array(wire.reduce((a, w) => a + w.length + 3, 0));
  const got: RawChange[] = [];
  let o = 0;
  for (const w of wire) {
    outer.set(w, o + 3);
    got.push(plugin.parseStream(outer, o + 3, w.length) as RawChange);
    o += w.length + 3;
  }
  outer.fill(0); // the parser's buffer is reused: the messages must not depend on it
  assert.equal(got[0].buf, got[2].buf);
  assert.deepEqual(got.map((m) => m.len), wire.map((w) => w.length));
  decodeChange(got[0], d);
  assert.deepEqual([text(got[0], d.new, 0), text(got[0], d.new, 1), d.new.kind[2]], ["1", "one", 0x6e]);
  decodeChange(got[1], d);
  assert.deepEqual([text(got[1], d.old, 0), text(got[1], d.new, 1), text(got[1], d.new, 2)], [
    "1",
    "two",
    "x",
  ]);
  assert.equal(keyChanged(got[1], d, [0]), true);
  decodeChange(got[2], d);
  assert.equal(text(got[2], d.old, 0), "2");
  // A message cut short would otherwise read on into the next one in its slab.
  assert.throws(() => decodeChange({ ...got[0], len: got[0].len - 2 }, d), /runs past the message/);
  assert.throws(() => decodeChange({ ...got[2], len: got[2].len - 1 }, d), /runs past the message/);
  assert.throws(() => decodeChange({ ...got[1], len: 14 }, d), /runs past the message|unknown part/);
});

Deno.test("distinct keys are tracked exactly, integer keys as numbers and other keys as bytes", async () => {
  assert.equal(integerKey(enc.encode("12345"), 0, 5), 12345);
  assert.equal(integerKey(enc.encode("-7"), 0, 2), -7);
  assert.equal(integerKey(enc.encode("0"), 0, 1), 0);
  for (const s of ["007", "-0", "1.5", "", "1e3", "1234567890123456", "-"]) {
    assert.equal(integerKey(enc.encode(s), 0, s.length), undefined, s);
  }
  const dir = await Deno.makeTempDir();
  try {
    const text: TableInfo = { ...TABLE, columns: [{ name: "id", type: "text" }, ...TABLE.columns.slice(1)] };
    const spool = new BatchSpool(dir).spool("public.t", text);
    const d = fresh();
    let seq = 0;
    // "7" and "07" are different keys of a text column.
    for (const k of ["7", "07", "-7", "x"]) {
      const m = message(OP_UPDATE, { new: [k, "v", "w"] });
      decodeChange(m, d);
      await spool.writeTuple(++seq, "U", m.buf, d.new);
    }
    assert.equal(spool.distinctKeys, true);
    // The same table with another key: what was tracked no longer tells.
    const other = new BatchSpool(dir).spool("public.t", text);
    other.table = { ...text, key: ["id", "v"] };
    assert.equal(other.distinctKeys, false);
    const again = message(OP_DELETE, { old: ["K", ["07", null, null]] });
    decodeChange(again, d);
    await spool.writeTuple(++seq, "D", again.buf, d.old);
    assert.equal(spool.distinctKeys, false);
    await spool.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("several batches of a table count as distinct only when no key repeats across them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const d = fresh();
    const spools = [];
    for (const keys of [["1", "2"], ["3"], ["2", "4"]]) {
      const spool = new BatchSpool(await Deno.makeTempDir({ dir })).spool("public.t", TABLE);
      for (const [i, k] of keys.entries()) {
        const m = message(OP_UPDATE, { new: [k, "v", "w"] });
        decodeChange(m, d);
        await spool.writeTuple(i + 1, "U", m.buf, d.new);
      }
      spools.push(spool);
    }
    assert.equal(TableSpool.distinctAcross(spools.slice(0, 2)), true);
    assert.equal(TableSpool.distinctAcross(spools), false);
    assert.equal(TableSpool.distinctAcross([spools[2]]), true);
    for (const s of spools) await s.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A pgoutput tuple in a binary session: bytes are a binary value, null is NULL, undefined unchanged. */
function binaryTuple(values: (Uint8Array | null | undefined)[]): number[] {
  const out = [values.length >> 8, values.length & 255];
  for (const v of values) {
    if (v === null) out.push(0x6e);
    else if (v === undefined) out.push(0x75);
    else {out.push(
        0x62,
        (v.length >>> 24) & 255,
        (v.length >>> 16) & 255,
        (v.length >>> 8) & 255,
        v.length & 255,
        ...v,
      );}
  }
  return out;
}

function binaryMessage(op: number, values: (Uint8Array | null | undefined)[]): RawChange {
  const bytes = new Uint8Array([op, 0, 0, 0, 42, 0x4e, ...binaryTuple(values)]);
  return { tag: "raw", op, relationOid: 42, buf: bytes, off: 0, len: bytes.length };
}

/** Reads a binary COPY file: its rows, each field's bytes or null. */
function readBinaryCopy(file: Uint8Array): (Uint8Array | null)[][] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  assert.deepEqual([...file.subarray(0, 11)], [...enc.encode("PGCOPY\n"), 0xff, 0x0d, 0x0a, 0]);
  assert.equal(view.getInt32(11), 0);
  assert.equal(view.getInt32(15), 0);
  const rows: (Uint8Array | null)[][] = [];
  let p = 19;
  for (;;) {
    const n = view.getInt16(p);
    p += 2;
    if (n === -1) break;
    const row: (Uint8Array | null)[] = [];
    for (let i = 0; i < n; i++) {
      const len = view.getInt32(p);
      p += 4;
      if (len === -1) row.push(null);
      else {
        row.push(file.slice(p, p + len));
        p += len;
      }
    }
    rows.push(row);
  }
  assert.equal(p, file.length, "nothing after the trailer");
  return rows;
}

const int8 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, v);
  return b;
};

for (const memory of [false, true]) {
  Deno.test(`binary batch files: binary COPY rows with the change columns, a plain twin, a new file when types change${memory ? ", kept in memory" : ""}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const batch = new BatchSpool(dir, 0, { format: "binary", memory: memory ? plenty() : undefined });
      const spool = batch.spool("public.t", TABLE);
      const d = fresh();
      const wire = [20, 25, 25];
      spool.wire = wire;
      const nul = new Uint8Array([0, 1, 0]);
      const write = async (seq: number, values: (Uint8Array | null | undefined)[]) => {
        const msg = binaryMessage(OP_INSERT, values);
        decodeChange(msg, d);
        await spool.writeTuple(seq, "I", msg.buf, d.new);
      };
      await write(1, [int8(1n), enc.encode('a,"b"\n'), null]);
      await write(2, [int8(-5n), new Uint8Array(0), nul]);
      assert.equal(spool.distinctKeys, true);
      // Another type for the key: a new file (its values are another type's bytes).
      spool.wire = [23, 25, 25];
      await write(3, [new Uint8Array([0, 0, 0, 7]), enc.encode("x"), null]);
      const segments = await spool.close();
      assert.equal(segments.length, 2);
      assert.deepEqual(segments.map((s) => [s.format, s.wire, s.rows]), [["binary", wire, 2], ["binary", [
        23,
        25,
        25,
      ], 1]]);
      assert.ok(
        segments.every((s) =>
          memory
            ? s.data && s.plain?.data && s.path === undefined
            : s.path?.endsWith(".pgcopy") && s.plain?.path?.endsWith(".plain.pgcopy")
        ),
      );
      const rows = readBinaryCopy(await bytesOf(segments[0]));
      const text = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
      assert.deepEqual(rows.map((r) => [new DataView(r[0]!.buffer).getBigInt64(0), text(r[1]), text(r[2])]), [
        [1n, "I", "-"],
        [2n, "I", "-"],
      ]);
      assert.deepEqual(rows.map((r) => r.slice(3)), [[int8(1n), enc.encode('a,"b"\n'), null], [
        int8(-5n),
        new Uint8Array(0),
        nul,
      ]]);
      // The twin: the same rows without the change columns.
      const plain = readBinaryCopy(await bytesOf(segments[0].plain!));
      assert.deepEqual(plain, rows.map((r) => r.slice(3)));
      assert.equal(segments[0].bytes, (await bytesOf(segments[0])).length);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

for (const memory of [false, true]) {
  Deno.test(`binary batch files: unchanged values are marked and NULL, a text value is refused${memory ? ", kept in memory" : ""}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const batch = new BatchSpool(dir, 0, { format: "binary", memory: memory ? plenty() : undefined });
      const spool = batch.spool("public.t", TABLE);
      spool.wire = [20, 25, 25];
      const d = fresh();
      const msg = binaryMessage(OP_UPDATE, [int8(9n), enc.encode("v"), undefined]);
      decodeChange(msg, d);
      await spool.writeTuple(1, "U", msg.buf, d.new);
      const [seg] = await spool.close();
      assert.equal(seg.plain, undefined, "an update drops the twin");
      assert.deepEqual(seg.unchanged, [3]);
      const [row] = readBinaryCopy(await bytesOf(seg));
      assert.deepEqual([new TextDecoder().decode(row[1]!), new TextDecoder().decode(row[2]!), row[5]], [
        "U",
        ",3,",
        null,
      ]);

      const other = new BatchSpool(dir, 0, { format: "binary" }).spool("public.t", TABLE);
      other.wire = [20, 25, 25];
      const text = message(OP_INSERT, { new: ["1", "a", null] });
      decodeChange(text, d);
      await assert.rejects(
        async () => await other.writeTuple(1, "I", text.buf, d.new),
        (e: Error) => e.name === "TextFallback",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("binary integer keys read as the numbers their text would", () => {
  const edges = [999999999999999n, 1000000000000000n, -99999999999999n, -100000000000000n, 9007199254740993n];
  for (const v of [0n, 1n, -1n, 2147483647n, -2147483648n, ...edges]) {
    const b = int8(v);
    const t = enc.encode(String(v));
    assert.equal(binaryIntegerKey(b, 0, 8), integerKey(t, 0, t.length), String(v));
  }
  assert.equal(binaryIntegerKey(new Uint8Array([0xff, 0xfe]), 0, 2), -2);
  assert.equal(binaryIntegerKey(new Uint8Array([0x80, 0, 0, 0]), 0, 4), -2147483648);
});

Deno.test("a batch kept in memory makes no folder and gives its memory back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const memory = { left: 10 << 20 };
    const batch = new BatchSpool(`${dir}/batch`, 0, { memory });
    const a = batch.spool("public.a", { ...TABLE, name: "a" });
    const b = batch.spool("public.b", { ...TABLE, name: "b" });
    const d = fresh();
    let seq = 0;
    for (let i = 0; i < 100; i++) {
      const m = message(OP_INSERT, { new: [String(i), "v".repeat(i), null] });
      decodeChange(m, d);
      await a.writeTuple(++seq, "I", m.buf, d.new);
      await b.writeTuple(++seq, "I", m.buf, d.new);
    }
    const upd = message(OP_UPDATE, { new: ["1", "x", null] });
    decodeChange(upd, d);
    await b.writeTuple(++seq, "U", upd.buf, d.new);
    const [segA] = await a.close();
    const [segB] = await b.close();
    assert.ok(segA.data && segA.plain?.data && segB.data, "every file in memory");
    assert.equal(segB.plain, undefined, "the update dropped b's twin");
    assert.equal(
      memory.left,
      (10 << 20) - segA.bytes - segA.plain.bytes - segB.bytes,
      "the budget holds what the batch keeps, the dropped twin given back",
    );
    assert.equal(parseCsv(await textOf(segA)).length, 100);
    await assert.rejects(Deno.stat(batch.dir), Deno.errors.NotFound, "no folder was made");
    // A truncate gives back what came before it.
    const c = batch.spool("public.c", { ...TABLE, name: "c" });
    await c.writeTuple(++seq, "U", upd.buf, d.new);
    await c.close();
    const before = memory.left;
    await c.truncateAll();
    assert.ok(memory.left > before);
    await batch.discard();
    assert.equal(memory.left, 10 << 20, "discard gives the rest back");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a file that outgrows the memory budget goes to disk with every row, the same bytes as on disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const d = fresh();
    // Rows of about a KiB: 1,500 of them pass the 512 KiB write buffer twice.
    const rows = Array.from({ length: 1_500 }, (_, i) => {
      const m = message(OP_INSERT, { new: [String(i), `${i}:` + "r".repeat(1_000), null] });
      return m.buf;
    });
    const fill = async (spool: TableSpool, n: number) => {
      for (let i = 0; i < n; i++) {
        decodeChange({
          tag: "raw",
          op: OP_INSERT,
          relationOid: 42,
          buf: rows[i],
          off: 0,
          len: rows[i].length,
        }, d);
        await spool.writeTuple(i + 1, "I", rows[i], d.new);
      }
    };
    const onDisk = new BatchSpool(`${dir}/disk`);
    await fill(onDisk.spool("public.t", TABLE), rows.length);
    const [want] = await onDisk.spool("public.t", TABLE).close();

    const memory = { left: 600 << 10 };
    const batch = new BatchSpool(`${dir}/mem`, 0, { memory });
    const big = batch.spool("public.t", TABLE);
    await fill(big, rows.length);
    // A small table after the budget is free again (the big one gave its bytes back when it spilled).
    const small = batch.spool("public.s", { ...TABLE, name: "s" });
    await fill(small, 3);
    const [seg] = await big.close();
    const [segS] = await small.close();
    assert.ok(seg.path && !seg.data, "the large file went to disk");
    assert.ok(seg.plain?.path, "with its twin");
    assert.deepEqual(await bytesOf(seg), await bytesOf(want));
    assert.deepEqual(await bytesOf(seg.plain), await bytesOf(want.plain!));
    assert.equal(seg.bytes, want.bytes);
    assert.ok(segS.data, "the small one stayed in memory");
    assert.equal(memory.left, (600 << 10) - segS.bytes - segS.plain!.bytes);

    // A file that does not fit when its segment ends goes to disk then.
    const tight = { left: 100 };
    const other = new BatchSpool(`${dir}/tight`, 0, { memory: tight });
    const t = other.spool("public.t", TABLE);
    await fill(t, 2);
    const [segT] = await t.close();
    assert.ok(segT.path && !segT.data);
    assert.equal(parseCsv(await textOf(segT)).length, 2);
    assert.equal(tight.left, 100);

    await batch.discard();
    await other.discard();
    assert.equal(memory.left, 600 << 10);
    await assert.rejects(Deno.stat(batch.dir), Deno.errors.NotFound, "discard removed the folder");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a key set answers as a plain set does, for keys in order, out of order and not integers", () => {
  // A small generator, seeded, so a failure repeats.
  let seed = 42;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let round = 0; round < 200; round++) {
    const keys = new KeySet();
    const plain = new Set<string | number>();
    let next = rnd(50) - 25;
    for (let i = 0; i < 300; i++) {
      const r = rnd(10);
      // Mostly increasing runs, as a serial key's inserts; some repeats, some older keys, some strings.
      const k = r < 6
        ? (next += 1 + rnd(3))
        : r < 8
        ? next - rnd(40)
        : r < 9
        ? String(rnd(30))
        : rnd(100) - 50;
      assert.equal(keys.add(k), !plain.has(k), `round ${round}, key ${k}`);
      plain.add(k);
      assert.equal(keys.size, plain.size);
    }
    for (let k = -80; k < 400; k++) assert.equal(keys.has(k), plain.has(k));
    // Against another set: apart, overlapping by one integer, or by one string.
    const other = new KeySet();
    const otherPlain = new Set<string | number>();
    const base = rnd(2) ? next + 1 : -1000;
    for (let i = 0; i < 50; i++) {
      const k = rnd(20) === 0 ? [...plain][rnd(plain.size)] : rnd(5) === 0 ? `s${i}` : base + i * 2;
      other.add(k);
      otherPlain.add(k);
    }
    const want = ![...otherPlain].some((k) => plain.has(k));
    assert.equal(keys.disjoint(other), want, `round ${round}`);
    assert.equal(other.disjoint(keys), want, `round ${round}`);
  }
  // Integer keys far apart do not make two sets disjoint when they share a key that is not an integer.
  const set = (...ks: (string | number)[]) => {
    const k = new KeySet();
    for (const x of ks) k.add(x);
    return k;
  };
  assert.equal(set(1, 2, "a").disjoint(set(10, 11, "a")), false);
  assert.equal(set(1, 2, "a").disjoint(set(10, 11, "b")), true);
  assert.equal(set(1, 5).disjoint(set(3)), true, "within the range, not in it");
  assert.equal(set(1, 5).disjoint(set(6, 5)), false);
});
