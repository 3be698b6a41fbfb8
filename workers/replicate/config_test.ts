import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../../shared/config.ts";
import { loadReplicateConfig } from "./config.ts";

const BASE = {
  DATABASE_URL: "postgres://u:secretpw@127.0.0.1:5432/wharf",
  REPLICATE_TARGET_URL: "postgres://u:secretpw@127.0.0.1:5432/warehouse",
  REPLICATE_BUCKET: "wharf-warehouse",
};

Deno.test("loadReplicateConfig() applies defaults and lets the environment override the file", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "replicate.json");
  await Deno.writeTextFile(path, JSON.stringify({ REPLICATE_SLOT: "from_file", REPLICATE_BATCH_ROWS: 10 }));
  const c = loadReplicateConfig({ ...BASE, REPLICATE_CONFIG: path, REPLICATE_BATCH_ROWS: "20" });
  assert.equal(c.REPLICATE_SLOT, "from_file");
  assert.equal(c.REPLICATE_BATCH_ROWS, 20);
  assert.equal(c.REPLICATE_PIPELINE, "main");
  assert.equal(c.REPLICATE_TARGET, "postgres");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loadReplicateConfig() names a bad variable without echoing its value", () => {
  assert.throws(
    () => loadReplicateConfig({ ...BASE, REPLICATE_TARGET_URL: "mysql://u:secretpw@h/db" }),
    (e: unknown) =>
      e instanceof ConfigError && /REPLICATE_TARGET_URL/.test(e.message) && !/secretpw/.test(e.message),
  );
});

Deno.test("loadReplicateConfig() refuses binary files for a Redshift target", () => {
  assert.equal(
    loadReplicateConfig({ ...BASE, REPLICATE_FILE_FORMAT: "binary" }).REPLICATE_FILE_FORMAT,
    "binary",
  );
  assert.throws(
    () =>
      loadReplicateConfig({
        ...BASE,
        REPLICATE_TARGET: "redshift",
        REPLICATE_TARGET_URL: "redshift://u:p@h:5439/db",
        REPLICATE_FILE_FORMAT: "binary",
      }),
    (e: unknown) =>
      e instanceof ConfigError && /REPLICATE_FILE_FORMAT/.test(e.message) && /Redshift/.test(e.message),
  );
  assert.throws(
    () => loadReplicateConfig({ ...BASE, REPLICATE_FILE_FORMAT: "parquet" }),
    (e: unknown) => e instanceof ConfigError && /REPLICATE_FILE_FORMAT/.test(e.message),
  );
});

Deno.test("loadReplicateConfig() keeps 64 MiB of batch files in memory by default, 0 for none, and refuses a negative", () => {
  assert.equal(loadReplicateConfig(BASE).REPLICATE_SPOOL_MEMORY_MB, 64);
  assert.equal(loadReplicateConfig({ ...BASE, REPLICATE_SPOOL_MEMORY_MB: "0" }).REPLICATE_SPOOL_MEMORY_MB, 0);
  for (const bad of ["-1", "lots", "1.5"]) {
    assert.throws(
      () => loadReplicateConfig({ ...BASE, REPLICATE_SPOOL_MEMORY_MB: bad }),
      (e: unknown) => e instanceof ConfigError && /REPLICATE_SPOOL_MEMORY_MB/.test(e.message),
      bad,
    );
  }
});
