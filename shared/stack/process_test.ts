import assert from "node:assert/strict";
import { startProcess, StopWaiting, waitUntil } from "./process.ts";

Deno.test("waitReady() gives up as soon as the process exits, naming where its output went", async () => {
  const proc = await startProcess({ name: "quitter", cmd: "sh", args: ["-c", "exit 3"] });
  const t0 = Date.now();
  await assert.rejects(
    proc.waitReady("the quitter to listen", () => Promise.resolve(false), 30_000, "quitter.log"),
    /Gave up waiting for the quitter to listen: it exited; see quitter\.log/,
  );
  assert.ok(Date.now() - t0 < 5_000, `gave up after ${Date.now() - t0} ms, not at once`);
});

Deno.test("waitUntil() retries a failing check, reports its last error at the deadline, stops at StopWaiting", async () => {
  let calls = 0;
  await waitUntil("the third call", () => Promise.resolve(++calls === 3), 5_000, 1);
  assert.equal(calls, 3);
  await assert.rejects(
    waitUntil("a broken check", () => Promise.reject(new Error("connection refused")), 50, 5),
    /Timed out after 50 ms waiting for a broken check: connection refused/,
  );
  calls = 0;
  await assert.rejects(
    waitUntil(
      "a lost cause",
      () => {
        calls++;
        return Promise.reject(new StopWaiting("it cannot happen"));
      },
      5_000,
      1,
    ),
    /Gave up waiting for a lost cause: it cannot happen/,
  );
  assert.equal(calls, 1);
});
