/**
 * One member of a discovered cluster: discovers the members, writes etcd's and Patroni's configuration,
 * starts etcd (joining a running cluster by registering itself, or bootstrapping a new one with every
 * discovered member), then Patroni (which runs PostgreSQL), then the membership updater and the status
 * poller, and supervises the processes: one that exits on its own is restarted with backoff.
 *
 * PostgreSQL and Patroni refuse to run as root: when we are root, every process runs as the service user
 * the local PostgreSQL of the dev stack uses (setpriv execs in place, so the pid we hold is the service's).
 */
import { join } from "node:path";
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { postgresBinDir } from "../../shared/stack/packages.ts";
import {
  asUser,
  chownTo,
  makeReachable,
  type ServiceUser,
  serviceUser,
} from "../../shared/stack/postgres.ts";
import { type ManagedProcess, startProcess, tcpOpen, waitUntil } from "../../shared/stack/process.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";
import { type DiscoverySettings, restApiPassword } from "./config.ts";
import { EtcdClient, type EtcdMember } from "./etcd.ts";
import { decide, memberAddress, OmissionCounter } from "./membership.ts";
import { getCluster, getMemberLsn, postPatroni } from "./patroni_api.ts";
import {
  clientUrl,
  etcdArgs,
  hostPort,
  memberName,
  nodePaths,
  type NodePlan,
  patroniConfig,
  peerUrl,
} from "./patroni_config.ts";
import type { DiscoverySource } from "./sources.ts";
import { ensureTls } from "./tls.ts";
import { type MemberStatus, recordHistory, writeSnapshot } from "./status.ts";

/** What a node is made from. */
export interface NodeOptions {
  settings: DiscoverySettings;
  source: DiscoverySource;
  /** This node's address as the source lists it. */
  self: string;
  log: Logger;
  /** wharf's database for members and history (optional). */
  sql?: Sql;
}

/** Counters the worker exposes on `/healthz` and in `control.worker_instances`. */
export interface NodeStatus {
  phase: "discovering" | "starting" | "running" | "stopping" | "stopped";
  role?: string;
  members: number;
  badReads: number;
  removals: number;
  restarts: number;
  lastError?: string;
}

/** A running member. */
export class DiscoveryNode {
  readonly opts: NodeOptions;
  readonly name: string;
  readonly scope: string;
  readonly status: NodeStatus = { phase: "discovering", members: 0, badReads: 0, removals: 0, restarts: 0 };
  readonly paths: ReturnType<typeof nodePaths>;
  readonly omissions = new OmissionCounter();
  #controller = new AbortController();
  #etcd?: ManagedProcess;
  #patroni?: ManagedProcess;
  #etcdArgs: string[] = [];
  #user?: ServiceUser;
  #plan!: NodePlan;
  #loops: Promise<void>[] = [];
  #listed: string[] = [];
  #hbaMembers = "";
  #crashed = false;
  #http?: Deno.HttpClient;
  #stopping?: Promise<void>;

  constructor(opts: NodeOptions) {
    this.opts = opts;
    this.name = memberName(opts.self);
    this.scope = opts.settings.APP_NAME;
    this.paths = nodePaths(opts.settings.DATA_DIR);
  }

