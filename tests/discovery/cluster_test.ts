import assert from "node:assert/strict";
import postgres from "postgres";
import { createLogger } from "../../shared/log.ts";
import { createApp } from "../../web/app.tsx";
import { waitUntil } from "../../shared/stack/process.ts";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { EtcdClient } from "../../workers/discovery/etcd.ts";
import { LocalCluster, loopbackAddress } from "../../workers/discovery/local.ts";
import { type ClusterMember, getCluster } from "../../workers/discovery/patroni_api.ts";
import { memberName } from "../../workers/discovery/patroni_config.ts";

function connect(cluster: LocalCluster, address: string) {
  return postgres({
    host: address,
    port: cluster.ports[0],
    user: "postgres",
    password: cluster.passwords.superuser,
    database: "postgres",
    max: 1,
    connect_timeout: 3,
    onnotice: () => {},
  });
}

async function view(cluster: LocalCluster): Promise<ClusterMember[]> {
  return await getCluster(cluster.any().apiUrl);
}

async function etcdNames(cluster: LocalCluster): Promise<string[]> {
  const running = [...cluster.nodes.values()].filter((n) => n.status.phase === "running").map((n) =>
    n.etcdUrl
  );
  return (await new EtcdClient(running).members()).map((m) => m.name).sort();
}

const healthy = (ms: ClusterMember[], n: number) =>
  ms.length === n && ms.filter((m) => m.role === "leader" && m.state === "running").length === 1 &&
  ms.filter((m) => m.role !== "leader" && ["running", "streaming"].includes(m.state) && m.lag === 0)
      .length === n - 1;

