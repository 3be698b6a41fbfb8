import assert from "node:assert/strict";
import { z } from "zod";
import { errorResponseBody, WharfError } from "./errors.ts";

Deno.test("errorResponseBody() keeps a WharfError's status, code and details", () => {
  const r = errorResponseBody(
    new WharfError(409, "Cannot save: name taken", { details: { name: "x" } }),
    "rid",
  );
  assert.equal(r.status, 409);
  assert.deepEqual(r.body, {
    error: {
      code: "conflict",
      message: "Cannot save: name taken",
      details: { name: "x" },
      request_id: "rid",
    },
  });
});

Deno.test("errorResponseBody() turns zod errors into 400 with field paths", () => {
  const parsed = z.object({ a: z.object({ b: z.number() }) }).safeParse({ a: { b: "x" } });
  assert.ok(!parsed.success);
  const r = errorResponseBody(parsed.error);
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "validation_failed");
  assert.deepEqual((r.body.error.details as { path: string }[]).map((d) => d.path), ["a.b"]);
});

Deno.test("errorResponseBody() hides unknown errors behind a 500 and masks URLs in messages", () => {
  const r = errorResponseBody(new TypeError("boom at postgres://u:pw@h"));
  assert.equal(r.status, 500);
  assert.equal(r.body.error.message, "Internal server error");
  const w = errorResponseBody(new WharfError(502, "Cannot reach postgres://u:pw@h"));
  assert.equal(w.body.error.message, "Cannot reach postgres://u:***@h");
});
