import assert from "node:assert/strict";
import { defaultSpoolDir, removeStaleSpools } from "./main.ts";

Deno.test("spool folders of workers that are gone are removed, a running worker's and other pipelines' stay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A process that has ended: its pid is free.
    const ended = new Deno.Command("true").spawn();
    await ended.status;
    const gone = defaultSpoolDir("demo", ended.pid, dir);
    const mine = defaultSpoolDir("demo", Deno.pid, dir);
    const other = defaultSpoolDir("orders", ended.pid, dir);
    const similar = defaultSpoolDir("demo-2", ended.pid, dir);
    for (const d of [gone, mine, other, similar]) await Deno.mkdir(`${d}/batch-1`, { recursive: true });
    assert.deepEqual(await removeStaleSpools("demo", dir), [`wharf-replicate-demo-${ended.pid}`]);
    const left = [];
    for await (const e of Deno.readDir(dir)) left.push(e.name);
    assert.deepEqual(left.sort(), [mine, other, similar].map((d) => d.slice(dir.length + 1)).sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
