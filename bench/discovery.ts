/**
 * `deno task bench:discovery`: failover time of a three-member cluster (real etcd, Patroni and PostgreSQL
 * on loopback addresses) with the DCS timings wharf writes (ttl 10, loop_wait 2, retry_timeout 4) versus
 * Patroni's defaults (ttl 30, loop_wait 10, retry_timeout 10), in the same run: kill -9 of the primary's
 * Patroni and PostgreSQL (etcd keeps running, as when only the database process dies) until a new primary
 * accepts a write. Then membership convergence: a member dropped from the discovery API until it is gone
 * from etcd (it takes `REMOVE_AFTER_MISSES` = 3 confirming reads by design).
 *
 * `BENCH_ROUNDS` (default 1) repeats each failover; the median is reported.
 */
import postgres from "postgres";
import { createLogger } from "../shared/log.ts";
import { waitUntil } from "../shared/stack/process.ts";
import { abortableSleep } from "../shared/worker.ts";
import { type DcsTiming, PATRONI_DEFAULT_TIMING } from "../workers/discovery/config.ts";
import { EtcdClient } from "../workers/discovery/etcd.ts";
import { LocalCluster } from "../workers/discovery/local.ts";
import { type ClusterMember, getCluster } from "../workers/discovery/patroni_api.ts";
import { memberName } from "../workers/discovery/patroni_config.ts";
import { percentile, report, type Row } from "./_util.ts";

const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? 1);
const POLL_S = 1;
const WHARF: DcsTiming = { ttl: 10, loop_wait: 2, retry_timeout: 4 };
const log = createLogger("bench-discovery", { level: "error" });

function connect(cluster: LocalCluster, host: string) {
  return postgres({
    host,
    port: cluster.ports[0],
    user: "postgres",
    password: cluster.passwords.superuser,
    database: "postgres",
    max: 1,
    connect_timeout: 1,
    idle_timeout: 1,
    onnotice: () => {},
  });
}

async function view(cluster: LocalCluster): Promise<ClusterMember[]> {
  return await getCluster(cluster.any().apiUrl);
}

async function waitHealthy(cluster: LocalCluster, n: number): Promise<ClusterMember[]> {
  let members: ClusterMember[] = [];
  await waitUntil(
    `${n} healthy members`,
    async () => {
      members = await view(cluster);
      return members.length === n &&
        members.filter((m) => m.role === "leader" && m.state === "running").length === 1 &&
        members.filter((m) => m.role !== "leader" && m.state !== "stopped" && m.lag === 0).length === n - 1;
    },
    240_000,
    250,
  );
  return members;
}

/** One insert on `host` through a new connection, given up after 1.5 s. */
async function writeOnce(cluster: LocalCluster, host: string): Promise<true> {
  const sql = connect(cluster, host);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      sql`insert into bench default values`,
      new Promise((_, reject) => timer = setTimeout(() => reject(new Error("timed out")), 1_500)),
    ]);
    return true;
  } finally {
    clearTimeout(timer);
    void sql.end({ timeout: 0 }).catch(() => {});
  }
}

/** Seconds from kill -9 of the primary's Patroni and PostgreSQL until another member accepts a write. */
async function failoverOnce(cluster: LocalCluster, again: boolean): Promise<number> {
  const members = await waitHealthy(cluster, 3);
  const leader = members.find((m) => m.role === "leader")!;
  const others = members.filter((m) => m.name !== leader.name).map((m) => m.host!);
  const setup = connect(cluster, leader.host!);
  await setup`create table if not exists bench (id serial primary key, at timestamptz default now())`;
  await setup.end();
  const t0 = performance.now();
  await cluster.nodes.get(leader.host!)!.crash({ keepEtcd: true });
  let elapsed = NaN;
  while (performance.now() - t0 < 240_000) {
    // A fresh connection per attempt, each bounded in time: a member that is restarting or promoting
    // may accept a connection and not answer for a while.
    const ok = await Promise.any(others.map((h) => writeOnce(cluster, h))).catch(() => false);
    if (ok) {
      elapsed = (performance.now() - t0) / 1000;
      break;
    }
    await abortableSleep(100);
  }
  if (again) {
    // Bring the killed member back so the next round starts from three members again.
    await cluster.nodes.get(leader.host!)!.stop();
    await cluster.startMember(leader.host!);
  }
  return elapsed;
}

async function failoverRun(timing: DcsTiming): Promise<number[]> {
  const cluster = await LocalCluster.create({ size: 3, timing, log, updateIntervalS: POLL_S });
  try {
    await cluster.startAll();
    const out: number[] = [];
    for (let i = 0; i < ROUNDS; i++) out.push(await failoverOnce(cluster, i < ROUNDS - 1));
    return out;
  } finally {
    await cluster.stop();
  }
}

/** Seconds from a member's removal from the API until etcd no longer lists it. */
async function convergence(): Promise<number> {
  const cluster = await LocalCluster.create({ size: 3, timing: WHARF, log, updateIntervalS: POLL_S });
  try {
    await cluster.startAll();
    const members = await waitHealthy(cluster, 3);
    const gone = members.find((m) => m.role !== "leader")!.host!;
    await cluster.nodes.get(gone)!.stop();
    const t0 = performance.now();
    cluster.api.addresses = cluster.api.addresses.filter((a) => a !== gone);
    const etcd = new EtcdClient(cluster.api.addresses.map((a) => cluster.nodes.get(a)!.etcdUrl));
    await waitUntil(
      "the member gone from etcd",
      async () => {
        return !(await etcd.members()).some((m) => m.name === memberName(gone));
      },
      60_000,
      50,
    );
    return (performance.now() - t0) / 1000;
  } finally {
    await cluster.stop();
  }
}

const median = (xs: number[]) => percentile(xs, 50);
const ours = await failoverRun(WHARF);
const theirs = await failoverRun(PATRONI_DEFAULT_TIMING);
const converge = await convergence();
const rows: Row[] = [
  {
    config: "wharf (ttl 10, loop_wait 2, retry_timeout 4)",
    rounds: ours.length,
    failover_s: median(ours),
    converge_s: converge,
  },
  {
    config: "Patroni defaults (ttl 30, loop_wait 10, retry_timeout 10)",
    rounds: theirs.length,
    failover_s: median(theirs),
    converge_s: "-",
  },
];
report("discovery", rows, {
  ratio: Number((median(theirs) / median(ours)).toFixed(2)),
  failover_s: Number(median(ours).toFixed(2)),
  failover_default_s: Number(median(theirs).toFixed(2)),
  converge_s: Number(converge.toFixed(2)),
  converge_polls: Number((converge / POLL_S).toFixed(2)),
  poll_interval_s: POLL_S,
});
