import assert from "node:assert/strict";
import { z } from "zod";
import { boolVar, ConfigError, loadConfig, portVar, urlVar } from "./config.ts";

const Schema = z.object({
  DATABASE_URL: urlVar(["postgres:", "postgresql:"]),
  OPS_PORT: portVar.default(9100),
  SSL_ENABLED: boolVar.default(false),
});

Deno.test("loadConfig() applies defaults and coercions", () => {
  const c = loadConfig(Schema, { DATABASE_URL: "postgres://a@b/c", SSL_ENABLED: "yes" });
  assert.deepEqual(c, { DATABASE_URL: "postgres://a@b/c", OPS_PORT: 9100, SSL_ENABLED: true });
});

Deno.test("loadConfig() names every bad variable and never echoes a value", () => {
  const secret = "mysql://root:TOPSECRET@db/x";
  let err: unknown;
  try {
    loadConfig(Schema, { DATABASE_URL: secret, OPS_PORT: "99999", SSL_ENABLED: "maybe" });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  const names = err.problems.map((p) => p.variable).sort();
  assert.deepEqual(names, ["DATABASE_URL", "OPS_PORT", "SSL_ENABLED"]);
  assert.match(err.message, /DATABASE_URL: must be a URL starting with postgres:\/\/ or postgresql:\/\//);
  assert.ok(!err.message.includes("TOPSECRET"));
  assert.ok(!err.message.includes("maybe"));
});

Deno.test("loadConfig() reports a missing required variable by name", () => {
  assert.throws(() => loadConfig(Schema, {}), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.problems[0].variable, "DATABASE_URL");
    return true;
  });
});

Deno.test("loadConfig() treats empty strings as unset so defaults apply", () => {
  const c = loadConfig(Schema, { DATABASE_URL: "postgres://x/y", OPS_PORT: "" });
  assert.equal(c.OPS_PORT, 9100);
});
