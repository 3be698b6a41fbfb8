import assert from "node:assert/strict";
import { formatLsn, parseLsn } from "./lsn.ts";

Deno.test("parseLsn() and formatLsn() round-trip and order positions", () => {
  assert.equal(formatLsn(parseLsn("16/B374D848")), "16/B374D848");
  assert.equal(parseLsn("0/10") < parseLsn("1/0"), true);
  assert.equal(parseLsn("1/0") - parseLsn("0/FFFFFFFF"), 1n);
  assert.throws(() => parseLsn("nope"), /Cannot parse LSN/);
});
