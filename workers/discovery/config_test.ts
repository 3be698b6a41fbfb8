import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../../shared/config.ts";
import { DiscoveryConfig, restApiPassword, timingProblem } from "./config.ts";

const base = {
  POSTGRES_SUPERUSER_PASSWORD: "super-secret-1",
  POSTGRES_REPLICATION_PASSWORD: "repl-secret-1",
};

Deno.test("the seed's variables keep their names and defaults", () => {
  const c = loadConfig(DiscoveryConfig, base);
  assert.equal(c.APP_NAME, "myapp-postgres");
  assert.deepEqual(
    [c.HOST_POSTGRES_PORT, c.HOST_PATRONI_API_PORT, c.HOST_ETCD_CLIENT_PORT, c.HOST_ETCD_PEER_PORT],
    [5432, 8008, 2379, 2380],
  );
  assert.deepEqual([c.POSTGRES_PORT, c.PATRONI_API_PORT, c.ETCD_CLIENT_PORT, c.ETCD_PEER_PORT], [
    5432,
    8008,
    2379,
    2380,
  ]);
  assert.equal(c.POSTGRES_USER, "postgres");
  assert.equal(c.POSTGRES_DB, "postgres");
  assert.equal(c.SSL_ENABLED, false);
  assert.equal(c.SSL_CERT_VALIDITY_DAYS, 3650);
  assert.equal(c.FLUX_API_URL, "https://api.runonflux.io");
  assert.equal(c.UPDATE_INTERVAL_S, 60);
});

Deno.test("a config error names the variables and never shows their values", () => {
  const err = (() => {
    try {
      loadConfig(DiscoveryConfig, { POSTGRES_SUPERUSER_PASSWORD: "short", SSL_ENABLED: "true" });
    } catch (e) {
      return e as ConfigError;
    }
    return undefined;
  })();
  assert.ok(err instanceof ConfigError);
  const vars = err.problems.map((p) => p.variable);
  for (const v of ["POSTGRES_SUPERUSER_PASSWORD", "POSTGRES_REPLICATION_PASSWORD"]) {
    assert.ok(vars.includes(v), v);
  }
  assert.doesNotMatch(err.message, /short/);
  assert.throws(
    () => loadConfig(DiscoveryConfig, { ...base, SSL_ENABLED: "true" }),
    /SSL_PASSPHRASE: is required/,
  );
  assert.throws(() => loadConfig(DiscoveryConfig, { ...base, DISCOVERY_SOURCE: "http" }), /DISCOVERY_URL/);
});

Deno.test("the DCS timings must satisfy loop_wait + 2 × retry_timeout ≤ ttl", () => {
  assert.equal(timingProblem({ ttl: 10, loop_wait: 2, retry_timeout: 4 }), undefined);
  assert.equal(timingProblem({ ttl: 30, loop_wait: 10, retry_timeout: 10 }), undefined);
  assert.match(timingProblem({ ttl: 10, loop_wait: 3, retry_timeout: 4 }) ?? "", /3 \+ 2 × 4 = 11/);
  assert.throws(
    () => loadConfig(DiscoveryConfig, { ...base, DCS_TTL: "10", DCS_LOOP_WAIT: "5", DCS_RETRY_TIMEOUT: "5" }),
    /DCS_TTL/,
  );
});

Deno.test("the REST API password is derived from the superuser password without equalling it", async () => {
  const a = await restApiPassword(base);
  assert.equal(a, await restApiPassword(base));
  assert.notEqual(a, base.POSTGRES_SUPERUSER_PASSWORD);
  assert.ok(a.length >= 40);
  assert.equal(await restApiPassword({ ...base, PATRONI_API_PASSWORD: "given-one" }), "given-one");
});
