import assert from "node:assert/strict";
import { loadConfig } from "../../shared/config.ts";
import { DiscoveryConfig } from "./config.ts";
import { findSelf } from "./main.ts";
import { DiscoveryError, type DiscoverySource } from "./sources.ts";

const settings = (env: Record<string, string> = {}) =>
  loadConfig(DiscoveryConfig, {
    POSTGRES_SUPERUSER_PASSWORD: "super-secret-1",
    POSTGRES_REPLICATION_PASSWORD: "repl-secret-1",
    ...env,
  });

Deno.test("findSelf() takes NODE_IP, or the listed address of a local interface after bad reads", async () => {
  assert.equal(
    await findSelf(settings({ NODE_IP: "10.9.9.9" }), { kind: "x", discover: () => Promise.reject() }),
    "10.9.9.9",
  );
  let reads = 0;
  const flaky: DiscoverySource = {
    kind: "test",
    discover() {
      reads++;
      if (reads === 1) return Promise.reject(new DiscoveryError("HTTP 500"));
      return Promise.resolve(["10.255.255.1", "127.0.0.1"]);
    },
  };
  assert.equal(await findSelf(settings(), flaky), "127.0.0.1");
  assert.equal(reads, 2);
  await assert.rejects(
    () => findSelf(settings(), { kind: "test", discover: () => Promise.resolve(["10.255.255.1"]) }),
    /set NODE_IP/,
  );
});
