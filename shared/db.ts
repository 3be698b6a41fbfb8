/**
 * The Postgres module every wharf process uses: postgres.js with wharf's TLS rules and logging.
 *
 * TLS follows libpq's names so that a connection string works the same in psql and in wharf:
 * `sslmode=disable|prefer|require|verify-ca|verify-full` and `sslrootcert=/path/ca.pem` in the URL, or
 * `PGSSLMODE` / `PGSSLROOTCERT` in the environment. `require` encrypts without checking the server's
 * certificate (libpq's meaning); `verify-full` checks the chain against the CA file (or the system roots)
 * and the host name.
 */
import type { Writable } from "node:stream";
import postgres from "postgres";
import { WharfError } from "./errors.ts";

/** A postgres.js client. */
export type Sql = postgres.Sql<Record<string, unknown>>;

/** The TLS modes wharf understands, with libpq's meanings. */
export const SSL_MODES = ["disable", "prefer", "require", "verify-ca", "verify-full"] as const;
/** One of {@linkcode SSL_MODES}. */
export type SslMode = typeof SSL_MODES[number];

/** Options for {@linkcode connectPostgres}. */
export interface ConnectOptions {
  /** Overrides the URL's `sslmode` and `PGSSLMODE`. */
  sslmode?: SslMode;
  /** A CA bundle (PEM) path; overrides `sslrootcert` and `PGSSLROOTCERT`. */
  sslrootcert?: string;
  /** Pool size (default 10). */
  max?: number;
  /** `application_name` shown in `pg_stat_activity`. */
  applicationName?: string;
  /** Seconds an idle connection is kept (default 30). */
  idleTimeout?: number;
  /** Seconds to wait for a connection (default 10). */
  connectTimeout?: number;
  /** Called for server notices; silent by default. */
  onnotice?: (notice: postgres.Notice) => void;
  /** Extra postgres.js options (types, transforms). */
  extra?: Partial<postgres.Options<Record<string, postgres.PostgresType>>>;
}

/** The parsed TLS part of a connection: the URL without its TLS parameters, and the postgres.js `ssl`. */
export interface ResolvedTls {
  url: string;
  mode: SslMode;
  ssl: false | "prefer" | { rejectUnauthorized: boolean; ca?: string; checkServerIdentity?: () => undefined };
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Works out the TLS settings of a connection from the URL, the options and the environment. */
export function resolveTls(
  url: string,
  options: Pick<ConnectOptions, "sslmode" | "sslrootcert"> = {},
): ResolvedTls {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new WharfError(400, "Cannot connect to Postgres: the connection string is not a valid URL", {
      code: "invalid_database_url",
    });
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    throw new WharfError(400, `Cannot connect to Postgres: scheme is ${parsed.protocol} (want postgres://)`, {
      code: "invalid_database_url",
    });
  }
  const rawMode = options.sslmode ?? parsed.searchParams.get("sslmode") ?? envGet("PGSSLMODE") ?? "disable";
  if (!(SSL_MODES as readonly string[]).includes(rawMode)) {
    throw new WharfError(400, `Cannot connect to Postgres: sslmode must be one of ${SSL_MODES.join(", ")}`, {
      code: "invalid_database_url",
    });
  }
  const mode = rawMode as SslMode;
  const caPath = options.sslrootcert ?? parsed.searchParams.get("sslrootcert") ?? envGet("PGSSLROOTCERT");
  parsed.searchParams.delete("sslmode");
  parsed.searchParams.delete("sslrootcert");
  let ssl: ResolvedTls["ssl"];
  switch (mode) {
    case "disable":
      ssl = false;
      break;
    case "prefer":
      ssl = "prefer";
      break;
    case "require":
      ssl = { rejectUnauthorized: false };
      break;
    case "verify-ca":
    case "verify-full": {
      let ca: string | undefined;
      if (caPath) {
        try {
          ca = Deno.readTextFileSync(caPath);
        } catch (e) {
          throw new WharfError(400, `Cannot read the Postgres CA file: ${(e as Error).message}`, {
            code: "invalid_database_ca",
          });
        }
      }
      ssl = { rejectUnauthorized: true, ...(ca ? { ca } : {}) };
      if (mode === "verify-ca") ssl.checkServerIdentity = () => undefined;
      break;
    }
  }
  return { url: parsed.toString(), mode, ssl };
}

/**
 * True for the one error postgres.js 3.4 throws outside any caller's reach: when a connection dies in a
 * transaction, `sql.begin()` sends its own ROLLBACK (or a reserved connection its next query) from a
 * `setImmediate` callback after the socket was closed, and `nextWrite` reads `write` of null. The query
 * has already been rejected with CONNECTION_CLOSED by then, so the error reports nothing new, but as an
 * uncaught exception it would end the process (porsager/postgres#1208; the guard of #1168 is not
 * released).
 */
export function isClosedSocketWrite(error: unknown): boolean {
  if (!(error instanceof TypeError) || !/reading 'write'/.test(error.message)) return false;
  const stack = error.stack ?? "";
  return /nextWrite/.test(stack) && /postgres[\\/](?:[^\\/]+[\\/])?src[\\/]connection\.js/.test(stack);
}