Deno.test({
  name:
    "a cluster discovered through the Flux API bootstraps, ignores bad answers, drops, admits and readmits members and fails over",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  await using db = await createTestDatabase();
  const cluster = await LocalCluster.create({
    size: 3,
    spare: 1,
    sql: db.sql,
    log: createLogger("discovery", { level: "error" }),
    removeAfterMisses: 3,
  });
  const [a, b, c] = cluster.api.addresses;
  const d = loopbackAddress(3);
  let gone = "";
  try {
    await t.step("three members listed by the API bootstrap one leader and two replicas", async () => {
      await cluster.startAll();
      await waitUntil("three healthy members", async () => healthy(await view(cluster), 3), 90_000, 500);
      assert.deepEqual(await etcdNames(cluster), [a, b, c].map(memberName).sort());
      const leader = (await view(cluster)).find((m) => m.role === "leader")!;
      const sql = connect(cluster, leader.host!);
      try {
        await sql`create table t (id int primary key)`;
        await sql`insert into t values (1)`;
      } finally {
        await sql.end();
      }
      await waitUntil(
        "members and joins in the control tables",
        async () => {
          const rows = await db
            .sql`select name, role, lsn from control.cluster_members where scope = ${cluster.appName}`;
          return rows.length === 3 && rows.every((r) => r.lsn) && rows.some((r) => r.role === "leader");
        },
        15_000,
        250,
      );
      const joins = await db.sql`select member from control.cluster_history
                                 where scope = ${cluster.appName} and kind = 'join' order by member`;
      assert.deepEqual(joins.map((r) => r.member), [a, b, c].map(memberName).sort());
    });

    await t.step("HTTP 500, garbage JSON and an empty list change nothing", async () => {
      for (const mode of ["500", "garbage", "empty"] as const) {
        const before = cluster.api.requests;
        cluster.api.mode = mode;
        // Every member reads once a second: five reads each is past the three that confirm a removal.
        await waitUntil(
          `five bad reads per member (${mode})`,
          () => Promise.resolve(cluster.api.requests >= before + 15),
          20_000,
          100,
        );
      }
      cluster.api.mode = "ok";
      assert.equal((await etcdNames(cluster)).length, 3);
      assert.ok(healthy(await view(cluster), 3));
      for (const n of cluster.nodes.values()) {
        assert.ok(n.status.badReads >= 10, `${n.name} counted ${n.status.badReads} bad reads`);
        assert.equal(n.status.removals, 0);
      }
    });

    await t.step(
      "a member dropped from the API is removed from etcd after the confirmation reads",
      async () => {
        const replica = (await view(cluster)).find((m) => m.role !== "leader")!;
        gone = replica.host!;
        await cluster.nodes.get(gone)!.stop();
        const before = cluster.api.requests;
        cluster.api.addresses = cluster.api.addresses.filter((x) => x !== gone);
        await waitUntil(
          "one omitting read per member",
          () => Promise.resolve(cluster.api.requests >= before + 2),
          10_000,
          50,
        );
        assert.ok((await etcdNames(cluster)).includes(memberName(gone)), "removed after a single omission");
        await waitUntil(
          "the member gone from etcd",
          async () => !(await etcdNames(cluster)).includes(memberName(gone)),
          20_000,
          200,
        );
        // The member that removes it has read the list three times without it (its own count, in the
        // history row below); the other member may have read less often on a busy machine.
        assert.ok(cluster.api.requests >= before + 3, "removed before three omitting reads");
        let removal: Record<string, { misses: number } & string> | undefined;
        await waitUntil(
          "the removal in the history",
          async () => {
            [removal] = await db.sql`select member, detail from control.cluster_history
                                   where scope = ${cluster.appName} and kind = 'removal'`;
            return !!removal;
          },
          5_000,
          100,
        );
        assert.ok(removal);
        assert.equal(removal.member, memberName(gone));
        assert.ok(removal.detail.misses >= 3);
        await waitUntil("Patroni without it", async () => healthy(await view(cluster), 2), 30_000, 250);
      },
    );

    await t.step("a new member listed by the API joins etcd and replicates", async () => {
      cluster.api.addresses = [...cluster.api.addresses, d];
      await cluster.startMember(d);
      await waitUntil(
        "three healthy members again",
        async () => healthy(await view(cluster), 3),
        90_000,
        500,
      );
      assert.ok((await etcdNames(cluster)).includes(memberName(d)));
      const sql = connect(cluster, d);
      try {
        assert.deepEqual((await sql`select id from t`).map((r) => r.id), [1]);
      } finally {
        await sql.end();
      }
      const leader = (await view(cluster)).find((m) => m.role === "leader")!;
      const lsql = connect(cluster, leader.host!);
      try {
        await waitUntil(
          "the leader's pg_hba to admit the new member",
          async () => {
            const rules = await lsql`select address from pg_hba_file_rules where address = ${d}`;
            return rules.length > 0;
          },
          15_000,
          250,
        );
        const all = await lsql`select address from pg_hba_file_rules where address is not null`;
        assert.ok(all.every((r) => r.address !== "0.0.0.0" && r.address !== "::"), "no catch-all rule");
      } finally {
        await lsql.end();
      }
    });

    await t.step("a removed member listed again registers afresh in etcd and replicates", async () => {
      cluster.api.addresses = [...cluster.api.addresses, gone];
      await cluster.startMember(gone);
      await waitUntil("four healthy members", async () => healthy(await view(cluster), 4), 90_000, 500);
      assert.deepEqual(await etcdNames(cluster), [a, b, c, d].map(memberName).sort());
    });

    await t.step("kill -9 of the primary promotes a replica and the failover is recorded", async () => {
      const old = (await view(cluster)).find((m) => m.role === "leader")!;
      const t0 = performance.now();
      await cluster.nodes.get(old.host!)!.crash();
      let next: ClusterMember | undefined;
      await waitUntil(
        "a new leader",
        async () => {
          next = (await view(cluster)).find((m) =>
            m.role === "leader" && m.state === "running" && m.name !== old.name
          );
          return !!next;
        },
        60_000,
        250,
      );
      const sql = connect(cluster, next!.host!);
      try {
        await waitUntil(
          "a write on the new primary",
          async () => {
            await sql`insert into t values (2) on conflict do nothing`;
            return true;
          },
          20_000,
          200,
        );
      } finally {
        await sql.end();
      }
      const failoverS = (performance.now() - t0) / 1000;
      console.log(`failover took ${failoverS.toFixed(1)} s`);
      await waitUntil(
        "the failover in the history",
        async () => {
          const rows = await db.sql`select detail from control.cluster_history
                                  where scope = ${cluster.appName} and kind = 'failover'`;
          return rows.length === 1 && rows[0].detail.from === old.name && rows[0].detail.to === next!.name &&
            rows[0].detail.planned === false;
        },
        15_000,
        250,
      );
    });

    await t.step(
      "Patroni refuses an unauthenticated switchover; the admin API's is done and recorded",
      async () => {
        await waitUntil("three healthy members", async () => healthy(await view(cluster), 3), 30_000, 250);
        const members = await view(cluster);
        const leader = members.find((m) => m.role === "leader")!;
        const candidate = members.find((m) => m.role !== "leader")!;
        const direct = await fetch(`${cluster.any().apiUrl}/switchover`, {
          method: "POST",
          body: JSON.stringify({ leader: leader.name, candidate: candidate.name }),
        });
        assert.equal(direct.status, 401);
        await direct.body?.cancel();
        await waitUntil(
          "the control tables to know the leader",
          async () => {
            const [row] = await db.sql`select name from control.cluster_members
                                   where scope = ${cluster.appName} and role = 'leader'`;
            return row?.name === leader.name;
          },
          15_000,
          250,
        );
        const app = createApp({
          sql: db.sql,
          adminToken: "tok",
          env: { POSTGRES_SUPERUSER_PASSWORD: cluster.passwords.superuser },
          log: createLogger("web", { level: "error" }),
        });
        const res = await app.request("/api/admin/cluster/switchover", {
          method: "POST",
          headers: { authorization: "Bearer tok", "content-type": "application/json" },
          body: JSON.stringify({ scope: cluster.appName, candidate: candidate.name }),
        });
        assert.equal(res.status, 200, await res.clone().text());
        await res.body?.cancel();
        await waitUntil(
          "the candidate to lead",
          async () => {
            const m = await view(cluster);
            return m.some((x) => x.name === candidate.name && x.role === "leader" && x.state === "running");
          },
          30_000,
          250,
        );
        const [req] = await db.sql`select actor, member from control.cluster_history
                                 where scope = ${cluster.appName} and kind = 'switchover_requested'`;
        assert.deepEqual([req.actor, req.member], ["api-token", candidate.name]);
        await waitUntil(
          "the planned leader change in the history",
          async () => {
            const rows = await db.sql`select detail from control.cluster_history
                                  where scope = ${cluster.appName} and kind = 'failover' and member = ${candidate.name}`;
            return rows.length === 1 && rows[0].detail.planned === true;
          },
          15_000,
          250,
        );
      },
    );
  } finally {
    await cluster.stop();
  }
});
