/**
 * The discovery worker's settings. The Flux PostgreSQL Cluster's variables keep their names and
 * defaults (APP_NAME, HOST_* and internal ports, POSTGRES_*, SSL_*); wharf adds the discovery source,
 * the node's own address, the DCS timings and the updater's confirmation count.
 */
import { z } from "zod";
import { boolVar, portVar } from "../../shared/config.ts";

const Seconds = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(def);

/** The environment the worker reads (keys are variable names). */
export const DiscoveryConfig = z.object({
  APP_NAME: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, "must be letters, digits, _ . -")
    .default("myapp-postgres"),
  HOST_POSTGRES_PORT: portVar.default(5432),
  HOST_PATRONI_API_PORT: portVar.default(8008),
  HOST_ETCD_CLIENT_PORT: portVar.default(2379),
  HOST_ETCD_PEER_PORT: portVar.default(2380),
  POSTGRES_PORT: portVar.default(5432),
  PATRONI_API_PORT: portVar.default(8008),
  ETCD_CLIENT_PORT: portVar.default(2379),
  ETCD_PEER_PORT: portVar.default(2380),
  POSTGRES_SUPERUSER_PASSWORD: z.string().min(8, "must be at least 8 characters"),
  POSTGRES_REPLICATION_PASSWORD: z.string().min(8, "must be at least 8 characters"),
  POSTGRES_USER: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, "must be a plain lower-case name")
    .default("postgres"),
  POSTGRES_DB: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, "must be a plain name").default("postgres"),
  SSL_ENABLED: boolVar.default(false),
  SSL_PASSPHRASE: z.string().min(8, "must be at least 8 characters").optional(),
  SSL_CERT_VALIDITY_DAYS: z.coerce.number().int().min(1).max(36500).default(3650),

  /** Where members come from: `flux` (default), `http` (any JSON list), `static`, `dns`. */
  DISCOVERY_SOURCE: z.enum(["flux", "http", "static", "dns"]).default("flux"),
  FLUX_API_URL: z.string().url("must be a URL").default("https://api.runonflux.io"),
  /** For `http`: a URL answering a JSON list of addresses (or objects with `ip` / `address` / `host`). */
  DISCOVERY_URL: z.string().url("must be a URL").optional(),
  /** For `static`: comma separated addresses. */
  DISCOVERY_STATIC: z.string().optional(),
  /** For `dns`: a name whose A/AAAA records are the members. */
  DISCOVERY_DNS_NAME: z.string().optional(),
  /** This node's address as the source lists it; found among the local interfaces when unset. */
  NODE_IP: z.string().optional(),
  /** Address the services listen on (internal ports); `0.0.0.0` in a container. */
  LISTEN_HOST: z.string().default("0.0.0.0"),
  /** Where etcd's and PostgreSQL's data and the generated config live. */
  DATA_DIR: z.string().default("/var/lib/postgresql/data"),
  /** Seconds between discovery reads by the membership updater (the Flux image used 60). */
  UPDATE_INTERVAL_S: Seconds(60, 1, 3600),
  /** Consecutive good reads that must omit a member before it is removed. */
  REMOVE_AFTER_MISSES: z.coerce.number().int().min(1).max(100).default(3),
  /** The updater never removes a member when fewer would remain. */
  MIN_MEMBERS: z.coerce.number().int().min(1).max(99).default(2),
  /** Patroni DCS timings; `loop_wait + 2 × retry_timeout ≤ ttl` is enforced. */
  DCS_TTL: Seconds(10, 5, 3600),
  DCS_LOOP_WAIT: Seconds(2, 1, 3600),
  DCS_RETRY_TIMEOUT: Seconds(4, 1, 3600),
  /** Seconds between `GET /cluster` polls written to the control tables. */
  STATUS_INTERVAL_S: Seconds(5, 1, 3600),
  /** Patroni REST API user for unsafe methods; the password defaults to one derived from the superuser's. */
  PATRONI_API_USER: z.string().regex(/^[A-Za-z0-9_.-]{1,63}$/, "must be letters, digits, _ . -")
    .default("patroni"),
  PATRONI_API_PASSWORD: z.string().min(8, "must be at least 8 characters").optional(),
  /** Extra CIDRs allowed to connect to PostgreSQL with a password (application hosts). */
  PG_HBA_EXTRA_CIDRS: z.string().optional(),
  /** wharf's own database, where members and history are written; status stays in logs without it. */
  DATABASE_URL: z.string().optional(),
}).superRefine((c, ctx) => {
  if (c.SSL_ENABLED && !c.SSL_PASSPHRASE) {
    ctx.addIssue({
      code: "custom",
      path: ["SSL_PASSPHRASE"],
      message: "is required when SSL_ENABLED is true",
    });
  }
  if (c.DISCOVERY_SOURCE === "http" && !c.DISCOVERY_URL) {
    ctx.addIssue({
      code: "custom",
      path: ["DISCOVERY_URL"],
      message: "is required when DISCOVERY_SOURCE is http",
    });
  }
  if (c.DISCOVERY_SOURCE === "static" && !c.DISCOVERY_STATIC) {
    ctx.addIssue({
      code: "custom",
      path: ["DISCOVERY_STATIC"],
      message: "is required when DISCOVERY_SOURCE is static",
    });
  }
  if (c.DISCOVERY_SOURCE === "dns" && !c.DISCOVERY_DNS_NAME) {
    ctx.addIssue({
      code: "custom",
      path: ["DISCOVERY_DNS_NAME"],
      message: "is required when DISCOVERY_SOURCE is dns",
    });
  }
  const rule = timingProblem({
    ttl: c.DCS_TTL,
    loop_wait: c.DCS_LOOP_WAIT,
    retry_timeout: c.DCS_RETRY_TIMEOUT,
  });
  if (rule) ctx.addIssue({ code: "custom", path: ["DCS_TTL"], message: rule });
});