/** The connection-level errors postgres.js makes (`write <CODE> host:port`). */
const CONNECTION_ERRORS = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);
/** The server ended the connection (class 57P: admin shutdown, crash shutdown, cannot connect now). */
const SERVER_ENDED = new Set(["57P01", "57P02", "57P03"]);

/**
 * True for an error that says a connection ended, made by postgres.js's connection module: one of its
 * connection-level errors (`write CONNECTION_CLOSED host:port` and its kin) or the server's own notice that
 * it ended the connection (`57P01` and its kin). Left unhandled, such an error comes from the same race as
 * {@linkcode isClosedSocketWrite}, lost another way: `sql.begin()` races the callback against the
 * connection's close, and once one side has failed the transaction for the caller, the other side's failure
 * (the callback's query, or its own ROLLBACK) lands in a promise nobody listens to. Every query of wharf is
 * awaited, so an unhandled one is such an orphan: the failure it reports was already reported.
 */
export function isOrphanedConnectionError(reason: unknown): boolean {
  if (!(reason instanceof Error)) return false;
  const code = (reason as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  const made = CONNECTION_ERRORS.has(code)
    ? reason.message.startsWith(`write ${code} `)
    : SERVER_ENDED.has(code) && reason.name === "PostgresError";
  return made && /postgres[\\/](?:[^\\/]+[\\/])?src[\\/]connection\.js/.test(reason.stack ?? "");
}

let closedWritesGuarded = false;

/** Keeps those errors (and only them) from ending the process: installed once, by the first client. */
function guardClosedSocketWrites(): void {
  if (closedWritesGuarded || typeof globalThis.addEventListener !== "function") return;
  closedWritesGuarded = true;
  globalThis.addEventListener("error", (e) => {
    if (isClosedSocketWrite((e as ErrorEvent).error)) e.preventDefault();
  });
  globalThis.addEventListener("unhandledrejection", (e) => {
    if (isOrphanedConnectionError((e as PromiseRejectionEvent).reason)) e.preventDefault();
  });
}

/** Opens a pooled Postgres client. Nothing connects until the first query. */
export function connectPostgres(url: string, options: ConnectOptions = {}): Sql {
  const tls = resolveTls(url, options);
  guardClosedSocketWrites();
  return postgres(tls.url, {
    ssl: tls.ssl as postgres.Options<Record<string, postgres.PostgresType>>["ssl"],
    max: options.max ?? 10,
    idle_timeout: options.idleTimeout ?? 30,
    connect_timeout: options.connectTimeout ?? 10,
    onnotice: options.onnotice ?? (() => {}),
    connection: { application_name: options.applicationName ?? "wharf" },
    ...options.extra,
  }) as unknown as Sql;
}

/** The database URL from the first of `names` that is set (wharf reads `DATABASE_URL`, merflow `pcred`). */
export function databaseUrlFromEnv(
  env: Record<string, string | undefined>,
  names: string[] = ["DATABASE_URL"],
): string | undefined {
  for (const n of names) if (env[n]) return env[n];
  return undefined;
}

/**
 * Drops replication slot `slot` (if there is one) once nothing reads it any more: the walsender of a
 * subscription just disabled, or of a replication client just stopped, may hold it for a moment, and a drop
 * then fails with "is active for PID …". Retries for up to `timeoutMs`, then throws the last error.
 */
export async function dropReplicationSlot(sql: Sql, slot: string, timeoutMs = 15_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    try {
      await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`;
      return;
    } catch (e) {
      if (performance.now() > end) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Quotes an identifier (schema, table, column) for SQL text built from trusted names. */
export function quoteIdent(name: string): string {
  if (name.includes("\u0000")) throw new WharfError(400, "Cannot use an identifier that contains a NUL byte");
  return '"' + name.replace(/"/g, '""') + '"';
}

/** A running `COPY … FROM STDIN`: write the data to `stream`, end it, then await `done`. */
export interface CopyIn {
  stream: Writable;
  /** Settles when the server has taken the data (resolves) or refused it (rejects with its error). */
  done: Promise<void>;
}

/**
 * Starts `COPY … FROM STDIN` (`statement`) on `sql` (a transaction or a plain client).
 *
 * postgres.js 3.4 reports nowhere an error that the server sends after the end of the data (a bad last
 * row, a constraint checked once the rows are in): the stream's `finish` never comes, and the query has
 * already resolved to the stream, so a caller waiting for `finish` waits forever. `done` also listens to
 * the query's own rejection, which such an error still goes through, so it settles either way.
 */
export async function copyIn(sql: Pick<Sql, "unsafe">, statement: string): Promise<CopyIn> {
  const query = sql.unsafe(statement) as unknown as Promise<unknown> & {
    reject(e: unknown): void;
    writable(): Promise<Writable>;
  };
  let refused!: (e: unknown) => void;
  const failed = new Promise<never>((_, reject) => (refused = reject));
  failed.catch(() => {});
  const reject = query.reject;
  query.reject = (e: unknown) => {
    refused(e);
    reject(e);
  };
  const stream = await query.writable();
  const finished = new Promise<void>((resolve, reject) => {
    stream.once("finish", resolve);
    stream.once("error", reject);
  });
  finished.catch(() => {});
  return { stream, done: Promise.race([finished, failed]) };
}
