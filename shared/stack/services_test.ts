import assert from "node:assert/strict";
import { join } from "node:path";
import { testEnv } from "../testing/mod.ts";
import { freePort, tcpOpen } from "./process.ts";
import { startServices } from "./services.ts";

Deno.test("startServices() stops the services that did start when another one fails", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "svc-" });
  const ports = { redis: freePort(), s3: freePort() };
  // A Postgres bin folder that does not exist makes Postgres fail while Redis and S3 start. Given as an
  // option, not through WHARF_PG_BIN: test files run in parallel in one process and share its environment.
  await assert.rejects(() =>
    startServices({
      dir,
      pgUser: "wharf",
      pgPassword: "unused",
      ephemeral: true,
      ports,
      pgBinDir: join(dir, "no-such-postgres"),
    })
  );
  assert.equal(await tcpOpen(ports.redis), false, "Redis was stopped");
  assert.equal(await tcpOpen(ports.s3), false, "the S3 server was stopped");
});
