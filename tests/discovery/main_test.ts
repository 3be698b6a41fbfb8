import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { freePort, waitUntil } from "../../shared/stack/process.ts";
import { captureText, createTestDatabase } from "../../shared/testing/mod.ts";
import { sharedFreePorts } from "../../workers/discovery/local.ts";
import { getCluster } from "../../workers/discovery/patroni_api.ts";

const MAIN = fileURLToPath(new URL("../../workers/discovery/main.ts", import.meta.url));

Deno.test("a worker with a bad configuration exits with code 2 and names the variable, not its value", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    env: {
      POSTGRES_SUPERUSER_PASSWORD: "tiny",
      POSTGRES_REPLICATION_PASSWORD: "long-enough-1",
      OPS_PORT: "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  const text = new TextDecoder().decode(out.stderr);
  assert.match(text, /POSTGRES_SUPERUSER_PASSWORD/);
  assert.doesNotMatch(text, /tiny/);
});

Deno.test({
  name:
    "a one-member TLS worker from a static list leads, reports health and status, logs no secret and stops cleanly",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using db = await createTestDatabase();
  const ip = "127.0.0.21";
  const [pg, api, ec, ep] = sharedFreePorts([ip]);
  const dir = await Deno.makeTempDir({ prefix: "wharf-discovery-main-" });
  const ops = freePort();
  const secrets = {
    su: `su-${crypto.randomUUID()}`,
    rep: `rep-${crypto.randomUUID()}`,
    tls: `tls-${crypto.randomUUID()}`,
  };
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    env: {
      APP_NAME: "solo",
      DISCOVERY_SOURCE: "static",
      DISCOVERY_STATIC: `${ip}:16127`,
      NODE_IP: ip,
      LISTEN_HOST: ip,
      DATA_DIR: dir,
      POSTGRES_SUPERUSER_PASSWORD: secrets.su,
      POSTGRES_REPLICATION_PASSWORD: secrets.rep,
      POSTGRES_DB: "appdb",
      SSL_ENABLED: "true",
      SSL_PASSPHRASE: secrets.tls,
      ...Object.fromEntries(
        [["POSTGRES_PORT", pg], ["PATRONI_API_PORT", api], ["ETCD_CLIENT_PORT", ec], ["ETCD_PEER_PORT", ep]]
          .flatMap(([k, v]) => [[k as string, String(v)], ["HOST_" + k, String(v)]]),
      ),
      STATUS_INTERVAL_S: "1",
      UPDATE_INTERVAL_S: "1",
      OPS_PORT: String(ops),
      DATABASE_URL: db.url,
      WHARF_LOG_LEVEL: "debug",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = captureText(child.stdout), stderr = captureText(child.stderr);
  let client: Deno.HttpClient | undefined;
  try {
    await waitUntil(
      "the worker to be healthy",
      async () => {
        const r = await fetch(`http://127.0.0.1:${ops}/healthz`);
        await r.body?.cancel();
        return r.ok;
      },
      60_000,
      250,
    );
    await waitUntil(
      "one leader",
      async () => {
        client ??= Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${dir}/tls/ca.crt`)] });
        const m = await getCluster(`https://${ip}:${api}`, { client });
        return m.length === 1 && m[0].role === "leader" && m[0].state === "running";
      },
      60_000,
      250,
    );
    await waitUntil(
      "the member and POSTGRES_DB",
      async () => {
        const rows = await db.sql`select role from control.cluster_members where scope = 'solo'`;
        const [inst] = await db.sql`select status from control.worker_instances where worker = 'discovery'`;
        return rows.length === 1 && rows[0].role === "leader" && inst?.status.role === "leader";
      },
      20_000,
      250,
    );
    await waitUntil(
      "the leader gauge",
      async () => {
        return /wharf_discovery_is_leader 1/.test(
          await (await fetch(`http://127.0.0.1:${ops}/metrics`)).text(),
        );
      },
      5_000,
      200,
    );
    const sql = postgres({
      host: ip,
      port: pg,
      user: "postgres",
      password: secrets.su,
      database: "postgres",
      max: 1,
      ssl: { ca: await Deno.readTextFile(`${dir}/tls/ca.crt`), rejectUnauthorized: true },
    });
    try {
      await waitUntil(
        "POSTGRES_DB to be created",
        async () => {
          return (await sql`select 1 from pg_database where datname = 'appdb'`).length === 1;
        },
        20_000,
        250,
      );
      const [tls] = await sql`select ssl from pg_stat_ssl where pid = pg_backend_pid()`;
      assert.equal(tls.ssl, true);
    } finally {
      await sql.end();
    }
  } finally {
    child.kill("SIGTERM");
    client?.close();
    await child.status;
    await Promise.all([stdout.done, stderr.done]);
  }
  const status = await child.status;
  assert.equal(status.code, 0, stderr.text().slice(-2000));
  const logs = stdout.text() + stderr.text() + await Deno.readTextFile(`${dir}/patroni.log`) +
    await Deno.readTextFile(`${dir}/etcd.log`);
  assert.ok(!logs.includes(secrets.su) && !logs.includes(secrets.rep), "a password reached the logs");
  const check = await new Deno.Command("pgrep", { args: ["-f", dir], stdout: "piped" }).output();
  assert.equal(new TextDecoder().decode(check.stdout).trim(), "", "a process of the member is still running");
  await Deno.remove(dir, { recursive: true });
});
