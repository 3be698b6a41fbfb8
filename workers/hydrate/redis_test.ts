import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureTls } from "../../shared/stack/postgres.ts";
import { freePort, startProcess } from "../../shared/stack/process.ts";
import { testEnv, testId } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { quietLog } from "./_testing.ts";
import { connectRedis } from "./redis.ts";

Deno.test("connectRedis() speaks TLS to a rediss:// server with a password, checked against the given CA", async () => {
  const dir = join(testEnv.tmp, `redis-tls-${testId()}`);
  const certs = await ensureTls(dir);
  const port = freePort();
  const password = "pw-" + testId();
  const proc = await startProcess({
    name: "redis-tls",
    cmd: "redis-server",
    args: [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--tls-cert-file",
      certs.cert,
      "--tls-key-file",
      certs.key,
      "--tls-ca-cert-file",
      certs.ca,
      "--tls-auth-clients",
      "no",
      "--requirepass",
      password,
      "--save",
      "",
      "--dir",
      dir,
    ],
    output: join(dir, "redis.log"),
  });
  try {
    const url = `rediss://:${password}@localhost:${port}`;
    const end = performance.now() + 10_000;
    let ok = false;
    while (!ok && performance.now() < end) {
      const r = connectRedis(url, { caFile: certs.ca }, quietLog);
      try {
        for (let i = 0; i < 20 && r.client.status !== "ready"; i++) await abortableSleep(50);
        if (r.client.status === "ready") {
          await r.client.set("tls:k", "v");
          assert.equal(await r.client.get("tls:k"), "v");
          ok = true;
        }
      } finally {
        await r.close();
      }
    }
    assert.ok(ok, "a TLS connection with the CA and the password works");

    // Without the CA the server's certificate is not trusted: no connection.
    const untrusted = connectRedis(url, {}, quietLog);
    await abortableSleep(500);
    assert.notEqual(untrusted.client.status, "ready");
    await untrusted.close();
  } finally {
    await proc.stop(5_000);
  }
});

Deno.test("connectRedis() refuses a URL that is not a URL and a CA file that cannot be read, without echoing them", () => {
  assert.throws(() => connectRedis("not a url:pw", {}, quietLog), /REDIS_URL is not a valid URL/);
  assert.throws(
    () => connectRedis("rediss://:secret@localhost:1", { caFile: "/nonexistent/ca.pem" }, quietLog),
    (e) => e instanceof Error && /Redis CA file/.test(e.message) && !e.message.includes("secret"),
  );
});
