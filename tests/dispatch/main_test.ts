import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { freePort } from "../../shared/stack/process.ts";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";

const MAIN = fromFileUrl(new URL("../../workers/dispatch/main.ts", import.meta.url));

Deno.test("a node process takes its bind address from env over args, serves health there and registers", async () => {
  await using db = await createTestDatabase();
  const envPort = freePort();
  const argPort = freePort();
  const env: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-worker-options", MAIN, `127.0.0.1:${argPort}`, "control", db.url],
    clearEnv: true,
    env: { ...env, DISPATCH_BIND: `127.0.0.1:${envPort}`, WHARF_LOG_LEVEL: "warn" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let status = 0;
    const end = performance.now() + 30_000;
    while (performance.now() < end && status !== 200) {
      try {
        const res = await fetch(`http://127.0.0.1:${envPort}/healthz`);
        status = res.status;
        await res.body?.cancel();
      } catch { /* not up yet */ }
      if (status !== 200) await abortableSleep(100);
    }
    assert.equal(status, 200);
    let [node] = await db.sql`select bind from control.dispatch_nodes`;
    while (!node && performance.now() < end) {
      await abortableSleep(100);
      [node] = await db.sql`select bind from control.dispatch_nodes`;
    }
    assert.equal(node.bind, `127.0.0.1:${envPort}`);
    await assert.rejects(fetch(`http://127.0.0.1:${argPort}/healthz`));
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  }
  const [node] = await db.sql`select stopped_at from control.dispatch_nodes`;
  assert.ok(node.stopped_at, "a graceful stop marks the node stopped");
});
