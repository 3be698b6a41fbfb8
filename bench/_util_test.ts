import assert from "node:assert/strict";
import { formatTable, peakRssMiB, percentile } from "./_util.ts";

Deno.test("formatTable() aligns columns and formats numbers", () => {
  const t = formatTable([{ system: "wharf", rows_s: 123456.7, nodes: 2 }, {
    system: "peer",
    rows_s: 9.5,
    nodes: 1,
  }]);
  assert.equal(t, "system  rows_s   nodes\n------  -------  -----\nwharf   123,457  2\npeer    9.50     1");
});

Deno.test("percentile() uses nearest rank", () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(v, 50), 50);
  assert.equal(percentile(v, 99), 99);
  assert.equal(percentile(v, 100), 100);
  assert.ok(Number.isNaN(percentile([], 50)));
});

Deno.test("peakRssMiB() reads this process's peak memory", () => {
  assert.ok(peakRssMiB() > 10);
});
