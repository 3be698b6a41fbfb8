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
import { freePort, waitUntil } from "../../shared/stack/process.ts";
import { sharedFreePorts } from "../../workers/discovery/local.ts";
import { buildIslands, BUNDLE_PATH } from "../../web/build.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import { captureText, createTestDatabase, testEnv } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const compose = await loadCompose();

/** Processes that need more than this machine offers to become healthy, with the reason. */
const NEEDS_MORE: Record<string, string> = {};

/**
 * The cluster member as a one-member cluster on a loopback address of its own: compose's environment
 * with the addresses, ports, data folder and PostgreSQL binaries of this machine. It starts real etcd,
 * Patroni and PostgreSQL, so it is the slowest of these.
 */
function discoveryEnvironment(): Record<string, string> {
  const ip = "127.0.0.31";
  const [pg, api, ec, ep] = sharedFreePorts([ip]);
  const ports: Record<string, number> = {
    POSTGRES_PORT: pg,
    PATRONI_API_PORT: api,
    ETCD_CLIENT_PORT: ec,
    ETCD_PEER_PORT: ep,
  };
  const out: Record<string, string> = {
    NODE_IP: ip,
    LISTEN_HOST: ip,
    DISCOVERY_STATIC: ip,
    DATA_DIR: Deno.makeTempDirSync({ dir: testEnv.tmp, prefix: "discovery-" }),
    WHARF_PG_BIN: testEnv.pgBinDir,
    STATUS_INTERVAL_S: "1",
  };
  for (const [k, v] of Object.entries(ports)) out[k] = out[`HOST_${k}`] = String(v);
  return out;
}

function present(p: ProcessSpec): boolean {
  try {
    Deno.statSync(`${ROOT}/${p.entry}`);
    return true;
  } catch {
    return false;
  }
}

/** compose.yaml's environment for `p`, pointed at the test services. */
function testEnvironment(
  p: ProcessSpec,
  databaseUrl: string,
  upstream: string,
): Record<string, string> {
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
    FEED_JWT_SECRET: crypto.randomUUID() + crypto.randomUUID(),
    PATRONI_API_PASSWORD: crypto.randomUUID(),
    POSTGRES_SUPERUSER_PASSWORD: crypto.randomUUID(),
    POSTGRES_REPLICATION_PASSWORD: crypto.randomUUID(),
    SSL_PASSPHRASE: crypto.randomUUID(),
    REPLICATE_SPOOL_DIR: `${testEnv.tmp}/spool-${crypto.randomUUID()}`,
    GATEWAY_UPSTREAM_USERS: upstream,
    GATEWAY_UPSTREAM_FEEDS: upstream,
    WHARF_LOG_LEVEL: "warn",
    // No SQS here: imgproc takes the local queue that the S3 server's events feed.
    AWS_SQS_QUEUE: "",
  };
  for (const [k, v] of Object.entries(swap)) if (k in env || k.startsWith("S3_")) env[k] = v;
  // The test services have no SQS: imgproc reads the local S3 server's events through its Postgres queue.
  delete env.IMGPROC_SQS_QUEUE;
  if (p.name === "discovery") Object.assign(env, discoveryEnvironment());
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
    // A compiled web serves the bundle built before compiling and may not build one, even when the
    // bundle looks older than its sources (embedded files keep no useful times): build it, then age it.
    if (p.name === "web") {
      await buildIslands();
      await Deno.utime(BUNDLE_PATH, 0, 0);
    }
    // An upstream for the gateway, which must forward to what its environment names.
    await using upstream = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => Response.json({ upstream: new URL(req.url).pathname }),
    );
    const env = testEnvironment(p, db.url, `http://127.0.0.1:${upstream.addr.port}`);
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
      const end = performance.now() + (p.name === "discovery" ? 90_000 : 45_000);
      while (performance.now() < end) {
        const r = await probe(url, 2_000);
        last = r.reason;
        if (r.code === 0) break;
        const exited = await Promise.race([
          child.status.then(() => true),
          abortableSleep(250).then(() => false),
        ]);
        if (exited) break;
      }
      if (p.name === "web") await Deno.utime(BUNDLE_PATH, new Date(), new Date());
      assert.match(last, /^healthy/, `${p.name}: ${last}\n${stderr.text()}`);
      if (p.name === "discovery") {
        // Healthy is not enough here: etcd, Patroni and PostgreSQL must have started under these
        // permissions, which the member shows by leading and recording itself.
        await waitUntil(
          "the member to lead",
          async () => {
            const rows = await db.sql`select role from control.cluster_members where scope = ${env.APP_NAME}`;
            return rows.length === 1 && rows[0].role === "leader";
          },
          90_000,
          500,
        );
        // replicate decodes the WAL of this cluster: the member runs with logical decoding.
        const opts = await Deno.readTextFile(`${env.DATA_DIR}/pgdata/postmaster.opts`);
        assert.match(opts, /--wal_level=logical\b/);
      }
      if (p.name === "gateway") {
        const r = await fetch(`http://127.0.0.1:${env[p.portVar!]}/api/users/me`);
        assert.deepEqual(await r.json(), { upstream: "/api/users/me" });
      }
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

Deno.test("every process in the tree is started here, or says why it cannot be", () => {
  const skipped = PROCESSES.filter((p) => present(p) && p.name in NEEDS_MORE).map((p) => p.name);
  for (const s of skipped) assert.ok(NEEDS_MORE[s]);
  assert.ok(PROCESSES.some((p) => present(p) && !(p.name in NEEDS_MORE) && p.kind === "service"));
});