  get #s(): DiscoverySettings {
    return this.opts.settings;
  }

  /**
   * Where this node reaches its own services: the listen address (loopback when it listens on every
   * interface) and the internal ports, so that a container never depends on reaching its own host port.
   */
  get #local(): string {
    const h = this.#s.LISTEN_HOST;
    return h === "0.0.0.0" || h === "::" || h === "" ? "127.0.0.1" : h;
  }

  /** This node's Patroni REST API base URL (https when SSL is enabled). */
  get apiUrl(): string {
    return `${this.#s.SSL_ENABLED ? "https" : "http"}://${hostPort(this.#local, this.#s.PATRONI_API_PORT)}`;
  }

  /** How this node calls Patroni: with a client that trusts the cluster's CA when SSL is enabled. */
  get calls(): { client?: Deno.HttpClient } {
    return { client: this.#http };
  }

  /** This node's etcd client URL. */
  get etcdUrl(): string {
    return clientUrl(this.#local, this.#s.ETCD_CLIENT_PORT);
  }

  /** Credentials for Patroni's unsafe methods. */
  get restAuth() {
    return this.#plan.restApi;
  }

  /** Pids of etcd, Patroni and the postmaster (tests and the bench kill them). */
  async pids(): Promise<{ etcd?: number; patroni?: number; postmaster?: number }> {
    let postmaster: number | undefined;
    try {
      postmaster = Number(
        (await Deno.readTextFile(join(this.paths.pgdata, "postmaster.pid"))).split("\n")[0],
      );
    } catch { /* not running */ }
    return { etcd: this.#etcd?.pid, patroni: this.#patroni?.pid, postmaster: postmaster || undefined };
  }

  /** Discovers, configures and starts etcd and Patroni; resolves once both processes run. */
  async start(): Promise<void> {
    const signal = this.#controller.signal;
    const s = this.#s;
    const binDir = postgresBinDir();
    if (!binDir) throw new Error("Cannot start a member: no PostgreSQL server binaries found");
    this.#listed = await this.#discoverUntilGood(signal);
    const members = [...new Set([...this.#listed, this.opts.self])].sort();
    const api = await restApiPassword(s);
    this.#plan = {
      scope: this.scope,
      self: this.opts.self,
      members,
      host: {
        postgres: s.HOST_POSTGRES_PORT,
        api: s.HOST_PATRONI_API_PORT,
        etcdClient: s.HOST_ETCD_CLIENT_PORT,
        etcdPeer: s.HOST_ETCD_PEER_PORT,
      },
      listen: {
        postgres: s.POSTGRES_PORT,
        api: s.PATRONI_API_PORT,
        etcdClient: s.ETCD_CLIENT_PORT,
        etcdPeer: s.ETCD_PEER_PORT,
      },
      listenHost: s.LISTEN_HOST,
      dataDir: s.DATA_DIR,
      timing: { ttl: s.DCS_TTL, loop_wait: s.DCS_LOOP_WAIT, retry_timeout: s.DCS_RETRY_TIMEOUT },
      superuser: { username: s.POSTGRES_USER, password: s.POSTGRES_SUPERUSER_PASSWORD },
      replication: { username: "replicator", password: s.POSTGRES_REPLICATION_PASSWORD },
      restApi: { username: s.PATRONI_API_USER, password: api },
      extraCidrs: s.PG_HBA_EXTRA_CIDRS?.split(",").map((c) => c.trim()).filter(Boolean),
      binDir,
    };
    this.status.phase = "starting";
    await this.#stopLeftovers();
    this.#user = await serviceUser();
    await Deno.mkdir(this.paths.run, { recursive: true });
    await Deno.chmod(this.paths.run, 0o700);
    await makeReachable(this.#user, this.paths.run);
    if (s.SSL_ENABLED && s.SSL_PASSPHRASE) {
      this.#plan.tls = await ensureTls({
        dir: join(s.DATA_DIR, "tls"),
        passphrase: s.SSL_PASSPHRASE,
        scope: this.scope,
        address: this.opts.self,
        validityDays: s.SSL_CERT_VALIDITY_DAYS,
      });
      this.#http = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(this.#plan.tls.ca)] });
    }

    const { initial, state } = await this.#etcdJoin(members);
    this.#etcdArgs = etcdArgs(this.#plan, initial, state);
    this.opts.log.info("starting etcd", { member: this.name, state, initial_cluster: Object.keys(initial) });
    await this.#writePatroniConfig(members);
    await chownTo(this.#user, s.DATA_DIR);
    this.#etcd = await this.#spawn("etcd", "etcd", this.#etcdArgs, this.paths.etcdLog);
    await waitUntil("etcd to listen", () => tcpOpen(s.ETCD_CLIENT_PORT, this.#local), 30_000, 100);
    this.#patroni = await this.#spawn("patroni", "patroni", [this.paths.config], this.paths.patroniLog);
    this.status.phase = "running";
    this.#loops.push(this.#supervise(), this.#updaterLoop(), this.#statusLoop());
  }

  /**
   * Stops processes a previous run of this member left behind (its worker was killed): the pids in
   * `run/*.pid` and `postmaster.pid`, each only if its command line still names this member's folder.
   */
  async #stopLeftovers(): Promise<void> {
    const pids: number[] = [];
    for (const f of ["etcd.pid", "patroni.pid"]) {
      const n = Number(await Deno.readTextFile(join(this.paths.run, f)).catch(() => ""));
      if (n) pids.push(n);
    }
    const { postmaster } = await this.pids();
    if (postmaster) pids.push(postmaster);
    for (const pid of pids) {
      try {
        const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`);
        if (!cmd.includes(this.#s.DATA_DIR)) continue;
        this.opts.log.warn("stopping a process left by a previous run", { pid });
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }

  /** Reads the source until it gives a good answer (a fresh member needs one to know its peers). */
  async #discoverUntilGood(signal: AbortSignal): Promise<string[]> {
    for (let attempt = 0;; attempt++) {
      try {
        return await this.opts.source.discover(signal);
      } catch (e) {
        this.status.badReads++;
        this.status.lastError = (e as Error).message;
        this.opts.log.warn("discovery read failed; retrying", { error: (e as Error).message, attempt });
        if (!(await abortableSleep(backoffMs(attempt, 500, 10_000), signal))) throw new Error("Stopped");
      }
    }
  }

  /**
   * How etcd starts: joining a running cluster (registering itself with `member add` when it is not a
   * member yet) or bootstrapping a new one with every discovered member.
   */
  async #etcdJoin(
    members: string[],
    mayRegister = true,
  ): Promise<{ initial: Record<string, string>; state: "new" | "existing" }> {
    const s = this.#s;
    const myPeer = peerUrl(this.opts.self, s.HOST_ETCD_PEER_PORT);
    const fresh: Record<string, string> = Object.fromEntries(
      members.map((m) => [memberName(m), peerUrl(m, s.HOST_ETCD_PEER_PORT)]),
    );
    const others = members.filter((m) => m !== this.opts.self).map((m) =>
      clientUrl(m, s.HOST_ETCD_CLIENT_PORT)
    );
    const client = others.length ? new EtcdClient(others, 1_500) : undefined;
    const current: EtcdMember[] | undefined = await client?.members().catch(() => undefined);
    let hasData = true;
    try {
      await Deno.stat(join(this.paths.etcd, "member"));
    } catch {
      hasData = false;
    }
    if (hasData) {
      // Data exists: etcd ignores the initial flags, unless the others removed us meanwhile (the source
      // omitted this member for a while): then our data is of no use and we register afresh.
      if (!current || current.some((m) => m.peerUrls.includes(myPeer))) {
        return { initial: fresh, state: "existing" };
      }
      if (!mayRegister) throw new Error("Cannot rejoin etcd: this member was removed and is not listed");
      this.opts.log.warn("this member was removed from etcd; registering again", { member: this.name });
      await Deno.remove(this.paths.etcd, { recursive: true });
    }
    if (!client || !current) return { initial: fresh, state: "new" }; // nobody runs etcd yet: bootstrap together
    const toInitial = (list: EtcdMember[]) =>
      Object.fromEntries(list.map((m) => [m.name || this.name, m.peerUrls[0]]));
    const mine = current.find((m) => m.peerUrls.includes(myPeer));
    if (mine) {
      // Named: the cluster is bootstrapping with us in its initial list. Unnamed: we registered before.
      return { initial: toInitial(current), state: mine.name ? "new" : "existing" };
    }
    for (let attempt = 0;; attempt++) {
      try {
        const added = await client.addMember(myPeer);
        this.opts.log.info("registered in etcd", { member: this.name, id: added.id });
        return { initial: toInitial(added.members), state: "existing" };
      } catch (e) {
        this.opts.log.warn("etcd member add failed; retrying", { error: (e as Error).message, attempt });
        if (!(await abortableSleep(backoffMs(attempt, 500, 5_000), this.#controller.signal))) {
          throw new Error("Stopped");
        }
      }
    }
  }

  async #writePatroniConfig(members: string[]): Promise<void> {
    this.#plan.members = members;
    this.#hbaMembers = members.join(",");
    const text = JSON.stringify(patroniConfig(this.#plan), null, 2);
    await Deno.writeTextFile(this.paths.config, text, { mode: 0o600 });
    await Deno.chmod(this.paths.config, 0o600);
    if (this.#user) await Deno.chown(this.paths.config, this.#user.uid, this.#user.gid);
  }

  async #spawn(name: string, cmd: string, args: string[], output: string): Promise<ManagedProcess> {
    const [c, a] = asUser(this.#user, cmd, args);
    const p = await startProcess({
      name: `${name}-${this.name}`,
      cmd: c,
      args: a,
      output,
      // A clean environment: Patroni reads PATRONI_* variables as configuration.
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", LANG: "C.UTF-8", HOME: this.paths.run },
      stopSignal: "SIGTERM",
    });
    await Deno.writeTextFile(join(this.paths.run, `${name}.pid`), String(p.pid)).catch(() => {});
    return p;
  }

  /** Restarts etcd or Patroni when one exits on its own, with backoff. */
  async #supervise(): Promise<void> {
    const signal = this.#controller.signal;
    const attempts = { etcd: 0, patroni: 0 };
    while (!signal.aborted) {
      for (const which of ["etcd", "patroni"] as const) {
        const p = which === "etcd" ? this.#etcd : this.#patroni;
        if (!p || p.running || signal.aborted || this.#crashed) continue;
        const code = (await p.status).code;
        this.opts.log.warn(`${which} exited; restarting`, { code, attempt: attempts[which] });
        if (!(await abortableSleep(backoffMs(attempts[which]++, 1_000, 30_000), signal))) return;
        try {
          if (which === "etcd") {
            const { initial, state } = await this.#etcdJoin(
              this.#plan.members,
              this.#listed.includes(this.opts.self),
            );
            this.#etcdArgs = etcdArgs(this.#plan, initial, state);
            await chownTo(this.#user, this.paths.etcd).catch(() => {});
            this.#etcd = await this.#spawn("etcd", "etcd", this.#etcdArgs, this.paths.etcdLog);
          } else {this.#patroni = await this.#spawn(
              "patroni",
              "patroni",
              [this.paths.config],
              this.paths.patroniLog,
            );}
          this.status.restarts++;
        } catch (e) {
          this.opts.log.error(`cannot restart ${which}`, { error: e });
        }
      }
      if (!(await abortableSleep(500, signal))) return;
      if (this.#etcd?.running) attempts.etcd = 0;
      if (this.#patroni?.running) attempts.patroni = 0;
    }
  }

  /** One pass of the membership updater; exported through {@linkcode updateOnce} for tests. */
  async updateOnce(): Promise<string> {
    const s = this.#s;
    let listed: string[];
    try {
      listed = await this.opts.source.discover(this.#controller.signal);
    } catch (e) {
      this.status.badReads++;
      this.status.lastError = (e as Error).message;
      this.opts.log.warn("discovery read failed; membership unchanged", { error: (e as Error).message });
      return "bad read";
    }
    this.#listed = listed;
    const etcd = new EtcdClient([this.etcdUrl, ...listed.map((m) => clientUrl(m, s.HOST_ETCD_CLIENT_PORT))]);
    const current = await etcd.members();
    this.status.members = current.length;
    this.omissions.observe(listed, current);
    // pg_hba and Patroni's etcd hosts follow the listing plus the members not removed yet.
    const known = [
      ...new Set([...listed, this.opts.self, ...current.map(memberAddress).filter((a): a is string => !!a)]),
    ].sort();
    if (known.join(",") !== this.#hbaMembers) {
      await this.#writePatroniConfig(known);
      const r = await postPatroni(this.apiUrl, "/reload", this.#plan.restApi, undefined, {
        timeoutMs: 5_000,
        ...this.calls,
      }).catch((
        e,
      ) => ({
        status: 0,
        text: (e as Error).message,
      }));
      this.opts.log.info("members changed: Patroni configuration rewritten", {
        members: known,
        reload: r.status,
      });
    }
    const healthy = new Set<string>();
    await Promise.all(current.map(async (m) => {
      if (m.clientUrls[0] && await EtcdClient.healthy(m.clientUrls[0], 1_500)) healthy.add(m.id);
    }));
    const self = current.find((m) => m.name === this.name)?.id;
    const d = decide({
      current,
      misses: (id) => this.omissions.get(id),
      healthy,
      removeAfter: s.REMOVE_AFTER_MISSES,
      minMembers: s.MIN_MEMBERS,
      self,
    });
    if (d.action === "hold") {
      this.opts.log.warn("member removal held back", { member: d.member?.name, reason: d.reason });
      return "hold";
    }
    if (d.action === "none") return "none";
    try {
      await etcd.removeMember(d.member.id);
    } catch (e) {
      if (!/not found/i.test((e as Error).message)) throw e;
    }
    await etcd.delete(`/service/${this.scope}/members/${d.member.name}`).catch(() => 0);
    this.omissions.forget(d.member.id);
    this.status.removals++;
    this.opts.log.info("member removed from etcd", { member: d.member.name, misses: d.misses });
    if (this.opts.sql) {
      await recordHistory(this.opts.sql, {
        scope: this.scope,
        kind: "removal",
        member: d.member.name,
        detail: { misses: d.misses, by: this.name },
      }).catch((e) => this.opts.log.warn("cannot record a removal", { error: e }));
    }
    return "removed";
  }

  async #updaterLoop(): Promise<void> {
    const signal = this.#controller.signal;
    let attempt = 0;
    while (
      await abortableSleep(
        attempt ? backoffMs(attempt, 1_000, 30_000) : this.#s.UPDATE_INTERVAL_S * 1000,
        signal,
      )
    ) {
      try {
        await this.updateOnce();
        attempt = 0;
      } catch (e) {
        attempt++;
        this.status.lastError = (e as Error).message;
        this.opts.log.warn("membership update failed", { error: (e as Error).message, attempt });
      }
    }
  }

  /** Reads `GET /cluster` (and each member's WAL position) once. */
  async snapshot(): Promise<MemberStatus[]> {
    const members = await getCluster(this.apiUrl, this.calls);
    return await Promise.all(members.map(async (m) => ({
      ...m,
      lsn: m.api_url ? await getMemberLsn(m.api_url, this.calls) : undefined,
    })));
  }

  async #statusLoop(): Promise<void> {
    const signal = this.#controller.signal;
    let dbCreated = this.#s.POSTGRES_DB === "postgres";
    while (await abortableSleep(this.#s.STATUS_INTERVAL_S * 1000, signal)) {
      try {
        const takenAt = new Date();
        const snap = await this.snapshot();
        this.status.role = snap.find((m) => m.name === this.name)?.role;
        if (this.opts.sql) {
          // Gone once missing from the snapshots of three status rounds (see writeSnapshot).
          const leaveAfterMs = 3 * this.#s.STATUS_INTERVAL_S * 1000;
          const changes = await writeSnapshot(this.opts.sql, this.scope, snap, takenAt, leaveAfterMs);
          for (const c of changes) this.opts.log.info("cluster change", { ...c });
        }
        if (!dbCreated && this.status.role === "leader") dbCreated = await this.#ensureDatabase();
      } catch (e) {
        this.opts.log.debug("status poll failed", { error: (e as Error).message });
      }
    }
  }

  /** Creates `POSTGRES_DB` on the leader once (Patroni bootstraps only `postgres`). */
  async #ensureDatabase(): Promise<boolean> {
    const { default: postgres } = await import("postgres");
    const s = this.#s;
    const sql = postgres({
      host: this.#local,
      port: s.POSTGRES_PORT,
      user: s.POSTGRES_USER,
      password: s.POSTGRES_SUPERUSER_PASSWORD,
      database: "postgres",
      max: 1,
      onnotice: () => {},
    });
    try {
      const [found] = await sql`select 1 from pg_database where datname = ${s.POSTGRES_DB}`;
      if (!found) await sql.unsafe(`create database "${s.POSTGRES_DB}"`);
      return true;
    } catch (e) {
      this.opts.log.warn("cannot create POSTGRES_DB yet", { error: (e as Error).message });
      return false;
    } finally {
      await sql.end({ timeout: 2 });
    }
  }

  /** Stops Patroni (which stops PostgreSQL and gives up leadership), then etcd. Safe to call twice. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.status.phase = "stopping";
      this.#controller.abort();
      await Promise.allSettled(this.#loops);
      if (this.#patroni) await this.#patroni.stop(30_000);
      await this.#killPostmaster("SIGQUIT");
      if (this.#etcd) await this.#etcd.stop(10_000);
      this.#http?.close();
      this.status.phase = "stopped";
    })();
    return this.#stopping;
  }

  /** Signals the postmaster named in `postmaster.pid`, if that pid is still a postgres process. */
  async #killPostmaster(sig: Deno.Signal): Promise<void> {
    const { postmaster } = await this.pids();
    if (!postmaster) return;
    try {
      const cmd = await Deno.readTextFile(`/proc/${postmaster}/cmdline`);
      if (cmd.includes("postgres")) Deno.kill(postmaster, sig);
    } catch { /* already gone */ }
  }

  /**
   * Kills Patroni and PostgreSQL (and etcd unless `keepEtcd`) with SIGKILL and stops supervising, as if
   * the machine had died. For tests and the benchmark; call {@linkcode stop} afterwards to clean up.
   */
  async crash(options: { keepEtcd?: boolean } = {}): Promise<void> {
    this.#crashed = true;
    this.#controller.abort();
    this.#patroni?.kill("SIGKILL");
    await this.#killPostmaster("SIGKILL");
    if (!options.keepEtcd) this.#etcd?.kill("SIGKILL");
    await Promise.allSettled(this.#loops);
    this.status.phase = "stopped";
  }
}

/** Runs a node until `signal` aborts, then stops it. */
export async function runDiscoveryNode(opts: NodeOptions, signal: AbortSignal, onReady?: () => void) {
  const node = new DiscoveryNode(opts);
  const abort = () => void node.stop();
  signal.addEventListener("abort", abort, { once: true });
  try {
    await node.start();
    onReady?.();
    await new Promise<void>((r) =>
      signal.aborted ? r() : signal.addEventListener("abort", () => r(), { once: true })
    );
  } finally {
    await node.stop();
  }
  return node;
}
