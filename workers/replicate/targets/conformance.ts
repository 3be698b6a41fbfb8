/**
 * The conformance suite every {@linkcode Target} passes. A target test file calls
 * {@linkcode targetConformance} with a factory; the suite registers its `Deno.test`s.
 */
import assert from "node:assert/strict";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { csvLine } from "../csv.ts";
import { columnNum, type TableInfo } from "../schema.ts";
import type { TableBatch, Target } from "./target.ts";

/** What a factory hands the suite: a target, a way to read its rows, the bucket, and cleanup. */
export interface ConformanceSubject {
  target: Target;
  s3: S3Client;
  bucket: string;
  /** Rows of `schema.table` as `[id, v, big]` text triples, ordered by id. */
  rows(table: TableInfo): Promise<[string, string | null, string | null][]>;
  dispose(): Promise<void>;
}

/** The suite's table shape (`id` integer key, `v` and `big` text), named `name` in `public`. */
export const conformanceTable = (name: string): TableInfo => ({
  schema: "public",
  name,
  columns: [{ name: "id", type: "integer" }, { name: "v", type: "text" }, { name: "big", type: "text" }],
  key: ["id"],
  keyIsAllColumns: false,
});

/** A change row: id, op, v, big (undefined: unchanged). */
export type Change = [number | string, "U" | "D", string | null, string | null | undefined];

async function put(s: ConformanceSubject, key: string, lines: string): Promise<number> {
  await s.s3.send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: lines }));
  return new TextEncoder().encode(lines).length;
}

/**
 * A change batch of `rows` (`[id, op, v, big]`; `big` undefined marks it unchanged) at `lsn`, uploaded to
 * the subject's bucket.
 */
export async function conformanceChanges(
  s: ConformanceSubject,
  table: TableInfo,
  lsn: bigint,
  rows: Change[],
  truncate = false,
): Promise<TableBatch> {
  const text = rows.map(([id, op, v, big], i) =>
    csvLine([
      String(i + 1),
      op,
      big === undefined ? `,${columnNum(table.columns, 2)},` : "-",
      String(id),
      v,
      big,
    ])
  ).join("");
  const key = `conf/${table.name}/${lsn}.csv`;
  const bytes = await put(s, key, text);
  return {
    pipeline: "conformance",
    bucket: s.bucket,
    table,
    kind: "changes",
    truncate,
    segments: rows.length ? [{ key, columns: table.columns, rows: rows.length, bytes }] : [],
    lsn,
  };
}

/** Registers the suite for the target `name`. */
export function targetConformance(name: string, make: () => Promise<ConformanceSubject>): void {
  const test = (title: string, fn: (s: ConformanceSubject, t: TableInfo) => Promise<void>) =>
    Deno.test(`${name} target: ${title}`, async () => {
      const s = await make();
      try {
        await s.target.prepare();
        const t = conformanceTable(`conf_${crypto.randomUUID().slice(0, 8)}`);
        await s.target.ensureTable(t);
        await fn(s, t);
      } finally {
        await s.dispose();
      }
    });

  test("a snapshot replaces the table and stores its LSN", async (s, t) => {
    const text = csvLine(["1", "a", null]) + csvLine(["2", "", "b"]);
    const key = `conf/${t.name}/snap.csv`;
    const bytes = await put(s, key, text);
    const batch: TableBatch = {
      pipeline: "conformance",
      bucket: s.bucket,
      table: t,
      kind: "snapshot",
      truncate: true,
      segments: [{ key, columns: t.columns, rows: 2, bytes }],
      lsn: 99n,
    };
    assert.equal(await s.target.load(batch), true);
    assert.equal(await s.target.load(batch), true, "a snapshot reloads (it replaces, never adds)");
    assert.deepEqual(await s.rows(t), [["1", "a", null], ["2", "", "b"]]);
    assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 99n);
  });

  test("a batch applies its net effect per key, including key changes and unchanged values", async (s, t) => {
    await s.target.load(
      await conformanceChanges(s, t, 10n, [[1, "U", "one", "B1"], [2, "U", "two", "B2"], [
        3,
        "U",
        "x",
        null,
      ]]),
    );
    await s.target.load(
      await conformanceChanges(s, t, 20n, [
        [1, "U", "one!", undefined], // unchanged big: keep the target's B1
        [4, "U", "four", "B4"],
        [4, "U", "four!", undefined], // unchanged big: take B4 from earlier in the batch
        [2, "D", null, null], // key change 2 → 5
        [5, "U", "two", "B2"],
        [3, "D", null, null],
        [3, "U", "", "again"],
      ]),
    );
    assert.deepEqual(await s.rows(t), [
      ["1", "one!", "B1"],
      ["3", "", "again"],
      ["4", "four!", "B4"],
      ["5", "two", "B2"],
    ]);
    assert.equal((await s.target.applied("conformance")).get(`public.${t.name}`), 20n);
  });

  test("a batch flagged as one row per key is merged the same way", async (s, t) => {
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "one", "B1"], [2, "U", "two", "B2"]]));
    const b = await conformanceChanges(s, t, 20n, [[1, "U", "one!", undefined], [2, "D", null, null], [
      3,
      "U",
      "",
      null,
    ]]);
    await s.target.load({ ...b, distinctKeys: true });
    assert.deepEqual(await s.rows(t), [["1", "one!", "B1"], ["3", "", null]]);
  });

  test("an inserts-only batch is appended as it is, tricky values included", async (s, t) => {
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "one", null]]));
    const text = csvLine(["1", "I", "-", "2", 'a,"b"\nc', null]) + csvLine(["2", "I", "-", "3", "", "\\N"]);
    const key = `conf/${t.name}/ins.csv`;
    const bytes = await put(s, key, text);
    await s.target.load({
      pipeline: "conformance",
      bucket: s.bucket,
      table: t,
      kind: "changes",
      truncate: false,
      insertsOnly: true,
      segments: [{ key, columns: t.columns, rows: 2, bytes }],
      lsn: 20n,
    });
    assert.deepEqual(await s.rows(t), [["1", "one", null], ["2", 'a,"b"\nc', null], ["3", "", "\\N"]]);
  });

  test("a batch at or below the stored LSN changes nothing", async (s, t) => {
    assert.equal(await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "a", null]])), true);
    assert.equal(await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "twice", null]])), false);
    assert.equal(await s.target.load(await conformanceChanges(s, t, 5n, [[2, "U", "old", null]])), false);
    assert.deepEqual(await s.rows(t), [["1", "a", null]]);
  });

  test("a truncate empties the table before the batch's rows", async (s, t) => {
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "a", null], [2, "U", "b", null]]));
    await s.target.load(await conformanceChanges(s, t, 20n, [[3, "U", "c", null]], true));
    assert.deepEqual(await s.rows(t), [["3", "c", null]]);
    await s.target.load(await conformanceChanges(s, t, 30n, [], true));
    assert.deepEqual(await s.rows(t), []);
  });

  test("ensureTable() adds a column the source gained", async (s, t) => {
    await s.target.ensureTable({ ...t, columns: [...t.columns, { name: "extra", type: "text" }] });
    await s.target.ensureTable({ ...t, columns: [...t.columns, { name: "extra", type: "text" }] });
    await s.target.load(await conformanceChanges(s, t, 10n, [[1, "U", "a", null]]));
    assert.deepEqual(await s.rows(t), [["1", "a", null]]);
  });
}
