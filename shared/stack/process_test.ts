import assert from "node:assert/strict";
import { join } from "node:path";
import { testEnv } from "../testing/mod.ts";
import {
  recordProcesses,
  startChildrenInOwnSessions,
  startProcess,
  stopRecordedProcesses,
  StopWaiting,
  waitUntil,
} from "./process.ts";

Deno.test("waitReady() gives up as soon as the process exits, naming where its output went", async () => {
  const proc = await startProcess({ name: "quitter", cmd: "sh", args: ["-c", "exit 3"] });
  const t0 = performance.now();
  await assert.rejects(
    proc.waitReady("the quitter to listen", () => Promise.resolve(false), 30_000, "quitter.log"),
    /Gave up waiting for the quitter to listen: it exited; see quitter\.log/,
  );
  assert.ok(
    performance.now() - t0 < 5_000,
    `gave up after ${Math.round(performance.now() - t0)} ms, not at once`,
  );
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

Deno.test("startChildrenInOwnSessions() starts children out of this session, tracked by their own pid", async () => {
  const session = (pid: number | "self") =>
    Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ")[3];
  startChildrenInOwnSessions();
  let proc;
  try {
    proc = await startProcess({ name: "sleeper", cmd: "sleep", args: ["30"] });
  } finally {
    startChildrenInOwnSessions(false);
  }
  try {
    // Its own session (led by itself), and the pid is sleep's, not a wrapper's.
    await waitUntil(
      "the child's own session",
      () => Promise.resolve(session(proc.pid) === String(proc.pid)),
      2_000,
      10,
    );
    assert.notEqual(session(proc.pid), session("self"));
    // (setsid execs sleep in place, a moment after the spawn.)
    await waitUntil(
      "setsid to exec sleep",
      () => Promise.resolve(/^sleep\0/.test(Deno.readTextFileSync(`/proc/${proc.pid}/cmdline`))),
      2_000,
      10,
    );
  } finally {
    await proc.stop(2_000);
  }
  assert.equal(proc.running, false);
  // A program that execs another at once (as setpriv execs Postgres) never shows its own command line:
  // the start does not wait for it (it used to wait 10 s, then warn).
  startChildrenInOwnSessions();
  const t0 = performance.now();
  let wrapped;
  try {
    wrapped = await startProcess({ name: "wrapped", cmd: "env", args: ["sleep", "31"] });
  } finally {
    startChildrenInOwnSessions(false);
  }
  try {
    assert.ok(performance.now() - t0 < 5_000, `the start took ${Math.round(performance.now() - t0)} ms`);
  } finally {
    await wrapped.stop(2_000);
  }
  const plain = await startProcess({ name: "sleeper", cmd: "sleep", args: ["30"] });
  try {
    assert.equal(session(plain.pid), session("self"), "without it, children stay in this session");
  } finally {
    await plain.stop(2_000);
  }
});

Deno.test("stopRecordedProcesses() stops recorded processes still running their command, and only those", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "pids-" });
  const path = join(dir, "pids.json");
  const a = await startProcess({ name: "a", cmd: "sleep", args: ["30"] });
  const b = await startProcess({ name: "b", cmd: "sleep", args: ["31"] });
  // Ignores SIGTERM once it has said so (a signal before the trap is set would end it).
  const stubbornOut = join(dir, "stubborn.out");
  const stubborn = await startProcess({
    name: "stubborn",
    cmd: "sh",
    args: ["-c", "trap '' TERM; echo trapped; sleep 32"],
    output: stubbornOut,
  });
  try {
    await waitUntil(
      "the children to exec",
      () =>
        Promise.resolve(
          [a, b].every((p) => /sleep\0/.test(Deno.readTextFileSync(`/proc/${p.pid}/cmdline`))),
        ),
    );
    await waitUntil(
      "the trap to be set",
      async () => (await Deno.readTextFile(stubbornOut)).includes("trapped"),
    );
    await recordProcesses(path, [a, b, stubborn]);
    // b's record is made to name another command line: as if its pid now belonged to another program.
    const records = JSON.parse(await Deno.readTextFile(path));
    assert.equal(records.length, 3);
    records[1].cmdline = "something-else\0";
    await Deno.writeTextFile(path, JSON.stringify(records));

    const stopped = await stopRecordedProcesses(path, 300);
    assert.deepEqual(stopped, ["stubborn", "a"], "latest first; b's pid is not the recorded program");
    assert.equal((await a.status).signal, "SIGTERM");
    assert.equal((await stubborn.status).signal, "SIGKILL", "killed after the grace period");
    assert.equal(b.running, true);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    // No record, or a broken one: nothing to stop.
    assert.deepEqual(await stopRecordedProcesses(path), []);
    await Deno.writeTextFile(path, "{not json");
    assert.deepEqual(await stopRecordedProcesses(path), []);
  } finally {
    await Promise.all([a.stop(1_000), b.stop(1_000), stubborn.stop(1_000)]);
  }
});
