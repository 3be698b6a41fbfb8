/**
 * Every process wharf deploys, in one place: its entry point, the Deno permissions and flags it is
 * compiled with, the port its `/healthz` answers on, and the variables it reads that deployments leave
 * unset on purpose.
 *
 * `deno task compile` builds one binary per entry here; the Dockerfile copies them; the Kubernetes,
 * compose and systemd files run them; `tests/deploy/manifests_test.ts` checks those files against this
 * list and against the variables each process's source reads. A new process or a new variable starts
 * here.
 */

/** Where a process is deployed. */
export type Target = "k8s" | "compose" | "systemd";

/** One process of wharf. */
export interface ProcessSpec {
  /** Binary `wharf-<name>`, container name, compose service and systemd unit `wharf-<name>`. */
  name: string;
  /** Entry module, relative to the project root. */
  entry: string;
  /** `service` runs until stopped; `job` runs once to completion (migrations). */
  kind: "service" | "job";
  /**
   * Permission flags baked into the binary (`deno compile` fixes them at build time). Kept to what the
   * process needs: a compiled binary can never exceed them.
   */
  permissions: string[];
  /** Other runtime flags baked in (unstable features). */
  flags?: string[];
  /** Files and folders the binary embeds besides its module graph (workers, static files, SQL). */
  include?: string[];
  /**
   * Compile with `--self-extracting`: the embedded files are written to disk on first start, so native
   * addons that load sibling shared libraries (sharp's libvips) work. Costs a write on first start.
   */
  selfExtracting?: boolean;
  /** Port of `/healthz` and `/metrics` in deployments (0 for jobs). */
  port: number;
  /** The variable that sets that port (`WEB_PORT` for web, `OPS_PORT` for workers). */
  portVar?: "WEB_PORT" | "OPS_PORT" | "GATEWAY_PORT";
  /** Where it is deployed. */
  targets: Target[];
  /**
   * Variables the process reads that deployments deliberately do not set, each with the reason (a
   * default fits, an alias of a variable that is set, a development-only switch). Any other variable
   * the source reads must be provided by every manifest of the process.
   */
  unset: Record<string, string>;
  /** One line for the README and `--help`. */
  summary: string;
}

/** Variables every process may read through `shared/` that deployments leave to their defaults. */
export const SHARED_UNSET: Record<string, string> = {
  PGSSLROOTCERT: "set only with sslmode=verify-ca/verify-full and a mounted CA file",
  S3_ENDPOINT: "unset means AWS S3; set it (and S3_FORCE_PATH_STYLE) for another S3 service",
};

/** The image feed's settings shared by web and imgproc that deployments leave to their defaults. */
const FEED_TUNING: Record<string, string> = {
  FEED_THUMBNAILS_BASE_URL: "set it when the thumbnails bucket is public behind a CDN; signed URLs otherwise",
};

/** What every process needs: its database and peers, its settings, its files (CA, static, SQL). */
const NET_ENV_READ = ["--allow-net", "--allow-env", "--allow-read"];
/** Workers also name their instance after the host (`control.worker_instances`). */
const WORKER = [...NET_ENV_READ, "--allow-sys=hostname"];

