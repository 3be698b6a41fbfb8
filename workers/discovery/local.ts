/**
 * A discovered cluster on one machine, for tests, the benchmark and `deno task dev:cluster`: each member
 * gets its own loopback address (127.0.0.11, .12, …; Linux routes all of 127/8 to the loopback device),
 * so members share ports exactly as Flux nodes do, and a small HTTP server answers in the Flux API's
 * documented shape (the only stand-in: the real API is on the internet).
 */
import { join } from "node:path";
import { createLogger, type Logger } from "../../shared/log.ts";
import type { Sql } from "../../shared/db.ts";
import { loadConfig } from "../../shared/config.ts";
import { postgresBinDir, type Requirement, which } from "../../shared/stack/packages.ts";
import { type DcsTiming } from "./config.ts";
import { DiscoveryConfig, type DiscoverySettings } from "./config.ts";
import { DiscoveryNode } from "./node.ts";
import { fluxSource } from "./sources.ts";

/** What a member needs installed: PostgreSQL, etcd (Debian etcd-server) and Patroni. */
export const CLUSTER_REQUIREMENTS: Requirement[] = [
  { label: "PostgreSQL server", pkg: "postgresql", present: () => postgresBinDir() !== undefined },
  { label: "etcd", pkg: "etcd-server", present: () => which("etcd") !== undefined },
  { label: "Patroni", pkg: "patroni", present: () => which("patroni") !== undefined },
];

/** How the stand-in API answers: the listing, or a bad answer. */
export type ApiMode = "ok" | "500" | "garbage" | "empty";

/** A local HTTP server answering `GET /apps/location/{app}` like the Flux API. */
export interface LocalFluxApi extends AsyncDisposable {
  url: string;
  /** The addresses listed (each gets the Flux node port `:16127` appended, as the real API does). */
  addresses: string[];
  mode: ApiMode;
  /** Requests answered so far. */
  requests: number;
  close(): Promise<void>;
}

/** Starts the stand-in Flux API on a free loopback port. */
export function startLocalFluxApi(appName: string, addresses: string[]): LocalFluxApi {
  const api: LocalFluxApi = {
    url: "",
    addresses: [...addresses],
    mode: "ok",
    requests: 0,
    close: async () => await server.shutdown(),
    [Symbol.asyncDispose]: async () => await api.close(),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    api.requests++;
    const path = new URL(req.url).pathname;
    if (path !== `/apps/location/${appName}`) return Response.json({ status: "error" }, { status: 404 });
    switch (api.mode) {
      case "500":
        return new Response("internal error", { status: 500 });
      case "garbage":
        return new Response("{not json", { headers: { "content-type": "application/json" } });
      case "empty":
        return Response.json({ status: "success", data: [] });
      default:
        return Response.json({
          status: "success",
          data: api.addresses.map((ip, i) => ({ ip: `${ip}:16127`, name: `${appName}_${i}`, hash: "x" })),
        });
    }
  });
  api.url = `http://127.0.0.1:${server.addr.port}`;
  return api;
}

