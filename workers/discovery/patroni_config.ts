/**
 * What the worker writes from the discovered addresses: etcd's command line, Patroni's configuration and
 * PostgreSQL's `pg_hba` rules. Pure functions, so the rules (the DCS timing rule, no catch-all address in
 * `pg_hba`, authenticated REST API) are tested without starting anything.
 */
import { join } from "node:path";
import { type DcsTiming, timingProblem } from "./config.ts";

/** The ports one node uses: what the others connect to (`host`) and what it listens on (`listen`). */
export interface NodePorts {
  postgres: number;
  api: number;
  etcdClient: number;
  etcdPeer: number;
}

/** Everything the files of one node are made from. */
export interface NodePlan {
  /** Patroni's scope (the cluster's name) and etcd's cluster token. */
  scope: string;
  /** This node's address, as the discovery source lists it. */
  self: string;
  /** Every discovered address (this node's included). */
  members: string[];
  /** Ports the other members reach (the seed's `HOST_*`). */
  host: NodePorts;
  /** Ports the processes listen on (the seed's internal ports). */
  listen: NodePorts;
  listenHost: string;
  /** Root of the node's files: `etcd/`, `pgdata/`, `run/`, `patroni.json`. */
  dataDir: string;
  timing: DcsTiming;
  superuser: { username: string; password: string };
  replication: { username: string; password: string };
  restApi: { username: string; password: string };
  /** CIDRs besides the members allowed to connect with a password (application hosts). */
  extraCidrs?: string[];
  binDir: string;
  /** TLS files for PostgreSQL, when SSL is enabled. */
  tls?: { cert: string; key: string; ca: string };
}

