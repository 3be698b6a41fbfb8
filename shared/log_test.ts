import assert from "node:assert/strict";
import { createLogger, redact, REDACTED, redactString } from "./log.ts";

Deno.test("redactString() masks the password of every URL in a text", () => {
  const s = redactString("a postgres://u:s3cret@h:5432/db and rediss://:pw@r:6380 end");
  assert.equal(s, "a postgres://u:***@h:5432/db and rediss://:***@r:6380 end");
  assert.ok(!s.includes("s3cret") && !s.includes(":pw@"));
});

Deno.test("redact() replaces secret-named fields at any depth and keeps the rest", () => {
  const out = redact({
    user: "ann",
    password: "hunter2",
    nested: { JWT_SECRET: "x", api_key: "k", list: [{ token: "t", ok: 1 }] },
    pcred: "postgresql://a:b@c/d",
    url: "postgres://a:b@c/d",
  }) as Record<string, unknown>;
  assert.equal(out.user, "ann");
  assert.equal(out.password, REDACTED);
  assert.equal(out.pcred, REDACTED);
  assert.equal(out.url, "postgres://a:***@c/d");
  assert.deepEqual(out.nested, {
    JWT_SECRET: REDACTED,
    api_key: REDACTED,
    list: [{ token: REDACTED, ok: 1 }],
  });
});

Deno.test("redact() turns errors into plain objects with masked messages and survives cycles", () => {
  const cyc: Record<string, unknown> = { a: 1 };
  cyc.self = cyc;
  const err = Object.assign(new Error("connect postgres://u:pw@h failed"), { code: "ECONNREFUSED" });
  const out = redact({ err, cyc }) as { err: Record<string, unknown>; cyc: Record<string, unknown> };
  assert.equal(out.err.message, "connect postgres://u:***@h failed");
  assert.equal(out.err.code, "ECONNREFUSED");
  assert.equal(out.cyc.self, "[circular]");
});

Deno.test("createLogger() writes one JSON line per call with component, level and child fields", () => {
  const lines: string[] = [];
  const log = createLogger("hydrate", { level: "info", write: (l) => lines.push(l) });
  log.debug("hidden");
  log.child({ mapping: "users" }).warn("slow", { password: "p", rows: 3 });
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0]);
  assert.equal(rec.component, "hydrate");
  assert.equal(rec.level, "warn");
  assert.equal(rec.mapping, "users");
  assert.equal(rec.rows, 3);
  assert.equal(rec.password, REDACTED);
  assert.ok(!Number.isNaN(Date.parse(rec.ts)));
});
