import assert from "node:assert/strict";
import { testEnv } from "../testing/mod.ts";
import { S3EventLog, type S3EventNotification } from "./s3_events.ts";

const event = (bucket: string, key: string): S3EventNotification => ({
  Records: [{ eventName: "ObjectCreated:Put", s3: { bucket: { name: bucket }, object: { key } } }],
});

Deno.test("the S3 event log numbers records, stamps increasing sequencers and keeps both across a reopen", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "s3ev-" });
  const log = await S3EventLog.open(dir);
  for (let i = 0; i < 5; i++) log.append(event(i % 2 ? "b" : "a", `k${i}`));
  const a = log.read("a", 0, 10);
  assert.deepEqual(a.map((e) => e.seq), [1, 3, 5]);
  const seqs = a.map((e) => JSON.parse(e.body).Records[0].s3.object.sequencer as string);
  assert.deepEqual([...seqs].sort(), seqs);
  assert.equal(new Set(seqs).size, 3, "same-millisecond writes still get distinct sequencers");
  assert.deepEqual(log.read("a", 3, 10).map((e) => e.seq), [5]);
  assert.deepEqual(log.read("a", 0, 2).map((e) => e.seq), [1, 3]);

  const again = await S3EventLog.open(dir);
  assert.equal(again.epoch, log.epoch);
  again.append(event("a", "k5"));
  assert.deepEqual(again.read("a", 0, 10).map((e) => e.seq), [1, 3, 5, 6]);
  await Deno.remove(dir, { recursive: true });
  assert.notEqual((await S3EventLog.open(dir)).epoch, log.epoch, "a wiped log is a new epoch");
});

Deno.test("a long poll answers on the first record of its bucket, and shutdown ends it at once", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "s3ev-" });
  const log = await S3EventLog.open(dir);
  const t0 = performance.now();
  const waiting = log.poll("a", 0, 10, 10_000);
  setTimeout(() => log.append(event("b", "other")), 20);
  setTimeout(() => log.append(event("a", "mine")), 60);
  const got = await waiting;
  assert.deepEqual(got.map((e) => e.bucket), ["a"]);
  assert.ok(performance.now() - t0 < 5_000);
  const idle = log.poll("a", 99, 10, 10_000);
  log.wakeAll();
  assert.deepEqual(await idle, []);
});
