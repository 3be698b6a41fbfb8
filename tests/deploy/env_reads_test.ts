import assert from "node:assert/strict";
import { envNamesIn, envReads, liveEnvNames, stripComments } from "../../deploy/env_reads.ts";

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

Deno.test("liveEnvNames() counts a config schema only for a process that reaches the code loading it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wharf-env-reads-" });
  try {
    const write = (name: string, text: string) => Deno.writeTextFileSync(`${dir}/${name}`, text);
    write(
      "worker_config.ts",
      `import { z } from "zod";
export const WorkerConfig = z.object({ WORKER_ONLY_KNOB: z.string(), SHARED_PASSWORD: z.string() });
export const Base = z.object({ BASE_BUCKET: z.string() });
export const Full = Base.extend({ FULL_ONLY_SECRET: z.string() });
export function loadFull(env: Record<string, string>) {
  return Full.parse(env);
}
export function derive(env: Record<string, string>): string {
  const e = env ?? {};
  return e.SHARED_PASSWORD + (/^x\\/\\//.test("y") ? "'" : '"');
}
const AT_IMPORT = Deno.env.get("READ_AT_IMPORT");
export type Settings = z.infer<typeof WorkerConfig>;
`,
    );
    write(
      "route.ts",
      `import { Base, derive } from "./worker_config.ts";
import type { Settings } from "./worker_config.ts";
export const route = (env: Record<string, string>) => [derive(env), Base.parse(env)];
`,
    );
    const names = [...await liveEnvNames([`${dir}/route.ts`, `${dir}/worker_config.ts`], [`${dir}/route.ts`])]
      .sort();
    assert.deepEqual(names, ["BASE_BUCKET", "READ_AT_IMPORT", "SHARED_PASSWORD"]);
    // The worker itself, whose entry loads its schema, is charged with all of it.
    const all = await liveEnvNames([`${dir}/worker_config.ts`], [`${dir}/worker_config.ts`]);
    for (const n of ["WORKER_ONLY_KNOB", "FULL_ONLY_SECRET", "BASE_BUCKET"]) assert.ok(all.has(n), n);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("envReads() charges web with the Patroni credentials its switchover needs, not the cluster member's settings", async () => {
  const reads = await envReads("web/main.ts");
  for (const n of ["PATRONI_API_PASSWORD", "WEB_PORT", "FEED_JWT_SECRET"]) assert.ok(reads.has(n), n);
  for (const n of ["DCS_TTL", "ETCD_CLIENT_PORT", "DISCOVERY_SOURCE", "APP_NAME"]) {
    assert.ok(!reads.has(n), n);
  }
  const imgproc = await envReads("workers/imgproc/main.ts");
  assert.ok(imgproc.has("FEED_THUMBNAILS_BUCKET") && !imgproc.has("FEED_JWT_SECRET"));
});

Deno.test("stripComments() blanks regular-expression literals, whose slashes are not comments", () => {
  const out = stripComments(`if (/^postgres(ql)?:\\/\\//.test(a)) x = env.KEPT_NAME; // gone`);
  assert.match(out, /env\.KEPT_NAME/);
  assert.doesNotMatch(out, /gone|postgres/);
});
