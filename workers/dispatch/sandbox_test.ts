import assert from "node:assert/strict";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { type DispatchEvent, runInSandbox, SandboxPool, type WireEvent } from "./sandbox.ts";

Deno.test("a function that loops forever is stopped by its timeout and the caller stays responsive", async () => {
  let ticks = 0;
  const iv = setInterval(() => ticks++, 10);
  const r = await runInSandbox({ code: "export default () => { while (true) {} }", timeoutMs: 300 });
  clearInterval(iv);
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.timedOut);
  assert.ok(ticks >= 10, `the host event loop kept running (${ticks} ticks)`);
});

Deno.test("the sandbox denies file system, network, env and subprocess access", async () => {
  for (
    const body of [
      'await Deno.readTextFile("/etc/hostname")',
      'await fetch("http://127.0.0.1:8080/")',
      'Deno.env.get("HOME")',
      'await new Deno.Command("true").output()',
      'await Deno.writeTextFile("/tmp/x", "x")',
    ]
  ) {
    const r = await runInSandbox({ code: `export default async () => { ${body}; }`, timeoutMs: 30_000 });
    assert.equal(r.ok, false, body);
    assert.match(!r.ok ? r.error : "", /Requires|NotCapable|permission/i, body);
  }
});

Deno.test("code that does not compile is reported with the compiler's message", async () => {
  const r = await runInSandbox({
    code: "export default () => { let x = ; }",
    timeoutMs: 30_000,
    checkOnly: true,
  });
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /Expression expected|Unexpected/i);
  const ok = await runInSandbox({
    code: "export default (e: unknown) => e;",
    timeoutMs: 30_000,
    checkOnly: true,
  });
  assert.equal(ok.ok, true);
});

Deno.test("a function's database handle runs queries through the node, read-only ones in a read-only transaction", async () => {
  await using db = await createTestDatabase();
  await db.sql`create table t (id int primary key, v text)`;
  const code = `export default async (e, db) => {
    await db.sql\`insert into t values (\${e.id}, \${e.new.v})\`;
    const rows = await db.readonly.query("select count(*)::int as n from t");
    if (rows[0].n !== 1) throw new Error("bad count");
    await db.readonly.query("insert into t values (2, 'no')");
  }`;
  const r = await runInSandbox({
    code,
    timeoutMs: 30_000,
    sql: db.sql,
    event: {
      id: "1",
      function: "f",
      source: "trigger",
      table: null,
      op: null,
      row_id: null,
      new: { v: "a" },
      old: null,
      attempt: 1,
    },
  });
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /read-only/);
  assert.deepEqual([...await db.sql`select id, v from t`], [{ id: 1, v: "a" }]);
});

Deno.test("the pool reuses a warm worker for the same code but never one that timed out", async () => {
  const pool = new SandboxPool(4);
  try {
    // Module state persists on a reused worker, which shows reuse.
    const counter = "let n = 0; export default () => { n++; if (n > 1) throw new Error('reused ' + n); };";
    assert.equal((await pool.run({ code: counter, timeoutMs: 30_000 })).ok, true);
    const second = await pool.run({ code: counter, timeoutMs: 30_000 });
    assert.equal(!second.ok && second.error, "reused 2");
    const spin =
      "let n = 0; export default (e) => { if (e?.loop) { while (true) {} } n++; throw new Error('n=' + n); };";
    const loop = { loop: true } as unknown as DispatchEvent;
    assert.equal((await pool.run({ code: spin, timeoutMs: 30_000 }) as { error: string }).error, "n=1");
    const first = await pool.run({ code: spin, timeoutMs: 200, event: loop });
    assert.ok(!first.ok && first.timedOut);
    // The worker that looped was terminated: the next call gets a fresh module (n starts again).
    assert.equal((await pool.run({ code: spin, timeoutMs: 30_000 }) as { error: string }).error, "n=1");
    assert.equal((await pool.run({ code: spin, timeoutMs: 30_000 }) as { error: string }).error, "n=2");
  } finally {
    pool.close();
  }
});