/** The parsed settings. */
export type DiscoverySettings = z.infer<typeof DiscoveryConfig>;

/** Patroni's three DCS timings, in seconds. */
export interface DcsTiming {
  ttl: number;
  loop_wait: number;
  retry_timeout: number;
}

/**
 * Patroni's rule `loop_wait + 2 × retry_timeout ≤ ttl`: with a longer loop a leader whose DCS calls are
 * retried could lose its key before it notices and demotes, so two primaries could overlap. Returns the
 * problem as a sentence, or undefined when the timings are safe.
 */
export function timingProblem(t: DcsTiming): string | undefined {
  if (t.loop_wait + 2 * t.retry_timeout > t.ttl) {
    return `must be at least loop_wait + 2 × retry_timeout (${t.loop_wait} + 2 × ${t.retry_timeout} = ${
      t.loop_wait + 2 * t.retry_timeout
    }), got ${t.ttl}`;
  }
  return undefined;
}

/** Patroni's own defaults, the baseline the benchmark compares against. */
export const PATRONI_DEFAULT_TIMING: DcsTiming = { ttl: 30, loop_wait: 10, retry_timeout: 10 };

/**
 * The REST API password for unsafe methods. Every node of a cluster must agree on it without one more
 * required variable, so by default it is derived from the superuser password (HMAC-SHA-256), which all
 * nodes share; it never equals that password.
 */
export async function restApiPassword(
  s: Pick<DiscoverySettings, "PATRONI_API_PASSWORD" | "POSTGRES_SUPERUSER_PASSWORD">,
): Promise<string> {
  if (s.PATRONI_API_PASSWORD) return s.PATRONI_API_PASSWORD;
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(s.POSTGRES_SUPERUSER_PASSWORD),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode("wharf patroni rest api")));
  return btoa(String.fromCharCode(...mac)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
