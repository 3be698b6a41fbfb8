import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureTls } from "./tls.ts";

async function verify(caFile: string, cert: string): Promise<boolean> {
  const out = await new Deno.Command("openssl", {
    args: ["verify", "-CAfile", caFile, cert],
    stdout: "null",
    stderr: "null",
  })
    .output();
  return out.success;
}

Deno.test("members with the same passphrase trust each other's certificates; another passphrase is rejected", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wharf-tls-" });
  try {
    const opts = { passphrase: "correct horse battery", scope: "app", validityDays: 30 };
    const a = await ensureTls({ ...opts, dir: join(dir, "a"), address: "10.0.0.1" });
    const b = await ensureTls({ ...opts, dir: join(dir, "b"), address: "10.0.0.2" });
    const other = await ensureTls({
      ...opts,
      passphrase: "another passphrase",
      dir: join(dir, "c"),
      address: "10.0.0.3",
    });
    assert.equal(
      await Deno.readTextFile(join(dir, "a", "ca.key")),
      await Deno.readTextFile(join(dir, "b", "ca.key")),
    );
    assert.ok(await verify(b.ca, a.cert), "b trusts a");
    assert.ok(await verify(a.ca, b.cert), "a trusts b");
    assert.ok(!(await verify(a.ca, other.cert)), "a rejects a certificate of another passphrase");
    assert.equal((await Deno.stat(a.key)).mode! & 0o077, 0);
    const text = new TextDecoder().decode(
      (await new Deno.Command("openssl", {
        args: ["x509", "-in", a.cert, "-noout", "-ext", "subjectAltName"],
        stdout: "piped",
      }).output())
        .stdout,
    );
    assert.match(text, /IP Address:10\.0\.0\.1/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
