/**
 * A local PostgreSQL server for dev and tests: initdb once, then `postgres` in the foreground as a child
 * process on a loopback port, with logical replication on and TLS available.
 *
 * PostgreSQL refuses to run as root. When wharf runs as root (a fresh CI machine), the server runs as the
 * `postgres` system user (Debian's package creates it) or, failing that, a `wharf` system user created
 * for the purpose; the data folder is handed to that user. The process is started through `setpriv`,
 * which execs in place, so the pid we hold is the server's own and stopping it by pid is exact.
 */
import { dirname, join } from "node:path";
import { postgresBinDir } from "./packages.ts";
import { type ManagedProcess, run, startProcess } from "./process.ts";

/** The user a service runs as when we are root. */
export interface ServiceUser {
  name: string;
  uid: number;
  gid: number;
}

function lookupUser(name: string): ServiceUser | undefined {
  const line = Deno.readTextFileSync("/etc/passwd").split("\n").find((l) => l.startsWith(name + ":"));
  if (!line) return undefined;
  const f = line.split(":");
  return { name, uid: Number(f[2]), gid: Number(f[3]) };
}

/** The non-root user services run as, or undefined when we are not root (they run as us). */
export async function serviceUser(): Promise<ServiceUser | undefined> {
  if (Deno.uid() !== 0) return undefined;
  const existing = lookupUser("postgres") ?? lookupUser("wharf");
  if (existing) return existing;
  await run("useradd", [
    "--system",
    "--user-group",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    "wharf",
  ]);
  const created = lookupUser("wharf");
  if (!created) throw new Error("Cannot run PostgreSQL as root, and creating the user wharf failed");
  return created;
}

