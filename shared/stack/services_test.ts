import assert from "node:assert/strict";
import { join } from "node:path";
import { testEnv } from "../testing/mod.ts";
import { freePort, tcpOpen } from "./process.ts";
import { startServices } from "./services.ts";

Deno.test("startServices() stops the services that did start when another one fails", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "svc-" });
  const ports = { redis: freePort(), s3: freePort() };
  const previous = Deno.env.get("WHARF_PG_BIN");
  Deno.env.set("WHARF_PG_BIN", join(dir, "no-such-postgres"));
  try {
    await assert.rejects(
      () => startServices({ dir, pgUser: "wharf", pgPassword: "unused", ephemeral: true, ports }),
    );
  } finally {
    if (previous === undefined) Deno.env.delete("WHARF_PG_BIN");
    else Deno.env.set("WHARF_PG_BIN", previous);
  }
  assert.equal(await tcpOpen(ports.redis), false, "Redis was stopped");
  assert.equal(await tcpOpen(ports.s3), false, "the S3 server was stopped");
});
