/**
 * `deno task bench:sandbox`: what running dispatch functions in the sandbox costs, without a database. A
 * no-op function runs on `BENCH_EVENTS` events (default 96,000) of a row-sized payload, through the
 * node's own path (`SandboxPool.runBatch`, batches of `BENCH_BATCH`, default 64, two at once), through
 * single calls (`SandboxPool.run`, one message pair per event), and called in this process with no
 * isolation at all (the peer: what the isolation is measured against). Figures: CPU per event of this
 * process (all threads, the sandbox workers included) and wall time per event.
 * Ratio: in-process CPU per event ÷ batched sandbox CPU per event.
 */
import process from "node:process";
import { type DispatchEvent, SandboxPool, type WireEvent } from "../workers/dispatch/sandbox.ts";
import { report, type Row } from "./_util.ts";

const N = Number(Deno.env.get("BENCH_EVENTS") ?? 96_000);
const BATCH = Number(Deno.env.get("BENCH_BATCH") ?? 64);
const CODE = "export default () => {}";

/** An event as a node posts it: the row as the JSON text Postgres sent. */
function wire(i: number): WireEvent {
  return {
    id: String(i),
    function: "noop",
    source: "trigger",
    table: "public.bench_t",
    op: "insert",
    row_id: String(i),
    new_json: `{"id": ${i}, "v": ${i}, "note": "row ${i}"}`,
    old_json: null,
    attempt: 1,
  };
}

/** Runs `step` (which handles `size` events from `from`) over N events, two at once; CPU and wall per event. */
async function measure(size: number, step: (from: number) => Promise<void>) {
  let next = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 2 }, async () => {
    while (next < N) {
      const from = next;
      next += size;
      await step(from);
    }
  }));
  const wallUs = (performance.now() - t0) * 1000 / N;
  const c = process.cpuUsage(c0);
  return { cpu_us_per_event: (c.user + c.system) / N, wall_us_per_event: wallUs };
}

const pool = new SandboxPool(8);
try {
  const batched = () =>
    measure(BATCH, async (from) => {
      const items = Array.from({ length: BATCH }, (_, k) => ({ event: wire(from + k), timeoutMs: 5_000 }));
      const results = await pool.runBatch({ code: CODE, items });
      if (results.some((r) => !r.started || !r.ok)) throw new Error("Cannot report: a sandboxed call failed");
    });
  const single = () =>
    measure(1, async (from) => {
      const w = wire(from);
      const event: DispatchEvent = { ...w, new: JSON.parse(w.new_json!), old: null };
      const r = await pool.run({ code: CODE, event, timeoutMs: 5_000 });
      if (!r.ok) throw new Error("Cannot report: a sandboxed call failed");
    });
  const mod = await import("data:application/typescript;base64," + btoa(CODE));
  const fn = mod.default as (e: unknown) => unknown;
  const inProcess = () =>
    measure(BATCH, async (from) => {
      for (let k = 0; k < BATCH; k++) {
        const w = wire(from + k);
        await fn({ ...w, new: JSON.parse(w.new_json!), old: null });
      }
    });
  // Warm both sides (workers started, code loaded, JIT), then measure each twice and keep the better run.
  await batched();
  await single();
  await inProcess();
  const best = async (run: () => ReturnType<typeof measure>) => {
    const [a, b] = [await run(), await run()];
    return a.cpu_us_per_event <= b.cpu_us_per_event ? a : b;
  };
  const rows: Row[] = [
    { run: `sandbox, batches of ${BATCH}`, events: N, ...(await best(batched)) },
    { run: "sandbox, one call per event", events: N, ...(await best(single)) },
    { run: "in process, no isolation (peer)", events: N, ...(await best(inProcess)) },
  ];
  const cpu = (i: number) => Number(rows[i].cpu_us_per_event);
  report("sandbox", rows, {
    ratio: Number((cpu(2) / cpu(0)).toFixed(3)),
    batch_cpu_us_per_event: Number(cpu(0).toFixed(2)),
    single_cpu_us_per_event: Number(cpu(1).toFixed(2)),
    in_process_cpu_us_per_event: Number(cpu(2).toFixed(2)),
    events: N,
    batch: BATCH,
  });
} finally {
  pool.close();
}
