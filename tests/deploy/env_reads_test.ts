import assert from "node:assert/strict";
import { envNamesIn, envReads, stripComments } from "../../deploy/env_reads.ts";

const SOURCE = `
import { z } from "zod";
// Deno.env.get("IN_A_COMMENT") is not a read
/** env.ALSO_A_COMMENT neither */
const Config = z.object({
  REDIS_URL: urlVar(["redis:", "rediss:"]).default("redis://127.0.0.1:6379"),
  pcred: z.string().optional(),
  HYDRATE_INTERVAL_S: Seconds(60, 1, 3600),
  nested: z.object({ inner: z.string() }).optional(),
});
const Body = z.object({ email: z.string(), password: z.string().min(8) });
const Extended = OpsConfig.extend({ EXTRA_KNOB: z.string() });
const a = Deno.env.get("GETTER_NAME");
const b = env.PROPERTY_NAME ?? env?.OPTIONAL_PROPERTY;
const c = env["INDEXED_NAME"];
const d = envGet("HELPER_NAME");
const e = databaseUrlFromEnv(env, ["pcred", "PCRED", "DATABASE_URL"]);
const url = "http://example.com//not-a-comment";
Deno.env.set("SET_IS_NOT_A_READ", "1");
const f = env.get;
`;

Deno.test("envNamesIn() finds getters, env properties, helper arguments and env-schema keys", () => {
  const names = [...envNamesIn(SOURCE)].sort();
  assert.deepEqual(names, [
    "DATABASE_URL",
    "EXTRA_KNOB",
    "GETTER_NAME",
    "HELPER_NAME",
    "HYDRATE_INTERVAL_S",
    "INDEXED_NAME",
    "OPTIONAL_PROPERTY",
    "PCRED",
    "PROPERTY_NAME",
    "REDIS_URL",
    "nested",
    "pcred",
  ]);
});

Deno.test("envNamesIn() ignores comments and request-body schemas with lower-case keys only", () => {
  const names = envNamesIn(SOURCE);
  for (
    const n of ["IN_A_COMMENT", "ALSO_A_COMMENT", "email", "password", "inner", "SET_IS_NOT_A_READ", "get"]
  ) {
    assert.ok(!names.has(n), `${n} is not a read`);
  }
});

Deno.test("stripComments() keeps strings that contain comment markers", () => {
  const out = stripComments(`const u = "http://x//y"; // gone\nconst v = '/* kept */'; /* gone */`);
  assert.match(out, /"http:\/\/x\/\/y"/);
  assert.match(out, /'\/\* kept \*\/'/);
  assert.doesNotMatch(out, /gone/);
});

Deno.test("envReads() follows the module graph of an entry into the shared modules it imports", async () => {
  const reads = await envReads("workers/dispatch/main.ts");
  // The worker's own settings, the ops server's (shared/worker.ts), the logger's and the TLS ones (shared/db.ts).
  for (
    const n of [
      "DISPATCH_CONCURRENCY",
      "DISPATCH_SCHEMA",
      "PGPASSWORD",
      "OPS_PORT",
      "WHARF_LOG_LEVEL",
      "PGSSLMODE",
    ]
  ) {
    assert.ok(reads.has(n), `dispatch reads ${n}`);
  }
  // Test helpers are not part of a process.
  assert.ok(![...reads].some((n) => n.startsWith("WHARF_TEST")));
});