/** Prefixes `cmd args` so it runs as `user` (no prefix when user is undefined). */
export function asUser(user: ServiceUser | undefined, cmd: string, args: string[]): [string, string[]] {
  if (!user) return [cmd, args];
  return ["setpriv", [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", cmd, ...args]];
}

/**
 * Lets `user` reach `path`: every ancestor folder gets the search bit for others (traversal only, no
 * listing), which temporary folders (mode 0700) lack.
 */
export async function makeReachable(user: ServiceUser | undefined, path: string): Promise<void> {
  if (!user) return;
  let dir = dirname(path);
  while (dir !== dirname(dir)) {
    const st = await Deno.stat(dir);
    if (st.mode !== null && (st.mode & 0o001) === 0) await Deno.chmod(dir, (st.mode & 0o7777) | 0o001);
    dir = dirname(dir);
  }
}

/** Gives `path` (recursively) to `user`. */
export async function chownTo(user: ServiceUser | undefined, path: string): Promise<void> {
  if (!user) return;
  await run("chown", ["-R", `${user.uid}:${user.gid}`, path]);
}

/** Options for {@linkcode startPostgres}. */
export interface PostgresOptions {
  /** The folder that holds `data/`, `tls/` and the log; created when missing. Kept between runs. */
  dir: string;
  port: number;
  /** Superuser name and password, set at initdb time. */
  user: string;
  password: string;
  /** Trade durability for speed (fsync off): for throwaway test servers only. */
  ephemeral?: boolean;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string | number>;
  /** The server's bin folder; default `postgresBinDir()` (`WHARF_PG_BIN`, else the system's). */
  binDir?: string;
}

/** A running local Postgres. */
export interface LocalPostgres {
  process: ManagedProcess;
  port: number;
  /** `postgres://user:password@127.0.0.1:port/postgres` */
  url: string;
  /** CA certificate (PEM) that signed the server's certificate, for `sslmode=verify-full`. */
  caFile: string;
  binDir: string;
  /** Returns the URL of database `db`. */
  urlFor(db: string): string;
  stop(): Promise<void>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes a CA and a server certificate for localhost / 127.0.0.1 in `dir` (once). Also used by tests that
 * start a TLS server of their own.
 */
export async function ensureTls(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, "ca.crt"), caKey = join(dir, "ca.key");
  const cert = join(dir, "server.crt"), key = join(dir, "server.key"), csr = join(dir, "server.csr");
  if (await exists(cert)) return { ca, cert, key };
  await Deno.mkdir(dir, { recursive: true });
  await run("openssl", [
    "req",
    "-x509",
    "-new",
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-keyout",
    caKey,
    "-out",
    ca,
    "-days",
    "3650",
    "-subj",
    "/CN=wharf local CA",
  ]);
  await run("openssl", [
    "req",
    "-new",
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    "/CN=localhost",
  ]);
  const ext = join(dir, "san.ext");
  await Deno.writeTextFile(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "3650",
    "-extfile",
    ext,
  ]);
  await Deno.chmod(key, 0o600);
  return { ca, cert, key };
}

/** Starts (initialising on first use) a Postgres server in `options.dir`. */
export async function startPostgres(options: PostgresOptions): Promise<LocalPostgres> {
  const binDir = options.binDir ?? postgresBinDir();
  if (!binDir) {
    throw new Error("Cannot start PostgreSQL: no server binaries found (apt-get install postgresql)");
  }
  const user = await serviceUser();
  const data = join(options.dir, "data");
  await Deno.mkdir(options.dir, { recursive: true });
  await Deno.chmod(options.dir, 0o755);
  await makeReachable(user, options.dir);
  const tls = await ensureTls(join(options.dir, "tls"));
  if (!(await exists(join(data, "PG_VERSION")))) {
    await Deno.remove(data, { recursive: true }).catch(() => {});
    const pwfile = join(options.dir, ".pwfile");
    await Deno.writeTextFile(pwfile, options.password + "\n", { mode: 0o600 });
    await chownTo(user, options.dir);
    try {
      const [cmd, args] = asUser(user, join(binDir, "initdb"), [
        "-D",
        data,
        "-U",
        options.user,
        `--pwfile=${pwfile}`,
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-instructions",
      ]);
      await run(cmd, args);
    } finally {
      await Deno.remove(pwfile).catch(() => {});
    }
  }
  await chownTo(user, options.dir);
  const settings: Record<string, string | number> = {
    listen_addresses: "127.0.0.1",
    port: options.port,
    unix_socket_directories: "",
    wal_level: "logical",
    max_replication_slots: 64,
    max_wal_senders: 64,
    max_connections: 400,
    ssl: "on",
    ssl_cert_file: tls.cert,
    ssl_key_file: tls.key,
    ssl_ca_file: tls.ca,
    shared_buffers: "128MB",
    log_min_messages: "warning",
    ...(options.ephemeral ? { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } : {}),
    ...options.settings,
  };
  const args = ["-D", data];
  for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${v}`);
  const [cmd, fullArgs] = asUser(user, join(binDir, "postgres"), args);
  const logFile = join(options.dir, "postgres.log");
  const proc = await startProcess({
    name: "postgres",
    cmd,
    args: fullArgs,
    output: logFile,
    stopSignal: "SIGINT",
  });
  await proc.waitReady(
    "PostgreSQL to accept connections",
    async () => {
      const out = await new Deno.Command(join(binDir, "pg_isready"), {
        args: ["-h", "127.0.0.1", "-p", String(options.port), "-q"],
        stdout: "null",
        stderr: "null",
      }).output();
      return out.success;
    },
    60_000,
    logFile,
  );
  const base = `postgres://${encodeURIComponent(options.user)}:${
    encodeURIComponent(options.password)
  }@127.0.0.1:${options.port}`;
  return {
    process: proc,
    port: options.port,
    url: `${base}/postgres`,
    caFile: tls.ca,
    binDir,
    urlFor: (db) => `${base}/${encodeURIComponent(db)}`,
    stop: async () => {
      await proc.stop(20_000);
    },
  };
}
