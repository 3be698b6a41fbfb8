import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { waitUntil } from "./stack/process.ts";
import { captureText, createTestDatabase } from "./testing/mod.ts";
import { abortableSleep, backoffMs, startWorker, Waker } from "./worker.ts";

Deno.test("abortableSleep() returns true after the time and false at once when aborted", async () => {
  assert.equal(await abortableSleep(5), true);
  const c = new AbortController();
  const t0 = performance.now();
  const p = abortableSleep(10_000, c.signal);
  setTimeout(() => c.abort(), 20);
  assert.equal(await p, false);
  assert.ok(performance.now() - t0 < 1_000);
  assert.equal(await abortableSleep(10_000, c.signal), false);
});

Deno.test("Waker: wake() ends a sleep early with true, abort with false, and a wake with nobody asleep is lost", async () => {
  const waker = new Waker();
  waker.wake(); // nobody sleeps: nothing to end
  let t = performance.now();
  const woken = waker.sleep(5_000);
  setTimeout(() => waker.wake(), 20);
  assert.equal(await woken, true);
  assert.ok(performance.now() - t < 1_000);
  const ac = new AbortController();
  t = performance.now();
  const aborted = waker.sleep(5_000, ac.signal);
  setTimeout(() => ac.abort(), 20);
  assert.equal(await aborted, false);
  assert.ok(performance.now() - t < 1_000);
  assert.equal(await waker.sleep(10), true, "the full time passed");
});

Deno.test("backoffMs() grows exponentially with jitter and stays under the cap", () => {
  assert.equal(backoffMs(0, 100, 10_000, () => 0), 50);
  assert.equal(backoffMs(3, 100, 10_000, () => 1), 800);
  assert.equal(backoffMs(40, 100, 10_000, () => 1), 10_000);
});

Deno.test("a worker receiving SIGTERM mid-wait stops within a second", async () => {
  const entry = fileURLToPath(new URL("./testing/fixtures/sleepy_worker.ts", import.meta.url));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry],
    env: { OPS_PORT: "0", WHARF_LOG_LEVEL: "info" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = captureText(child.stderr);
  await waitUntil(
    "the worker to run",
    () => Promise.resolve(stderr.text().includes('"state":"running"')),
    30_000,
    20,
  );
  await new Promise((r) => setTimeout(r, 200)); // well inside the 60 s wait
  const t0 = performance.now();
  child.kill("SIGTERM");
  const status = await child.status;
  const elapsed = performance.now() - t0;
  await stderr.done;
  const log = stderr.text();
  assert.equal(status.code, 0, log);
  assert.ok(elapsed < 1_000, `stopped after ${Math.round(elapsed)} ms`);
  assert.ok(log.includes("left the wait"));
  assert.ok(log.includes('"state":"stopped"'));
});

Deno.test("a worker serves /healthz (503 until ready) and /metrics, and reports to control tables", async () => {
  await using db = await createTestDatabase();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const handle = startWorker({
    name: "probe",
    config: z.object({ GREETING: z.string().default("hi") }),
    async run(ctx, config) {
      assert.equal(config.GREETING, "hi");
      ctx.metrics.counter("probe_loops_total", "Loops").inc();
      await gate;
      ctx.ready();
      ctx.reportTo(db.sql, () => ({ loops: 1 }), 50);
      while (await ctx.sleep(10_000));
    },
  }, { OPS_PORT: "0" });
  const base = `http://127.0.0.1:${handle.opsPort}`;
  const before = await fetch(`${base}/healthz`);
  assert.equal(before.status, 503);
  await before.body?.cancel();
  release();
  await waitUntil("healthz 200", async () => {
    const r = await fetch(`${base}/healthz`);
    await r.body?.cancel();
    return r.status === 200;
  });
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.ok(metrics.includes("probe_loops_total 1"));
  await waitUntil("a heartbeat row", async () => {
    const rows = await db.sql`select state from control.worker_instances where worker = 'probe'`;
    return rows.length === 1 && rows[0].state === "running";
  });
  assert.equal(await handle.stop(), 0);
  const [row] = await db.sql`select state, status from control.worker_instances where worker = 'probe'`;
  assert.equal(row.state, "stopped");
  assert.deepEqual(row.status, { loops: 1 });
});

Deno.test("a worker whose run throws ends in state failed with exit code 1", async () => {
  const handle = startWorker({
    name: "broken",
    config: z.object({}),
    run: () => Promise.reject(new Error("boom")),
  }, { OPS_PORT: "0" });
  assert.equal(await handle.done, 1);
  assert.equal(handle.state(), "failed");
});
