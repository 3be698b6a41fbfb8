import assert from "node:assert/strict";
import { parseSummary } from "./run.ts";

Deno.test("parseSummary() reads Deno's closing line, with or without colours and steps", () => {
  assert.deepEqual(parseSummary("...\nok | 12 passed (3 steps) | 0 failed (2s)\n"), {
    passed: 12,
    failed: 0,
  });
  assert.deepEqual(
    parseSummary("\x1b[0m\x1b[31mFAILED\x1b[0m | 4 passed | 2 failed (1s)"),
    { passed: 4, failed: 2 },
  );
  assert.equal(parseSummary("error: Module not found"), undefined);
});
