import assert from "node:assert/strict";
import { progressBar } from "./snapshot.ts";

Deno.test("progressBar() draws the share done and the row counts, capped at 100 %", () => {
  assert.equal(progressBar("public.items", 4_500, 10_000, 10), "[#####-----]  45% public.items 4,500/10,000");
  assert.equal(progressBar("t", 12, 10, 4), "[####] 100% t 12/10");
  assert.equal(progressBar("empty", 0, 0, 4), "[####] 100% empty 0/0");
});
