/**
 * `deno task dev` as a user runs it: the stack comes up, the web answers, Ctrl-C stops every child, and
 * data survives a restart.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connectPostgres } from "../shared/db.ts";
import { freePort, stopRecordedProcesses, tcpOpen, waitUntil } from "../shared/stack/process.ts";
import { captureText, testEnv } from "../shared/testing/mod.ts";

const DEV = fileURLToPath(new URL("../shared/stack/dev.ts", import.meta.url));

/**
 * Starts dev as a terminal would: leading a process group of its own (setsid execs it in place, so the
 * child's pid is dev's and the group's id). Ctrl-C is then SIGINT to that whole group.
 */
async function startDev(stateDir: string, port: number) {
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), "run", "-A", DEV, "--port", String(port), "--state-dir", stateDir],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = captureText(child.stdout), stderr = captureText(child.stderr);
  const output = () => stdout.text() + stderr.text();
  await waitUntil(
    "dev to print its summary",
    () => {
      if (output().includes("Cannot start")) throw new Error(output());
      return Promise.resolve(output().includes("Ctrl-C stops everything"));
    },
    120_000,
    100,
  );
  return {
    child,
    output,
    /** Ctrl-C: SIGINT to every process of the terminal's group (dev, and whatever shares its group). */
    async stop() {
      Deno.kill(-child.pid, "SIGINT");
      const status = await child.status;
      await Promise.all([stdout.done, stderr.done]);
      return status;
    },
  };
}

async function readEnv(stateDir: string): Promise<Record<string, string>> {
  const text = await Deno.readTextFile(join(stateDir, "env"));
  return Object.fromEntries(
    text.trim().split("\n").map((l) => {
      const i = l.indexOf("=");
      return [l.slice(0, i), JSON.parse(l.slice(i + 1))];
    }),
  );
}

Deno.test("deno task dev brings the stack up, stops every child on Ctrl-C, and keeps data", async () => {
  const stateDir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "dev-" });
  const port = freePort();
  const first = await startDev(stateDir, port);
  const ports = JSON.parse(await Deno.readTextFile(join(stateDir, "ports.json")));
  try {
    await waitUntil("the web to answer", async () => {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      const body = await r.json();
      return r.status === 200 && body.database === "ok";
    }, 180_000);
    const env = await readEnv(stateDir);
    // The seeded console admin logs in with the printed password and sees the console.
    const form = await fetch(`http://127.0.0.1:${port}/console/login`);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await form.text())?.[1] ?? "";
    const login = await fetch(`http://127.0.0.1:${port}/console/login`, {
      method: "POST",
      headers: { cookie: (form.headers.get("set-cookie") ?? "").split(";")[0] },
      body: new URLSearchParams({
        name: env.WHARF_ADMIN_USER,
        password: env.WHARF_ADMIN_PASSWORD,
        _csrf: csrf,
      }),
      redirect: "manual",
    });
    await login.body?.cancel();
    assert.equal(login.status, 303);
    const cookie = (login.headers.getSetCookie().find((c) =>
      c.startsWith("wharf_session=")
    ) ?? "").split(";")[0];
    const page = await fetch(`http://127.0.0.1:${port}/console`, { headers: { cookie } });
    assert.match(await page.text(), /data-island="HealthCheck"/);
    const sql = connectPostgres(env.DATABASE_URL, { max: 1 });
    await sql`create table if not exists survives (n int)`;
    await sql`insert into survives values (42)`;
    await sql.end();
    const out = first.output();
    assert.ok(!out.includes(env.DATABASE_URL), "the database password is not printed");
    assert.match(out, /admin login {2}admin \/ \S+/);
  } finally {
    const status = await first.stop();
    assert.equal(status.code, 0, first.output());
  }
  // Each worker was told once to stop (a second signal makes it exit at once, skipping its drain): the
  // group's SIGINT reached dev only, which then stopped the workers, then the services.
  assert.ok(!first.output().includes("second signal"), first.output());
  assert.match(first.output(), /\[dev\] stopped/);
  for (const p of [port, ports.postgres, ports.redis, ports.s3]) {
    assert.equal(await tcpOpen(p), false, `port ${p} is closed after Ctrl-C`);
  }

  // Killed outright, dev cannot stop its children (they run in sessions of their own); the next run
  // stops them, by the pids it recorded, then starts afresh on the same data.
  const second = await startDev(stateDir, port);
  let leftBehind: { name: string; pid: number; cmdline: string }[] = [];
  try {
    await waitUntil("the web to listen", () => tcpOpen(port), 60_000);
    leftBehind = JSON.parse(await Deno.readTextFile(join(stateDir, "pids.json")));
    Deno.kill(second.child.pid, "SIGKILL");
    await second.child.status;
    assert.equal(await tcpOpen(port), true, "the web process outlived dev");
  } catch (e) {
    // Nothing is left running, even when this part fails.
    await stopRecordedProcesses(join(stateDir, "pids.json"), 5_000);
    throw e;
  }
  const third = await startDev(stateDir, port);
  try {
    assert.match(third.output(), /stopped what an earlier run left running: .*web.*postgres/);
    const env = await readEnv(stateDir);
    const sql = connectPostgres(env.DATABASE_URL, { max: 1 });
    const rows = await sql`select n from survives`;
    await sql.end();
    assert.deepEqual(rows.map((r) => r.n), [42]);
  } finally {
    assert.equal((await third.stop()).code, 0);
  }
  for (const p of [port, ports.postgres, ports.redis, ports.s3]) {
    assert.equal(await tcpOpen(p), false, `port ${p} is closed after Ctrl-C`);
  }
  // Every process the killed run left was stopped by the next one (a survivor is killed here, then named).
  const survivors = leftBehind.filter((r) => {
    try {
      return Deno.readTextFileSync(`/proc/${r.pid}/cmdline`) === r.cmdline;
    } catch {
      return false;
    }
  });
  for (const r of survivors) Deno.kill(r.pid, "SIGKILL");
  assert.deepEqual(survivors.map((r) => r.name), [], third.output());
  assert.equal(
    leftBehind.length,
    9,
    `postgres, redis, s3, web and five workers were recorded: ${
      leftBehind.map((r) => r.name)
    }\n${second.output()}`,
  );
  // Each record is of the program itself (not of a process caught between fork and exec).
  for (const r of leftBehind) {
    assert.ok(
      r.cmdline.includes(r.name.replace(/-\d+$/, "")) && !r.cmdline.includes("stack/dev.ts"),
      `${r.name}: ${r.cmdline}`,
    );
  }
});
