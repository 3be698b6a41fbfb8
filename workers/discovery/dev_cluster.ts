/**
 * `deno task dev:cluster`: a local three-member discovered cluster (real etcd, Patroni and PostgreSQL on
 * 127.0.0.11–13) behind a stand-in Flux API, kept apart from `deno task dev` because it needs more
 * memory and CPU. When `deno task dev` has run, members and history go to its database (read from
 * `.wharf/dev/env`), so the console and `/api/admin/cluster` show them.
 *
 * Flags: `--members N` (default 3), `--state-dir PATH` (default `.wharf/cluster`; data is wiped at start).
 * Ctrl-C stops every process it started, by pid.
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connectPostgres, type Sql } from "../../shared/db.ts";
import { createLogger, redactString } from "../../shared/log.ts";
import { ensurePackages } from "../../shared/stack/packages.ts";
import { waitUntil } from "../../shared/stack/process.ts";
import { CLUSTER_REQUIREMENTS, LocalCluster } from "./local.ts";
import { getCluster } from "./patroni_api.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const say = (line: string) => console.log(`[cluster] ${line}`);

async function devDatabaseUrl(): Promise<string | undefined> {
  try {
    const text = await Deno.readTextFile(join(ROOT, ".wharf/dev/env"));
    const line = text.split("\n").find((l) => l.startsWith("DATABASE_URL="));
    return line ? JSON.parse(line.slice("DATABASE_URL=".length)) : undefined;
  } catch {
    return undefined;
  }
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: { members: { type: "string" }, "state-dir": { type: "string" } },
  });
  const size = Number(values.members ?? 3);
  if (!Number.isInteger(size) || size < 1 || size > 9) {
    throw new Error("Cannot start: --members must be 1 to 9");
  }
  await ensurePackages(CLUSTER_REQUIREMENTS, say);
  const dir = resolve(values["state-dir"] ?? join(ROOT, ".wharf/cluster"));
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  const dbUrl = await devDatabaseUrl();
  let sql: Sql | undefined;
  if (dbUrl) {
    sql = connectPostgres(dbUrl, { max: 2, applicationName: "wharf-dev-cluster" });
    try {
      await sql`select 1 from control.cluster_members limit 1`;
    } catch {
      say("the dev database is not running or not migrated: status stays in the logs");
      await sql.end();
      sql = undefined;
    }
  }
  const cluster = await LocalCluster.create({
    size,
    dir,
    appName: "wharf-dev",
    sql,
    log: createLogger("discovery"),
    updateIntervalS: 5,
    statusIntervalS: 2,
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say("stopping…");
    await cluster.stop(true);
    await sql?.end({ timeout: 2 });
    say("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  say(`starting ${size} members on ${cluster.api.addresses.join(", ")} (data in ${dir})…`);
  await cluster.startAll();
  await waitUntil(
    "a leader",
    async () => (await getCluster(cluster.any().apiUrl)).some((m) => m.role === "leader"),
    120_000,
    500,
  );
  const [pg, api, etcdClient] = cluster.ports;
  await Deno.writeTextFile(join(dir, "secrets.json"), JSON.stringify(cluster.passwords, null, 2), {
    mode: 0o600,
  });
  say("");
  say(`discovery API  ${cluster.api.url}/apps/location/${cluster.appName}`);
  for (const a of cluster.api.addresses) {
    say(
      `member         ${a}  postgres :${pg}  patroni http://${a}:${api}/cluster  etcd http://${a}:${etcdClient}`,
    );
  }
  say(
    `psql           psql -h ${
      cluster.api.addresses[0]
    } -p ${pg} -U postgres  (password in ${dir}/secrets.json)`,
  );
  if (dbUrl) say(`status         written to ${redactString(dbUrl)} (GET /api/admin/cluster)`);
  say("Ctrl-C stops everything.");
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`[cluster] ${redactString((e as Error).message)}`);
    Deno.exit(1);
  }
}
