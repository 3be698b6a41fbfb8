/**
 * `deno task dev`: everything up with demo data, one command.
 *
 * Installs missing Debian packages when it can, starts PostgreSQL, Redis and S3 on free loopback ports
 * (data kept in `.wharf/dev/` across restarts), migrates, seeds, starts the web process and every worker,
 * prints where things are, and on Ctrl-C stops every child it started, by pid.
 *
 * Flags: `--port N` (web, default 8000 or `WEB_PORT`), `--state-dir PATH` (default `.wharf/dev` or
 * `WHARF_DEV_DIR`), `--only web,hydrate` (start only these components).
 */
import { join, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { parseArgs } from "node:util";
import { connectPostgres } from "../db.ts";
import { redactString } from "../log.ts";
import { migrate } from "../migrate.ts";
import { COMPONENTS } from "./components.ts";
import { BASE_REQUIREMENTS, ensurePackages } from "./packages.ts";
import {
  freePort,
  type ManagedProcess,
  portIsFree,
  recordProcesses,
  startChildrenInOwnSessions,
  startProcess,
  stopRecordedProcesses,
} from "./process.ts";
import { seedDemoData } from "./seed.ts";
import { type PreferredPorts, startServices } from "./services.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const say = (line: string) => console.log(`[dev] ${line}`);

/** The database the dev stack's processes use. */
export const DEV_DATABASE = "wharf";

/** Generated once per state folder and kept there (mode 0600); never printed except the admin login. */
interface DevSecrets {
  pgPassword: string;
  adminPassword: string;
  jwtSecret: string;
  adminToken: string;
}

function randomSecret(bytes = 18): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(bytes))))
    .replace(/\+/g, "A").replace(/\//g, "B").replace(/=+$/, "");
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return undefined;
  }
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      "state-dir": { type: "string" },
      only: { type: "string" },
    },
  });
  const webPort = Number(values.port ?? Deno.env.get("WEB_PORT") ?? 8000);
  if (!Number.isInteger(webPort) || webPort < 1 || webPort > 65535) {
    throw new Error("Cannot start: --port must be a port number between 1 and 65535");
  }
  const stateDir = resolve(values["state-dir"] ?? Deno.env.get("WHARF_DEV_DIR") ?? join(ROOT, ".wharf/dev"));
  // A run that was killed outright (its children live in sessions of their own) left them running:
  // stop them, found by the pids and command lines it recorded, before their ports are needed.
  const pidsPath = join(stateDir, "pids.json");
  const leftovers = await stopRecordedProcesses(pidsPath);
  if (leftovers.length) say(`stopped what an earlier run left running: ${leftovers.join(", ")}`);
  if (!portIsFree(webPort)) {
    throw new Error(`Cannot start: port ${webPort} is in use (pick another with --port N or WEB_PORT)`);
  }
  const only = values.only ? new Set(values.only.split(",").map((s) => s.trim())) : undefined;

  await ensurePackages(BASE_REQUIREMENTS, say);
  await Deno.mkdir(stateDir, { recursive: true });
  const secretsPath = join(stateDir, "secrets.json");
  let secrets = await readJson<DevSecrets>(secretsPath);
  if (!secrets?.adminToken) {
    secrets = {
      pgPassword: secrets?.pgPassword ?? randomSecret(),
      adminPassword: secrets?.adminPassword ?? randomSecret(9),
      jwtSecret: secrets?.jwtSecret ?? randomSecret(32),
      adminToken: randomSecret(24),
    };
    await Deno.writeTextFile(secretsPath, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  }
  const statePath = join(stateDir, "ports.json");
  const previous = await readJson<PreferredPorts>(statePath);

  // Ctrl-C reaches this process only; it stops the workers, then the services, each once.
  startChildrenInOwnSessions();
  say(`starting PostgreSQL, Redis and S3 (state in ${stateDir})…`);
  const services = await startServices({
    dir: stateDir,
    pgUser: "wharf",
    pgPassword: secrets.pgPassword,
    ephemeral: false,
    ports: previous,
    buckets: ["wharf-media", "wharf-thumbnails", "wharf-warehouse"],
  });
  await Deno.writeTextFile(statePath, JSON.stringify(services.ports));
  const serviceProcs = [services.postgres.process, services.redis.process, services.s3.process];
  await recordProcesses(pidsPath, serviceProcs);

  const children: ManagedProcess[] = [];
  // One stop, however many signals ask for it (Ctrl-C reaches both `deno task` and this process, and
  // the former passes it on): each caller waits for the same stop to finish.
  let stopped: Promise<void> | undefined;
  const stopAll = () =>
    stopped ??= (async () => {
      say("stopping…");
      await Promise.allSettled([...children].reverse().map((c) => c.stop(15_000)));
      await services.stop();
      await Deno.remove(pidsPath).catch(() => {});
      say("stopped");
    })();
  const onSignal = () => {
    stopAll().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // The terminal closed: the children, in sessions of their own, would not hear of it.
  Deno.addSignalListener("SIGHUP", onSignal);

  try {
    const admin = connectPostgres(services.postgres.url, { max: 1, applicationName: "wharf-dev" });
    try {
      const [found] = await admin`select 1 from pg_database where datname = ${DEV_DATABASE}`;
      if (!found) await admin.unsafe(`create database ${DEV_DATABASE}`);
    } finally {
      await admin.end();
    }
    const env: Record<string, string> = {
      ...services.env,
      DATABASE_URL: services.postgres.urlFor(DEV_DATABASE),
      WHARF_ADMIN_USER: "admin",
      WHARF_ADMIN_PASSWORD: secrets.adminPassword,
      JWT_SECRET: secrets.jwtSecret,
      WHARF_ADMIN_TOKEN: secrets.adminToken,
      WHARF_ENV: "dev",
    };
    const sql = connectPostgres(env.DATABASE_URL, { max: 2, applicationName: "wharf-dev" });
    try {
      const r = await migrate(sql);
      say(`migrations: ${r.applied.length} applied, ${r.skipped.length} already there`);
      await seedDemoData({ sql, env, say });
    } finally {
      await sql.end();
    }
    const envFile = join(stateDir, "env");
    await Deno.writeTextFile(
      envFile,
      Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("\n") + "\n",
      { mode: 0o600 },
    );

    const opsPorts: string[] = [];
    for (const c of COMPONENTS) {
      if (only && !only.has(c.name)) continue;
      const copies = c.copies ?? 1;
      for (let i = 1; i <= copies; i++) {
        const name = copies > 1 ? `${c.name}-${i}` : c.name;
        const port = c.web ? webPort : freePort();
        const childEnv = {
          ...Deno.env.toObject(),
          ...env,
          ...c.env?.(env),
          ...(c.web ? { WEB_PORT: String(port), WEB_HOST: "127.0.0.1" } : { OPS_PORT: String(port) }),
        };
        const child = await startProcess({
          name,
          cmd: Deno.execPath(),
          args: ["run", "-A", join(ROOT, c.entry)],
          env: childEnv,
          output: "inherit",
        });
        children.push(child);
        if (!c.web) opsPorts.push(`${name} http://127.0.0.1:${port}/healthz`);
        child.status.then((s) => {
          if (!stopped) say(`${name} exited with code ${s.code}; the rest keeps running (Ctrl-C stops all)`);
        });
      }
    }
    const web = `http://localhost:${webPort}`;
    say("");
    say(`console      ${web}/`);
    say(`health       ${web}/healthz`);
    say(`admin login  admin / ${secrets.adminPassword}`);
    say(`postgres     ${redactString(env.DATABASE_URL)}`);
    say(`redis        ${env.REDIS_URL}`);
    say(`s3           ${env.S3_ENDPOINT} (buckets wharf-media, wharf-thumbnails, wharf-warehouse)`);
    for (const o of opsPorts) say(`worker       ${o}`);
    say(`environment  ${envFile} (source it to run a worker by hand)`);
    await recordProcesses(pidsPath, [...serviceProcs, ...children]);
    say("Ctrl-C stops everything.");
  } catch (e) {
    await stopAll();
    throw e;
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`[dev] ${redactString((e as Error).message)}`);
    Deno.exit(1);
  }
}