/** The member name of an address in etcd and Patroni: `10.0.0.1` → `m-10-0-0-1`. */
export function memberName(address: string): string {
  return "m-" + address.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

/** `host:port`, with brackets for IPv6. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** etcd's peer URL of a member. */
export function peerUrl(address: string, port: number): string {
  return `http://${hostPort(address, port)}`;
}

/** etcd's client URL of a member. */
export function clientUrl(address: string, port: number): string {
  return `http://${hostPort(address, port)}`;
}

/** Paths inside the node's folder. */
export function nodePaths(dataDir: string) {
  return {
    etcd: join(dataDir, "etcd"),
    pgdata: join(dataDir, "pgdata"),
    run: join(dataDir, "run"),
    config: join(dataDir, "patroni.json"),
    pgpass: join(dataDir, "run", "pgpass"),
    etcdLog: join(dataDir, "etcd.log"),
    patroniLog: join(dataDir, "patroni.log"),
  };
}

/**
 * etcd's arguments. `initialCluster` maps member names to peer URLs; it only matters the first time a
 * member starts (etcd ignores it once its data folder exists).
 */
export function etcdArgs(
  plan: NodePlan,
  initialCluster: Record<string, string>,
  state: "new" | "existing",
): string[] {
  const self = memberName(plan.self);
  return [
    "--name",
    self,
    "--data-dir",
    nodePaths(plan.dataDir).etcd,
    "--listen-client-urls",
    clientUrl(plan.listenHost, plan.listen.etcdClient),
    "--advertise-client-urls",
    clientUrl(plan.self, plan.host.etcdClient),
    "--listen-peer-urls",
    peerUrl(plan.listenHost, plan.listen.etcdPeer),
    "--initial-advertise-peer-urls",
    peerUrl(plan.self, plan.host.etcdPeer),
    "--initial-cluster",
    Object.entries(initialCluster).map(([n, u]) => `${n}=${u}`).join(","),
    "--initial-cluster-state",
    state,
    "--initial-cluster-token",
    `wharf-${plan.scope}`,
    // Members only go away through the updater; a removed member must not come back by itself.
    "--strict-reconfig-check=true",
    "--log-level",
    "warn",
    "--logger",
    "zap",
  ];
}

const CATCH_ALL = new Set(["0.0.0.0/0", "::/0", "all", "0.0.0.0/0.0.0.0", "samenet", "samehost"]);

/** The CIDR that allows exactly one address. */
export function hostCidr(address: string): string {
  return address.includes(":") ? `${address}/128` : `${address}/32`;
}

/**
 * `pg_hba` rules: each discovered member (and this host's loopback, which Patroni and local clients use)
 * may connect as any user and replicate, with SCRAM passwords; nothing else, unless named in
 * `extraCidrs`. A catch-all (`0.0.0.0/0`, `::/0`, `all`) is refused: the Flux image allowed the whole
 * internet to try passwords.
 */
export function pgHba(plan: Pick<NodePlan, "members" | "replication" | "extraCidrs" | "tls">): string[] {
  const method = "scram-sha-256";
  const kind = plan.tls ? "hostssl" : "host";
  const sources = ["127.0.0.1/32", ...plan.members.map(hostCidr)];
  for (const c of plan.extraCidrs ?? []) {
    const cidr = c.trim();
    if (!cidr) continue;
    if (CATCH_ALL.has(cidr.toLowerCase()) || /\/0$/.test(cidr)) {
      throw new Error(`Cannot allow ${cidr} in pg_hba: a catch-all address lets anyone try passwords`);
    }
    if (!/^[0-9A-Fa-f:.]+\/\d{1,3}$/.test(cidr)) {
      throw new Error(`Cannot allow ${cidr} in pg_hba: not a CIDR`);
    }
    sources.push(cidr);
  }
  const lines = [`local all all ${method}`];
  for (const s of [...new Set(sources)]) {
    lines.push(`${s.startsWith("127.") ? "host" : kind} all all ${s} ${method}`);
    lines.push(
      `${s.startsWith("127.") ? "host" : kind} replication ${plan.replication.username} ${s} ${method}`,
    );
  }
  return lines;
}

/**
 * Patroni's configuration (JSON, which Patroni's YAML reader accepts). Throws when the DCS timings break
 * `loop_wait + 2 × retry_timeout ≤ ttl`.
 */
export function patroniConfig(plan: NodePlan): Record<string, unknown> {
  const problem = timingProblem(plan.timing);
  if (problem) throw new Error(`Cannot write Patroni's configuration: ttl ${problem}`);
  const p = nodePaths(plan.dataDir);
  const parameters: Record<string, string | number> = {
    unix_socket_directories: p.run,
    password_encryption: "scram-sha-256",
  };
  const tls = plan.tls;
  if (tls) {
    Object.assign(parameters, {
      ssl: "on",
      ssl_cert_file: tls.cert,
      ssl_key_file: tls.key,
      ssl_ca_file: tls.ca,
    });
  }
  // Members check each other's certificates against the cluster's authority (see tls.ts).
  const verify = tls ? { sslmode: "verify-ca", sslrootcert: tls.ca } : {};
  return {
    scope: plan.scope,
    namespace: "/service/",
    name: memberName(plan.self),
    log: { level: "WARNING" },
    restapi: {
      listen: hostPort(plan.listenHost, plan.listen.api),
      connect_address: hostPort(plan.self, plan.host.api),
      // With authentication set, Patroni asks for it on unsafe methods (POST/PUT/PATCH/DELETE) only.
      authentication: { username: plan.restApi.username, password: plan.restApi.password },
      ...(tls ? { certfile: tls.cert, keyfile: tls.key, cafile: tls.ca } : {}),
    },
    ctl: {
      authentication: { username: plan.restApi.username, password: plan.restApi.password },
      ...(tls ? { cacert: tls.ca, certfile: tls.cert, keyfile: tls.key } : {}),
    },
    etcd3: { hosts: plan.members.map((m) => hostPort(m, plan.host.etcdClient)) },
    bootstrap: {
      dcs: {
        ttl: plan.timing.ttl,
        loop_wait: plan.timing.loop_wait,
        retry_timeout: plan.timing.retry_timeout,
        maximum_lag_on_failover: 1048576,
        postgresql: {
          use_pg_rewind: true,
          use_slots: true,
          parameters: {
            // logical, not replica: the replicate worker decodes the WAL through a logical slot.
            wal_level: "logical",
            hot_standby: "on",
            max_wal_senders: 10,
            max_replication_slots: 10,
            wal_log_hints: "on",
          },
        },
      },
      initdb: [{ encoding: "UTF8" }, { locale: "C" }, "data-checksums"],
    },
    postgresql: {
      listen: hostPort(plan.listenHost, plan.listen.postgres),
      connect_address: hostPort(plan.self, plan.host.postgres),
      data_dir: p.pgdata,
      bin_dir: plan.binDir,
      pgpass: p.pgpass,
      authentication: {
        superuser: { ...plan.superuser, ...verify },
        replication: { ...plan.replication, ...verify },
        rewind: { ...plan.superuser, ...verify },
      },
      parameters,
      pg_hba: pgHba(plan),
    },
    tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
  };
}