function freeOn(host: string, port: number): boolean {
  try {
    Deno.listen({ hostname: host, port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Four ports (postgres, api, etcd client, etcd peer) free on every one of `hosts`. */
export function sharedFreePorts(hosts: string[], count = 4): number[] {
  const out: number[] = [];
  while (out.length < count) {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (l.addr as Deno.NetAddr).port;
    l.close();
    if (!out.includes(p) && hosts.every((h) => freeOn(h, p))) out.push(p);
  }
  return out;
}

/** The loopback address of member `i` (0-based): 127.0.0.11, 127.0.0.12, … */
export function loopbackAddress(i: number, base = 11): string {
  return `127.0.0.${base + i}`;
}

/** What a local member is made from. */
export interface LocalMemberOptions {
  address: string;
  apiUrl: string;
  appName: string;
  ports: number[];
  dir: string;
  timing?: DcsTiming;
  /** Seconds between updater reads (default 1) and status polls (default 1). */
  updateIntervalS?: number;
  statusIntervalS?: number;
  removeAfterMisses?: number;
  passwords: { superuser: string; replication: string };
  env?: Record<string, string>;
}

/** The settings of one local member, validated like the worker's own. */
export function localSettings(o: LocalMemberOptions): DiscoverySettings {
  const [pg, api, ec, ep] = o.ports;
  const t = o.timing ?? { ttl: 10, loop_wait: 2, retry_timeout: 4 };
  return loadConfig(DiscoveryConfig, {
    APP_NAME: o.appName,
    DISCOVERY_SOURCE: "flux",
    FLUX_API_URL: o.apiUrl,
    NODE_IP: o.address,
    LISTEN_HOST: o.address,
    DATA_DIR: join(o.dir, o.address),
    HOST_POSTGRES_PORT: String(pg),
    POSTGRES_PORT: String(pg),
    HOST_PATRONI_API_PORT: String(api),
    PATRONI_API_PORT: String(api),
    HOST_ETCD_CLIENT_PORT: String(ec),
    ETCD_CLIENT_PORT: String(ec),
    HOST_ETCD_PEER_PORT: String(ep),
    ETCD_PEER_PORT: String(ep),
    POSTGRES_SUPERUSER_PASSWORD: o.passwords.superuser,
    POSTGRES_REPLICATION_PASSWORD: o.passwords.replication,
    DCS_TTL: String(t.ttl),
    DCS_LOOP_WAIT: String(t.loop_wait),
    DCS_RETRY_TIMEOUT: String(t.retry_timeout),
    UPDATE_INTERVAL_S: String(o.updateIntervalS ?? 1),
    STATUS_INTERVAL_S: String(o.statusIntervalS ?? 1),
    REMOVE_AFTER_MISSES: String(o.removeAfterMisses ?? 3),
    ...o.env,
  });
}

/** A local cluster: the stand-in API and its members, each a {@linkcode DiscoveryNode} in this process. */
export class LocalCluster implements AsyncDisposable {
  readonly api: LocalFluxApi;
  readonly nodes = new Map<string, DiscoveryNode>();
  readonly ports: number[];
  readonly dir: string;
  readonly appName: string;
  readonly passwords: { superuser: string; replication: string };
  readonly options: Partial<LocalMemberOptions> & { sql?: Sql; log?: Logger };

  private constructor(
    dir: string,
    appName: string,
    api: LocalFluxApi,
    ports: number[],
    options: LocalCluster["options"],
  ) {
    this.dir = dir;
    this.appName = appName;
    this.api = api;
    this.ports = ports;
    this.options = options;
    this.passwords = { superuser: crypto.randomUUID(), replication: crypto.randomUUID() };
  }

  /**
   * Prepares a cluster of `size` listed members (nothing started yet). `spare` more loopback addresses
   * get ports checked too, for members added later.
   */
  static async create(
    options: { size: number; spare?: number; appName?: string; dir?: string } & LocalCluster["options"],
  ): Promise<LocalCluster> {
    const appName = options.appName ?? `wharf-${crypto.randomUUID().slice(0, 6)}`;
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "wharf-cluster-" });
    const all = Array.from({ length: options.size + (options.spare ?? 0) }, (_, i) => loopbackAddress(i));
    const api = startLocalFluxApi(appName, all.slice(0, options.size));
    return new LocalCluster(dir, appName, api, sharedFreePorts(all), options);
  }

  /** Starts the member at `address` (it must be listed, or about to be). */
  async startMember(address: string): Promise<DiscoveryNode> {
    const settings = localSettings({
      address,
      apiUrl: this.api.url,
      appName: this.appName,
      ports: this.ports,
      dir: this.dir,
      passwords: this.passwords,
      ...this.options,
    });
    const node = new DiscoveryNode({
      settings,
      source: fluxSource({ baseUrl: this.api.url, appName: this.appName, timeoutMs: 2_000 }),
      self: address,
      log: (this.options.log ?? createLogger("discovery")).child({ member: address }),
      sql: this.options.sql,
    });
    this.nodes.set(address, node);
    await node.start();
    return node;
  }

  /** Starts every listed member at once (they bootstrap etcd together). */
  async startAll(): Promise<void> {
    await Promise.all(this.api.addresses.map((a) => this.startMember(a)));
  }

  /** A running node to ask things through. */
  any(): DiscoveryNode {
    for (const n of this.nodes.values()) if (n.status.phase === "running") return n;
    throw new Error("Cannot find a running member");
  }

  /** Stops every member and the API, and removes the data unless `keep`. */
  async stop(keep = false): Promise<void> {
    await Promise.allSettled([...this.nodes.values()].map((n) => n.stop()));
    await this.api.close().catch(() => {});
    if (!keep) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
