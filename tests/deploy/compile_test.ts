import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { checkRuntime, compileArgs, compileJobs, runtimeUrl } from "../../deploy/compile.ts";
import { PROCESSES, processNamed } from "../../deploy/processes.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const SCRIPT = join(ROOT, "deploy/compile.ts");

/** A loopback listener that accepts connections and never answers: a network that swallows packets. */
function blackHole() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    try {
      for await (const c of listener) conns.push(c);
    } catch { /* closed */ }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/denort.zip`,
    [Symbol.dispose]() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      listener.close();
    },
  };
}

Deno.test("compile arguments bake in each process's permissions, flags, embedded files and output", () => {
  const dispatch = compileArgs(processNamed("dispatch"), {
    entry: "workers/dispatch/main.ts",
    output: "dist/wharf-dispatch",
  });
  assert.deepEqual(dispatch.slice(0, 3), ["compile", "--frozen", "--no-check"]);
  for (const f of ["--allow-net", "--allow-env", "--unstable-worker-options"]) {
    assert.ok(dispatch.includes(f), f);
  }
  assert.ok(
    !dispatch.includes("--allow-all") && !dispatch.includes("-A") && !dispatch.includes("--allow-run"),
  );
  assert.equal(dispatch[dispatch.indexOf("--include") + 1], "workers/dispatch/sandbox_worker.ts");
  assert.deepEqual(dispatch.slice(-3), ["--output", "dist/wharf-dispatch", "workers/dispatch/main.ts"]);
  const imgproc = compileArgs(processNamed("imgproc"), {
    entry: "x.ts",
    output: "o",
    target: "aarch64-unknown-linux-gnu",
  });
  assert.ok(imgproc.includes("--self-extracting"));
  assert.equal(imgproc[imgproc.indexOf("--target") + 1], "aarch64-unknown-linux-gnu");
  const web = compileArgs(processNamed("web"), { entry: "web/main.ts", output: "o" });
  assert.ok(
    !web.includes("--allow-run") && !web.includes("--allow-write"),
    "a compiled web never rebuilds its bundle",
  );
  const included = web.flatMap((a, i) => a === "--include" ? [web[i + 1]] : []);
  assert.deepEqual(included, ["web/static/"]);
});

Deno.test("compileJobs() gives one binary per process plus the health probe", () => {
  const jobs = compileJobs(PROCESSES, { out: "dist" });
  assert.deepEqual(jobs.map((j) => j.binary), [
    ...PROCESSES.map((p) => `wharf-${p.name}`),
    "wharf-healthcheck",
  ]);
  assert.equal(new Set(jobs.map((j) => j.binary)).size, jobs.length);
});

Deno.test("checkRuntime() finds DENORT_BIN or the cached runtime without asking the network", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wharf-compile-test-" });
  try {
    using hole = blackHole();
    const bin = join(dir, "denort");
    await Deno.writeTextFile(bin, "");
    assert.deepEqual(
      await checkRuntime({ target: "t", timeoutMs: 100, env: { DENORT_BIN: bin }, url: hole.url }),
      {
        ok: true,
        via: "DENORT_BIN",
      },
    );
    const cached = join(dir, "dl", "release", `v${Deno.version.deno}`);
    await Deno.mkdir(cached, { recursive: true });
    await Deno.writeTextFile(join(cached, "denort-t.zip"), "");
    assert.equal(
      (await checkRuntime({ target: "t", timeoutMs: 100, env: { DENO_DIR: dir }, url: hole.url })).ok,
      true,
    );
    const missing = await checkRuntime({
      target: "u",
      timeoutMs: 200,
      env: { DENO_DIR: dir },
      url: hole.url,
    });
    assert.equal(missing.ok, false);
    assert.match(
      !missing.ok ? missing.reason : "",
      /^127\.0\.0\.1:\d+ cannot be reached: no answer within 200 ms$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(
    runtimeUrl("x86_64-unknown-linux-gnu", "2.9.6"),
    "https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip",
  );
});

Deno.test("deno task compile stops within seconds with a clear message when the runtime cannot be downloaded", async () => {
  using hole = blackHole();
  const denoDir = await Deno.makeTempDir({ prefix: "wharf-compile-test-" });
  try {
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SCRIPT,
        "--only",
        "dispatch",
        "--timeout-ms",
        "1500",
        "--out",
        join(denoDir, "dist"),
      ],
      cwd: ROOT,
      // An empty cache and a download server that never answers: the compile must not start.
      env: { DENO_DIR: denoDir, WHARF_DENORT_PROBE_URL: hole.url, DENORT_BIN: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const seconds = (performance.now() - t0) / 1000;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(stderr, /^Cannot compile: deno compile needs the Deno runtime/);
    assert.match(stderr, /no answer within 1500 ms/);
    assert.match(stderr, /on a machine with internet access/);
    assert.ok(seconds < 30, `took ${seconds.toFixed(1)} s`);
    await assert.rejects(Deno.stat(join(denoDir, "dist")), "nothing is written when the runtime is missing");
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("deno task compile --dry-run prints a deno compile command for every process in the tree", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, "--dry-run"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const commands = lines.filter((l) => l.startsWith("deno compile "));
  const skipped = lines.filter((l) => l.startsWith("[compile] skipping "));
  assert.equal(commands.length + skipped.length, PROCESSES.length + 1);
  assert.ok(commands.some((c) => c.endsWith("--output dist/wharf-dispatch workers/dispatch/main.ts")));
  assert.ok(commands.some((c) => c.endsWith("--output dist/wharf-web web/main.ts")));
  assert.ok(commands.at(-1)!.endsWith("deploy/healthcheck.ts"));
});