/** Every process, in start order. */
export const PROCESSES: ProcessSpec[] = [
  {
    name: "migrate",
    entry: "shared/migrate.ts",
    kind: "job",
    permissions: NET_ENV_READ,
    include: ["sql/"],
    port: 0,
    targets: ["k8s", "compose", "systemd"],
    unset: {},
    summary: "applies the forward-only SQL migrations once, then exits",
  },
  {
    name: "web",
    entry: "web/main.ts",
    kind: "service",
    // --allow-ffi: the feed API's argon2 is a Node-API addon. No --allow-run and no --allow-write: a
    // compiled web never rebuilds its islands bundle (web/main.ts sees it may not), it serves the one
    // built before compiling and embedded with web/static/.
    permissions: [...NET_ENV_READ, "--allow-ffi"],
    include: ["web/static/"],
    port: 8000,
    portVar: "WEB_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      ...FEED_TUNING,
      FEED_SERVE: "the default `all`: one web serves both APIs (set users/feeds when split behind gateway)",
      FEED_JWT_ISSUER: "the default `wharf`: the same web issues and checks the tokens",
      FEED_JWT_AUDIENCE: "the default `wharf-feed`: the same web issues and checks the tokens",
      FEED_ACCESS_TTL_S: "the default (15 min) of the original API",
      FEED_REFRESH_TTL_S: "the default (30 days) of the original API",
      FEED_LOGIN_MAX_ATTEMPTS: "the default (10 per window) per name and per client",
      FEED_LOGIN_WINDOW_S: "the default (15 min)",
      FEED_MAX_UPLOAD_BYTES: "the default (10 MiB) of the original API",
      FEED_PAGE_CACHE_MS: "the default (5 s), dropped at once on any change",
      FEED_REDIS_PREFIX: "the default `wharf:feed:` (Redis is wharf's own)",
      FEED_SIGNED_URL_TTL_S: "the default (15 min)",
      PATRONI_API_USER: "the default `patroni`, the same default as the cluster members",
      POSTGRES_SUPERUSER_PASSWORD:
        "web never gets the superuser password: PATRONI_API_PASSWORD (shared with the members) is set",
      PATRONI_API_CA_FILE:
        "set it to the cluster's CA file for switchover when the members' REST API is on TLS (SSL_ENABLED); without it switchover answers 502",
    },
    summary: "console, admin API and the image-feed REST API (/api/users, /api/feeds)",
  },
  {
    name: "dispatch",
    entry: "workers/dispatch/main.ts",
    kind: "service",
    permissions: WORKER,
    flags: ["--unstable-worker-options"],
    // The sandbox's Web Worker module is loaded by URL, not imported, so it is not in the module graph.
    include: ["workers/dispatch/sandbox_worker.ts"],
    port: 8881,
    portVar: "OPS_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      DISPATCH_SCHEMA: "the default schema `control` is where the migrations put the tables",
      DISPATCH_BIND: "OPS_HOST and OPS_PORT are set, which take precedence",
      DISPATCH_CONFIG: "settings come from the environment, not a file",
      PGUSER: "the user is in DATABASE_URL",
      PGPASSWORD: "the password is in DATABASE_URL",
      DISPATCH_CONCURRENCY: "the default (4) fits the resource requests",
      DISPATCH_LEASE_MS: "the default (5 s) is the documented failover time",
      DISPATCH_POLL_MS: "the default (1 s) is only a fallback to NOTIFY",
      DISPATCH_TRUSTED_KEYS: "set it to require signed function code",
      DISPATCH_READONLY_URL: "set it when a follower exists for db.readonly",
      DISPATCH_PREFETCH: "the default (the concurrency) claims no more than the node can start",
      DISPATCH_HISTORY_HOURS: "the default keeps finished events for 7 days",
    },
    summary: "runs TypeScript functions on table changes; several replicas, one master by lease",
  },
  {
    name: "hydrate",
    entry: "workers/hydrate/main.ts",
    kind: "service",
    permissions: WORKER,
    port: 9101,
    portVar: "OPS_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      PCRED: "alias of pcred, which is set",
      DATABASE_URL: "alias of pcred, which is set",
      REDIS_TLS_CA_FILE: "Redis is on the loopback of the same Pod or host: no TLS (redis://)",
      REDIS_TLS_CERT_FILE: "Redis is on the loopback of the same Pod or host: no TLS (redis://)",
      REDIS_TLS_KEY_FILE: "Redis is on the loopback of the same Pod or host: no TLS (redis://)",
      HYDRATE_MAPPINGS_FILE: "mappings live in the database (console and admin API), not in a file",
      HYDRATE_DEFAULT_MAPPINGS: "the default (on) installs the built-in mappings on an empty registry",
      HYDRATE_PERIOD_S: "the default full-sync period (60 s) of merflow",
      HYDRATE_POLL_MS: "the default (1 s) is only a fallback to NOTIFY",
      HYDRATE_BATCH_ROWS: "the default (2000 rows a batch) fits the memory limit",
      HYDRATE_CHANGE_BATCH: "the default (2000 changes a batch)",
      HYDRATE_ATOMIC_FLIP_KEYS: "the default (100 000 keys flipped in one script)",
      HYDRATE_REDIS_PREFIX: "the default `wharf:hydrate:` (Redis is wharf's own)",
      HYDRATE_SYNC_CONCURRENCY: "the default (2 syncs at once) fits the CPU request",
      HYDRATE_LEASE_MS: "the default (15 s) lease; one sidecar per Redis anyway",
    },
    summary: "keeps Redis in step with Postgres; runs beside Redis (sidecar), Redis on localhost",
  },
  {
    name: "replicate",
    entry: "workers/replicate/main.ts",
    kind: "service",
    // --allow-write: large transactions spill to files under its state directory.
    permissions: [...WORKER, "--allow-write"],
    port: 9102,
    portVar: "OPS_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      REPLICATE_SOURCE_URL: "alias of DATABASE_URL (the source), which is set",
      REPLICATE_CONFIG: "settings come from the environment, not a JSON file",
      REDSHIFT_IAM_ROLE: "only with REPLICATE_TARGET=redshift (set it then, with a redshift:// target)",
      REPLICATE_BATCH_ROWS: "the default (50 000 rows a batch)",
      REPLICATE_BATCH_MS: "the default (250 ms) bounds the added latency",
      REPLICATE_FILE_FORMAT:
        "the default (csv), which every target reads; binary is faster for a Postgres target",
      REPLICATE_WAL_WARN_BYTES: "the default (1 GiB of WAL held by the slot) before a warning",
      REPLICATE_SPOOL_MEMORY_MB: "the default (64 MiB of batch files in memory; larger ones go to disk)",
    },
    summary: "streams the WAL through CSV batches on S3 into a warehouse; one instance per pipeline",
  },
  {
    name: "imgproc",
    entry: "workers/imgproc/main.ts",
    kind: "service",
    // sharp is a Node-API addon (--allow-ffi) that loads libvips from beside it, so it needs real files on
    // disk (--self-extracting), and sizes its thread pool from the CPU count (--allow-sys).
    permissions: [...NET_ENV_READ, "--allow-sys", "--allow-write", "--allow-ffi"],
    selfExtracting: true,
    port: 9104,
    portVar: "OPS_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      ...FEED_TUNING,
      IMGPROC_CONCURRENCY: "the default (4 images at once) fits the resource requests",
      IMGPROC_MAX_ATTEMPTS: "the default (5) before a message is dead-lettered",
      IMGPROC_MAX_PIXELS: "the default (40 MP) refuses decompression bombs",
      IMGPROC_MAX_BYTES: "the default (64 MiB) refuses larger files before reading them",
      IMGPROC_THUMB_SIZE: "the default (320 px) the feed API's clients expect",
      IMGPROC_THUMB_QUALITY: "the default (80)",
      IMGPROC_SQS_DLQ:
        "without it poison messages go to the queue's own redrive policy (set one on the queue)",
      IMGPROC_SQS_ENDPOINT: "AWS SQS by default; set it for another SQS-compatible service",
      IMGPROC_EVENTS_URL: "used only without IMGPROC_SQS_QUEUE (the local S3 server's event log)",
    },
    summary: "makes and removes thumbnails on S3 object events; scales by running more copies",
  },
  {
    name: "discovery",
    entry: "workers/discovery/main.ts",
    kind: "service",
    // Starts and supervises etcd and Patroni, and writes their configuration and certificates; reads
    // its uid (services run as a non-root user) and the network interfaces (which address is its own).
    permissions: [
      ...NET_ENV_READ,
      "--allow-sys=hostname,uid,networkInterfaces",
      "--allow-write",
      "--allow-run",
    ],
    port: 9103,
    portVar: "OPS_PORT",
    targets: ["k8s", "compose", "systemd"],
    unset: {
      FLUX_API_URL: "the Kubernetes and compose files discover members by DNS or a static list",
      DISCOVERY_URL: "used only with DISCOVERY_SOURCE=http",
      DISCOVERY_STATIC: "used only with DISCOVERY_SOURCE=static (set in compose)",
      DISCOVERY_DNS_NAME: "used only with DISCOVERY_SOURCE=dns (set in Kubernetes)",
      PATRONI_API_USER: "the default user `patroni` is fine",
      PATH: "the image's (or the unit's) PATH, where etcd and patroni are; passed on to Patroni",
      WHARF_PG_BIN: "the image installs PostgreSQL 15 at Debian's /usr/lib/postgresql/15/bin, the default",
      PG_HBA_EXTRA_CIDRS: "no network beyond the members' own needs access by default",
      LISTEN_HOST: "the default 0.0.0.0 is what a container needs",
      UPDATE_INTERVAL_S: "the default poll (60 s) as in the original",
      REMOVE_AFTER_MISSES: "the default (3 reads) guards against flapping",
      DCS_TTL: "wharf's tuned default",
      DCS_LOOP_WAIT: "wharf's tuned default",
      DCS_RETRY_TIMEOUT: "wharf's tuned default",
      STATUS_INTERVAL_S: "the default (5 s) is the console's refresh",
    },
    summary: "Postgres cluster member: discovers peers, runs etcd + Patroni, records membership",
  },
  {
    name: "gateway",
    entry: "web/gateway.ts",
    kind: "service",
    permissions: NET_ENV_READ,
    port: 8080,
    portVar: "GATEWAY_PORT",
    // Kubernetes has the Ingress for this job; compose and systemd installs may want the front door.
    targets: ["compose", "systemd"],
    unset: {
      GATEWAY_TIMEOUT_MS: "the default (30 s) upstream timeout",
    },
    summary: "optional reverse proxy in front of the users and feed APIs when they run as own services",
  },
];

/** The process named `name`; throws when there is none. */
export function processNamed(name: string): ProcessSpec {
  const p = PROCESSES.find((x) => x.name === name);
  if (!p) {
    throw new Error(`Cannot find process ${name}: known are ${PROCESSES.map((x) => x.name).join(", ")}`);
  }
  return p;
}

/** The binary name of a process. */
export function binaryName(p: ProcessSpec): string {
  return `wharf-${p.name}`;
}
