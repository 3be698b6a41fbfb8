import assert from "node:assert/strict";
import { csvField, csvLine, parseCsv } from "./csv.ts";

const TRICKY = ["", "a,b", 'say "hi"', "line\nbreak", "cr\r\nlf", "back\\slash", "\\N", "ünï😀", " ", "NULL"];

Deno.test("csvField() quotes every value and writes NULL as the bare marker", () => {
  assert.equal(csvField(null), "\\N");
  assert.equal(csvField(""), '""');
  assert.equal(csvField('a"b'), '"a""b"');
});

Deno.test("csvLine() output parses back to the same values, tricky ones included", () => {
  const text = csvLine([...TRICKY, null]) + csvLine(["x", null, ""]);
  assert.deepEqual(parseCsv(text), [[...TRICKY, null], ["x", null, ""]]);
});
