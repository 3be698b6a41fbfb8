/**
 * Each process starts with exactly the permissions and flags its binary is compiled with (no `-A`) and
 * the environment compose.yaml gives it (credentials and addresses swapped for the test services),
 * answers the health probe, and stops cleanly on SIGTERM. A missing permission or variable in
 * deploy/processes.ts or compose.yaml fails here before it fails in a container.
 */
import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { probe } from "../../deploy/healthcheck.ts";
import { composeEnvironment, composeServicesOf, loadCompose } from "../../deploy/manifests.ts";
import { PROCESSES, type ProcessSpec } from "../../deploy/processes.ts";
import { freePort } from "../../shared/stack/process.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import { captureText, createTestDatabase, testEnv } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const compose = await loadCompose();

/**
 * Processes that need more than Postgres, Redis and S3 to become healthy: the cluster member starts
 * etcd and Patroni (its own tests run them for real).
 */
const NEEDS_MORE: Record<string, string> = { discovery: "starts etcd and Patroni" };

function present(p: ProcessSpec): boolean {
  try {
    Deno.statSync(`${ROOT}/${p.entry}`);
    return true;
  } catch {
    return false;
  }
}

/** compose.yaml's environment for `p`, pointed at the test services. */
function testEnvironment(p: ProcessSpec, databaseUrl: string): Record<string, string> {
  const [[, service]] = composeServicesOf(p, compose);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(composeEnvironment(service))) {
    // ${VAR:-default} → default; credentials and addresses are replaced below.
    env[k] = v.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}/g, "$1");
  }
  const swap: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    pcred: databaseUrl,
    REPLICATE_TARGET_URL: databaseUrl,
    REDIS_URL: testEnv.redisUrl,
    S3_ENDPOINT: testEnv.s3Endpoint,
    S3_FORCE_PATH_STYLE: "true",
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    OPS_HOST: "127.0.0.1",
    WEB_HOST: "127.0.0.1",
    WHARF_ADMIN_TOKEN: crypto.randomUUID(),
    JWT_SECRET: crypto.randomUUID(),
    WHARF_LOG_LEVEL: "warn",
    // No SQS here: imgproc takes the local queue that the S3 server's events feed.
    AWS_SQS_QUEUE: "",
  };
  for (const [k, v] of Object.entries(swap)) if (k in env || k.startsWith("S3_")) env[k] = v;
  for (const [k, v] of Object.entries(env)) {
    if (v.includes("${")) throw new Error(`Cannot run ${p.name} in a test: no test value for ${k}`);
  }
  if (p.portVar) env[p.portVar] = String(freePort());
  for (const k of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

function spawn(p: ProcessSpec, env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...p.permissions, ...(p.flags ?? []), p.entry],
    cwd: ROOT,
    clearEnv: true,
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

for (const p of PROCESSES) {
  if (!present(p) || p.name in NEEDS_MORE) continue;
  const name = p.kind === "job"
    ? `${p.name} runs to completion with only its compiled permissions and compose's environment`
    : `${p.name} becomes healthy with only its compiled permissions and compose's environment, and stops on SIGTERM`;
  Deno.test(name, async () => {
    await using db = await createTestDatabase();
    const env = testEnvironment(p, db.url);
    const child = spawn(p, env);
    const stderr = captureText(child.stderr);
    if (p.kind === "job") {
      const status = await child.status;
      await stderr.done;
      assert.equal(status.code, 0, stderr.text());
      return;
    }
    let killed = false;
    try {
      const url = `http://127.0.0.1:${env[p.portVar!]}/healthz`;
      let last = "";
      const end = Date.now() + 45_000;
      while (Date.now() < end) {
        const r = await probe(url, 2_000);
        last = r.reason;
        if (r.code === 0) break;
        const exited = await Promise.race([
          child.status.then(() => true),
          abortableSleep(250).then(() => false),
        ]);
        if (exited) break;
      }
      assert.match(last, /^healthy/, `${p.name}: ${last}\n${stderr.text()}`);
      child.kill("SIGTERM");
      killed = true;
      const status = await child.status;
      await stderr.done;
      assert.equal(status.code, 0, `${p.name} exit on SIGTERM\n${stderr.text()}`);
      assert.doesNotMatch(stderr.text(), /PermissionDenied|NotCapable|Requires \w+ access/);
    } finally {
      if (!killed) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        await child.status;
        await stderr.done;
      }
    }
  });
}

Deno.test("the processes this tree cannot start here are the ones that need more than the test services", () => {
  const skipped = PROCESSES.filter((p) => present(p) && p.name in NEEDS_MORE).map((p) => p.name);
  for (const s of skipped) assert.ok(NEEDS_MORE[s]);
  assert.ok(PROCESSES.some((p) => present(p) && !(p.name in NEEDS_MORE) && p.kind === "service"));
});
