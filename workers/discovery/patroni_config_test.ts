import assert from "node:assert/strict";
import { etcdArgs, memberName, type NodePlan, patroniConfig, pgHba } from "./patroni_config.ts";

const plan: NodePlan = {
  scope: "myapp",
  self: "10.0.0.2",
  members: ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
  host: { postgres: 15432, api: 18008, etcdClient: 12379, etcdPeer: 12380 },
  listen: { postgres: 5432, api: 8008, etcdClient: 2379, etcdPeer: 2380 },
  listenHost: "0.0.0.0",
  dataDir: "/data",
  timing: { ttl: 10, loop_wait: 2, retry_timeout: 4 },
  superuser: { username: "postgres", password: "su-pass" },
  replication: { username: "replicator", password: "rep-pass" },
  restApi: { username: "patroni", password: "api-pass" },
  binDir: "/usr/lib/postgresql/15/bin",
};

Deno.test("Patroni's configuration advertises host ports, listens on internal ones and names every etcd", () => {
  const c = JSON.parse(JSON.stringify(patroniConfig(plan)));
  assert.equal(c.scope, "myapp");
  assert.equal(c.name, "m-10-0-0-2");
  assert.equal(c.restapi.listen, "0.0.0.0:8008");
  assert.equal(c.restapi.connect_address, "10.0.0.2:18008");
  assert.equal(c.postgresql.connect_address, "10.0.0.2:15432");
  assert.equal(c.postgresql.listen, "0.0.0.0:5432");
  assert.deepEqual(c.etcd3.hosts, ["10.0.0.1:12379", "10.0.0.2:12379", "10.0.0.3:12379"]);
  assert.deepEqual([c.bootstrap.dcs.ttl, c.bootstrap.dcs.loop_wait, c.bootstrap.dcs.retry_timeout], [
    10,
    2,
    4,
  ]);
  assert.equal(c.postgresql.data_dir, "/data/pgdata");
});

Deno.test("Patroni's REST API demands authentication for unsafe methods", () => {
  const c = patroniConfig(plan) as { restapi: { authentication?: { username: string; password: string } } };
  assert.deepEqual(c.restapi.authentication, { username: "patroni", password: "api-pass" });
});

Deno.test("writing Patroni's configuration refuses timings that break the ttl rule", () => {
  assert.throws(
    () => patroniConfig({ ...plan, timing: { ttl: 10, loop_wait: 10, retry_timeout: 10 } }),
    /ttl/,
  );
});

Deno.test("pg_hba allows the discovered members and loopback only, never a catch-all", () => {
  const lines = pgHba(plan);
  assert.ok(lines.includes("host all all 10.0.0.1/32 scram-sha-256"));
  assert.ok(lines.includes("host replication replicator 10.0.0.3/32 scram-sha-256"));
  assert.ok(lines.includes("host all all 127.0.0.1/32 scram-sha-256"));
  assert.ok(lines.every((l) => !/0\.0\.0\.0\/0|::\/0|\btrust\b|\bmd5\b/.test(l)), lines.join("\n"));
  assert.ok(
    pgHba({ ...plan, extraCidrs: ["192.168.1.0/24"] }).includes("host all all 192.168.1.0/24 scram-sha-256"),
  );
  for (const bad of ["0.0.0.0/0", "::/0", "all", "10.0.0.0/0"]) {
    assert.throws(() => pgHba({ ...plan, extraCidrs: [bad] }), /catch-all/, bad);
  }
  assert.throws(() => pgHba({ ...plan, extraCidrs: ["evil host"] }), /not a CIDR/);
  const tls = pgHba({ ...plan, tls: { cert: "c", key: "k", ca: "a" } });
  assert.ok(tls.includes("hostssl all all 10.0.0.1/32 scram-sha-256"));
});

Deno.test("etcd's arguments bootstrap from the initial cluster with the scope as token", () => {
  const initial = Object.fromEntries(plan.members.map((m) => [memberName(m), `http://${m}:12380`]));
  const a = etcdArgs(plan, initial, "new");
  const arg = (k: string) => a[a.indexOf(k) + 1];
  assert.equal(arg("--name"), "m-10-0-0-2");
  assert.equal(arg("--listen-peer-urls"), "http://0.0.0.0:2380");
  assert.equal(arg("--initial-advertise-peer-urls"), "http://10.0.0.2:12380");
  assert.equal(arg("--advertise-client-urls"), "http://10.0.0.2:12379");
  assert.equal(arg("--initial-cluster-state"), "new");
  assert.equal(arg("--initial-cluster-token"), "wharf-myapp");
  assert.equal(
    arg("--initial-cluster"),
    "m-10-0-0-1=http://10.0.0.1:12380,m-10-0-0-2=http://10.0.0.2:12380,m-10-0-0-3=http://10.0.0.3:12380",
  );
  assert.equal(memberName("2001:db8::1"), "m-2001-db8-1");
});

Deno.test("with TLS, PostgreSQL and the REST API serve the member's certificate and members verify the CA", () => {
  const c = JSON.parse(
    JSON.stringify(patroniConfig({ ...plan, tls: { cert: "/t/s.crt", key: "/t/s.key", ca: "/t/ca.crt" } })),
  );
  assert.equal(c.postgresql.parameters.ssl, "on");
  assert.equal(c.postgresql.parameters.ssl_cert_file, "/t/s.crt");
  assert.deepEqual([c.restapi.certfile, c.restapi.keyfile, c.restapi.cafile], [
    "/t/s.crt",
    "/t/s.key",
    "/t/ca.crt",
  ]);
  assert.equal(c.ctl.cacert, "/t/ca.crt");
  assert.equal(c.postgresql.authentication.replication.sslmode, "verify-ca");
  assert.equal(c.postgresql.authentication.replication.sslrootcert, "/t/ca.crt");
  assert.ok(c.postgresql.pg_hba.includes("hostssl replication replicator 10.0.0.3/32 scram-sha-256"));
});
