import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { probe, probeUrl } from "../../deploy/healthcheck.ts";

const PROBE = fromFileUrl(new URL("../../deploy/healthcheck.ts", import.meta.url));

/** A loopback server answering `/healthz` with `status` (or never, with `hang`). */
function server(status: number, hang = false) {
  const pending: (() => void)[] = [];
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (new URL(req.url).pathname !== "/healthz") return new Response("no", { status: 404 });
    if (hang) return new Promise<Response>((r) => pending.push(() => r(new Response("late"))));
    return Response.json({ status: status === 200 ? "ok" : "unavailable" }, { status });
  });
  return {
    port: s.addr.port,
    async [Symbol.asyncDispose]() {
      for (const p of pending) p();
      await s.shutdown();
    },
  };
}

Deno.test("probeUrl() uses the argument, then HEALTHCHECK_URL, then the process's own port on the loopback", () => {
  assert.equal(probeUrl(["http://h/x"], { OPS_PORT: "1" }), "http://h/x");
  assert.equal(probeUrl([], { HEALTHCHECK_URL: "http://h/y", OPS_PORT: "1" }), "http://h/y");
  assert.equal(probeUrl([], { OPS_PORT: "9101" }), "http://127.0.0.1:9101/healthz");
  assert.equal(probeUrl([], { WEB_PORT: "8000" }), "http://127.0.0.1:8000/healthz");
  assert.equal(probeUrl([], {}), "http://127.0.0.1:8000/healthz");
});

Deno.test("probe() is healthy on 200, unhealthy on 503, unreachable on a closed port and gives up on silence", async () => {
  await using ok = server(200);
  await using down = server(503);
  await using silent = server(200, true);
  assert.equal((await probe(`http://127.0.0.1:${ok.port}/healthz`)).code, 0);
  assert.deepEqual(await probe(`http://127.0.0.1:${down.port}/healthz`), {
    code: 1,
    reason: "unhealthy: 503",
  });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  assert.match((await probe(`http://127.0.0.1:${closedPort}/healthz`)).reason, /^unreachable/);
  const t0 = performance.now();
  assert.deepEqual(await probe(`http://127.0.0.1:${silent.port}/healthz`, 300), {
    code: 1,
    reason: "unreachable: no answer within 300 ms",
  });
  assert.ok(performance.now() - t0 < 5_000);
});

Deno.test("the probe program exits 0 for a healthy process and 1 with a reason for an unhealthy one", async () => {
  await using ok = server(200);
  await using down = server(503);
  const run = (port: number) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", PROBE],
      env: { OPS_PORT: String(port) },
      stdout: "piped",
      stderr: "piped",
    }).output();
  assert.equal((await run(ok.port)).code, 0);
  const bad = await run(down.port);
  assert.equal(bad.code, 1);
  assert.match(new TextDecoder().decode(bad.stderr), /\/healthz unhealthy: 503/);
});
