import assert from "node:assert/strict";
import { converged, eventually, fixture } from "./_helpers.ts";

/**
 * A fixture with table `public.<name>` and its pipeline streaming, with batch rules that would cut no batch
 * within a test (a minute, a million rows): only the caught-up cuts do.
 */
async function streaming(name: string) {
  const f = await fixture(async (sql) => {
    await sql.unsafe(`create table public.${name} (id int primary key, v text)`);
  }, [`public.${name}`]);
  try {
    const p = f.start({ batchMs: 60_000, batchRows: 1_000_000 });
    await eventually("the stream to start", () => Promise.resolve(p.status.state === "streaming"));
    return { f, p };
  } catch (e) {
    await f[Symbol.asyncDispose]();
    throw e;
  }
}

Deno.test("once the stream is caught up a batch is loaded at once, without waiting for the batch timer or size", async () => {
  const { f: fx, p } = await streaming("quick");
  await using f = fx;
  for (let round = 0; round < 3; round++) {
    await f.source.sql.begin(async (tx) => {
      await tx`insert into public.quick select g, 'r' || ${round} from generate_series(${
        round * 100 + 1
      }::int,
                                                                                   ${
        round * 100 + 100
      }::int) g`;
      await tx`update public.quick set v = 'u' where id = ${round * 100 + 1}`;
    });
    // Without the caught-up cut this would wait for the 60 s timer.
    await converged(f.source.sql, f.target.sql, ["public.quick"], 15_000);
  }
  // A batch is recorded just after its load commits: the last one may not be there yet.
  const batches = async () =>
    (await f.source.sql`select count(*)::int as n from control.replicate_batches
                         where pipeline = ${f.pipeline} and table_name = 'public.quick'`)[0].n as number;
  await eventually("the third batch to be recorded", async () => (await batches()) >= 3);
  assert.equal(await batches(), 3, "one batch per transaction");
  await p.stop();
});

Deno.test("a steady trickle of transactions is cut into batches at most every 50 ms, not one per transaction", async () => {
  const { f: fx, p } = await streaming("trickle");
  await using f = fx;
  // Transactions a few milliseconds apart: each is followed by more than 5 ms of quiet, which alone would
  // make each a batch of its own.
  const t0 = performance.now();
  for (let i = 1; i <= 60; i++) {
    // Flushed at commit: the test server commits asynchronously, which would send them in bursts.
    await f.source.sql.begin(async (tx) => {
      await tx`set local synchronous_commit = on`;
      await tx`insert into public.trickle values (${i}, 'x')`;
    });
    await new Promise((r) => setTimeout(r, 8));
  }
  const elapsed = performance.now() - t0;
  await converged(f.source.sql, f.target.sql, ["public.trickle"], 15_000);
  const [{ n }] = await f.source.sql`select count(*)::int as n from control.replicate_batches
                                      where pipeline = ${f.pipeline} and table_name = 'public.trickle'`;
  // Caught-up cuts at least 50 ms apart (the last may come after the loop: one more).
  assert.ok(
    n <= Math.ceil(elapsed / 50) + 2,
    `${n} batches for 60 transactions in ${Math.round(elapsed)} ms`,
  );
  await p.stop();
});