Deno.test("a batch runs its events in order; a throw fails only its event; a timeout leaves later ones unstarted", async () => {
  const pool = new SandboxPool(4);
  const ev = (id: string, op: string | null = null) => ({ id, op }) as unknown as DispatchEvent;
  try {
    const code = `const seen = [];
      export default (e) => {
        seen.push(e.id);
        if (e.op === "fail") throw new Error("failed " + seen.join(","));
        if (e.op === "loop") { while (true) {} }
      };`;
    const t0 = performance.now();
    const r = await pool.runBatch({
      code,
      items: [
        { event: ev("1"), timeoutMs: 30_000 },
        { event: ev("2", "fail"), timeoutMs: 30_000 },
        { event: ev("3"), timeoutMs: 30_000 },
        { event: ev("4", "loop"), timeoutMs: 300 },
        { event: ev("5"), timeoutMs: 30_000 },
      ],
    });
    assert.deepEqual(
      r.map((x) => x.started ? (x.ok ? "ok" : x.timedOut ? "timeout" : x.error) : "not started"),
      [
        "ok",
        "failed 1,2",
        "ok",
        "timeout",
        "not started",
      ],
    );
    // Start times are on this process's clock, in order.
    const starts = r.flatMap((x) => x.started ? [x.startedAt] : []);
    assert.ok(starts.every((s, i) => s >= t0 - 1 && (i === 0 || s >= starts[i - 1])));

    // A batch stopped by its signal finishes the running event and leaves the rest unstarted.
    const controller = new AbortController();
    const slow = "export default () => new Promise((r) => setTimeout(r, 300));";
    const pending = pool.runBatch({
      code: slow,
      items: [1, 2, 3].map((i) => ({ event: ev(String(i)), timeoutMs: 30_000 })),
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 100);
    assert.deepEqual((await pending).map((x) => x.started && x.ok), [true, false, false]);
    assert.deepEqual((await pending).map((x) => x.started), [true, false, false]);
    // Each event's duration is known, a lone one's included.
    const [ran] = await pending;
    assert.ok(ran.started && ran.ms >= 250 && ran.ms < 5_000, `ms: ${ran.started && ran.ms}`);
  } finally {
    pool.close();
  }
});

Deno.test("start times and timeouts hold when the wall clock stepped before a sandbox worker started", async () => {
  for (const skew of [60_000, -60_000]) {
    const url = new URL(`./_skewed_worker.ts?skew=${skew}`, import.meta.url);
    const pool = new SandboxPool(4, 60_000, url);
    const ev = (id: string, op: string | null = null) => ({ id, op }) as unknown as DispatchEvent;
    const code = `export default async (e) => {
        if (e.op === "wait") await new Promise((r) => setTimeout(r, 200));
        if (e.op === "loop") { while (true) {} }
      };`;
    try {
      // The worker started first (its start, long on a fresh module cache, is not what is checked here).
      await pool.runBatch({ code, items: [{ event: ev("0"), timeoutMs: 30_000 }] });
      for (let round = 0; round < 3; round++) {
        const t0 = performance.now();
        const r = await pool.runBatch({
          code,
          items: [
            // Its short timeout has the node look at the batch while the next event waits.
            { event: ev("1"), timeoutMs: 100 },
            { event: ev("2", "wait"), timeoutMs: 2_000 },
            { event: ev("3"), timeoutMs: 30_000 },
          ],
        });
        const t1 = performance.now();
        // Stepped back, the waiting event would have timed out at once; forward, the batch would be fine
        // but every start would read a minute late.
        assert.deepEqual(r.map((x) => x.started && x.ok), [true, true, true], `skew ${skew}`);
        const starts = r.flatMap((x) => x.started ? [x.startedAt] : []);
        assert.ok(
          starts.every((s, i) => s >= t0 - 1 && s <= t1 + 1 && (i === 0 || s >= starts[i - 1])),
          `skew ${skew}: starts ${starts.map((s) => (s - t0).toFixed(1))} ms after the call, which took ${
            (t1 - t0).toFixed(1)
          } ms`,
        );
        assert.ok(starts[2] - starts[1] >= 150, `skew ${skew}: the wait took ${starts[2] - starts[1]} ms`);
      }
      // A function that never returns is stopped at its timeout, not a minute later.
      const t0 = performance.now();
      const [looped] = await pool.runBatch({ code, items: [{ event: ev("4", "loop"), timeoutMs: 300 }] });
      const took = performance.now() - t0;
      assert.ok(looped.started && !looped.ok && looped.timedOut, `skew ${skew}`);
      assert.ok(took >= 290 && took < 5_000, `skew ${skew}: stopped after ${took.toFixed(0)} ms`);
    } finally {
      pool.close();
    }
  }
});

Deno.test("a worker's start does not count against its first event's timeout", async () => {
  const pool = new SandboxPool(4, 60_000, new URL("./_slow_worker.ts", import.meta.url));
  const ev = { id: "1", op: null } as unknown as DispatchEvent;
  try {
    // The worker takes 800 ms to start (`_slow_start.ts`), longer than the 500 ms timeout; the function runs
    // 60 ms, so the node looks at its progress while it runs.
    const t0 = performance.now();
    const [r] = await pool.runBatch({
      code: "export default () => { const t = performance.now(); while (performance.now() - t < 60); }",
      items: [{ event: ev, timeoutMs: 500 }],
    });
    assert.ok(r.started && r.ok, JSON.stringify(r));
    assert.ok(performance.now() - t0 >= 800, "the worker started slowly");
    // A function that hangs (on a new worker, slow to start too) is stopped at its timeout, counted from the
    // worker's start, not from the batch's sending.
    const t1 = performance.now();
    const [hung] = await pool.runBatch({
      code: "export default () => new Promise(() => {})",
      items: [{ event: ev, timeoutMs: 500 }],
    });
    const stoppedAfter = Math.round(performance.now() - t1);
    assert.ok(hung.started && !hung.ok && hung.timedOut, JSON.stringify(hung));
    assert.ok(stoppedAfter >= 800 + 500 - 20, `stopped after ${stoppedAfter} ms, before its timeout was up`);
    assert.ok(stoppedAfter < 4_000, `stopped after ${stoppedAfter} ms`);
  } finally {
    pool.close();
  }
});

Deno.test("a batch's events reach the function whole: every field, rows as objects, short or wide", async () => {
  const pool = new SandboxPool(2);
  const wide = "x".repeat(5_000);
  const event = (id: string, n: unknown, o: unknown): WireEvent => ({
    id,
    function: "shape",
    source: "trigger",
    table: "public.t",
    op: "update",
    row_id: id,
    new_json: n === null ? null : JSON.stringify(n),
    old_json: o === null ? null : JSON.stringify(o),
    attempt: 2,
  });
  try {
    // The function reports what it saw through its error message.
    const code = `export default (e) => {
      throw new Error(JSON.stringify({ keys: Object.keys(e), spread: { ...e }, wide: e.new?.s?.length ?? null }));
    };`;
    const r = await pool.runBatch({
      code,
      items: [
        { event: event("1", { id: 1, s: "short" }, { id: 1, s: "before" }), timeoutMs: 5_000 },
        { event: event("2", { id: 2, s: wide }, null), timeoutMs: 5_000 },
      ],
    });
    const seen = r.map((x) => JSON.parse(x.started && !x.ok ? x.error : "null"));
    const keys = ["id", "function", "source", "table", "op", "row_id", "attempt", "new", "old"];
    assert.deepEqual(seen[0], {
      keys,
      spread: {
        id: "1",
        function: "shape",
        source: "trigger",
        table: "public.t",
        op: "update",
        row_id: "1",
        attempt: 2,
        new: { id: 1, s: "short" },
        old: { id: 1, s: "before" },
      },
      wide: 5,
    });
    // A wide row is parsed on first read, and is then an ordinary property like the others.
    assert.deepEqual(seen[1].keys, keys);
    assert.equal(seen[1].wide, 5_000);
    assert.deepEqual(seen[1].spread.new, { id: 2, s: wide });
    assert.equal(seen[1].spread.old, null);
  } finally {
    pool.close();
  }
});

Deno.test("warm workers a burst left behind are terminated once idle, all but the last one of each function", async () => {
  const pool = new SandboxPool(8, 60_000);
  const ev = (id: string) => ({ id }) as unknown as DispatchEvent;
  try {
    const slow = "export default () => new Promise((r) => setTimeout(r, 100));";
    // Four batches at once: four workers, idle once they finish.
    await Promise.all(
      [1, 2, 3, 4].map((i) =>
        pool.runBatch({ code: slow, items: [{ event: ev(String(i)), timeoutMs: 5_000 }] })
      ),
    );
    await pool.run({ code: "export default () => {}", event: ev("5"), timeoutMs: 5_000 });
    assert.equal(pool.idle, 5);
    // Not yet idle long enough: nothing goes.
    pool.reap(performance.now() + 30_000);
    assert.equal(pool.idle, 5);
    // Past the idle time the extra ones go; each function keeps its most recently used worker.
    pool.reap(performance.now() + 61_000);
    assert.equal(pool.idle, 2);
    // Ten times the idle time later, those go too.
    pool.reap(performance.now() + 601_000);
    assert.equal(pool.idle, 0);
    // And the pool still runs calls.
    const [r] = await pool.runBatch({ code: slow, items: [{ event: ev("6"), timeoutMs: 5_000 }] });
    assert.ok(r.started && r.ok);
  } finally {
    pool.close();
  }
});
