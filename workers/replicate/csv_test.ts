import assert from "node:assert/strict";
import { ChangeColumnStripper, csvField, csvLine, parseCsv } from "./csv.ts";

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

Deno.test("ChangeColumnStripper drops the change columns of every record, however the bytes are split", () => {
  const text = csvLine(["1", "I", "-", "a", "x,\ny", null]) + csvLine(["2", "I", ",1,", "", '"q"', "z"]);
  const want = csvLine(["a", "x,\ny", null]) + csvLine(["", '"q"', "z"]);
  const bytes = new TextEncoder().encode(text);
  for (const size of [1, 2, 3, 7, 1000]) {
    const s = new ChangeColumnStripper();
    let out = "";
    const dec = new TextDecoder();
    for (let i = 0; i < bytes.length; i += size) {
      out += dec.decode(s.push(bytes.subarray(i, i + size)), { stream: true });
    }
    assert.equal(out, want, `chunks of ${size}`);
  }
});

Deno.test("ChangeColumnStripper can strip in place, in the chunk it was given", () => {
  const text = csvLine(["1", "I", "-", "a", "x,\ny", null]) + csvLine(["2", "I", ",1,", "", '"q"', "z"]);
  const bytes = new TextEncoder().encode(text);
  const out = new ChangeColumnStripper().push(bytes, true);
  assert.equal(out.buffer, bytes.buffer);
  assert.equal(new TextDecoder().decode(out), csvLine(["a", "x,\ny", null]) + csvLine(["", '"q"', "z"]));
});
