import assert from "node:assert/strict";
import { createApp } from "../../../app.tsx";
import { createLogger } from "../../../../shared/log.ts";
import { createTestDatabase } from "../../../../shared/testing/mod.ts";
import { restApiPassword } from "../../../../workers/discovery/config.ts";

Deno.test("the cluster admin API lists members and history and validates switchover requests", async () => {
  await using db = await createTestDatabase();
  // A leader REST API that answers like Patroni: 412 for an unknown candidate, 200 otherwise.
  const seen: { auth: string | null; body: Record<string, unknown> }[] = [];
  const patroni = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = await req.json();
    seen.push({ auth: req.headers.get("authorization"), body });
    if (body.candidate === "m-nope") return new Response("candidate name does not match", { status: 412 });
    return new Response("Successfully switched over", { status: 200 });
  });
  try {
    const api = `http://127.0.0.1:${patroni.addr.port}/patroni`;
    await db
      .sql`insert into control.cluster_members (scope, name, host, port, api_url, role, state, timeline, lag_bytes, lsn)
                 values ('app', 'm-a', '10.0.0.1', 5432, ${api}, 'leader', 'running', 1, null, '0/3000000'),
                        ('app', 'm-b', '10.0.0.2', 5432, ${api}, 'replica', 'streaming', 1, 0, '0/3000000'),
                        ('app', 'm-nope', '10.0.0.3', 5432, ${api}, 'replica', 'streaming', 1, 0, '0/3000000')`;
    await db.sql`insert into control.cluster_history (scope, kind, member) values ('app', 'join', 'm-a')`;
    const env = { POSTGRES_SUPERUSER_PASSWORD: "super-secret-1" };
    const app = createApp({
      sql: db.sql,
      adminToken: "tok",
      env,
      log: createLogger("web", { level: "error" }),
    });
    const call = async (method: string, path: string, body?: unknown, token = "tok") => {
      const res = await app.request(`/api/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };

    assert.equal((await call("GET", "/cluster", undefined, "wrong")).status, 401);
    const list = await call("GET", "/cluster?scope=app");
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.members.map((m: { name: string }) => m.name), ["m-a", "m-b", "m-nope"]);
    assert.equal(list.body.members[0].role, "leader");
    assert.equal(list.body.history[0].kind, "join");
    assert.equal((await call("GET", "/cluster?scope=bad%20scope")).status, 400);
    assert.equal((await call("GET", "/cluster/history?scope=app&limit=1")).body.length, 1);

    assert.equal((await call("POST", "/cluster/switchover", { scope: "app", candidate: "x y" })).status, 400);
    assert.equal((await call("POST", "/cluster/switchover", { scope: "other" })).status, 404);
    assert.equal((await call("POST", "/cluster/switchover", { scope: "app", candidate: "m-z" })).status, 400);
    assert.equal((await call("POST", "/cluster/switchover", { scope: "app", candidate: "m-a" })).status, 409);

    const ok = await call("POST", "/cluster/switchover", { scope: "app", candidate: "m-b" });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const expected = "Basic " + btoa(`patroni:${await restApiPassword(env)}`);
    assert.equal(seen.at(-1)?.auth, expected);
    assert.deepEqual(seen.at(-1)?.body, { leader: "m-a", candidate: "m-b" });
    const refused = await call("POST", "/cluster/switchover", { scope: "app", candidate: "m-nope" });
    assert.equal(refused.status, 409);
    const h = await db.sql`select member, actor, detail from control.cluster_history
                           where kind = 'switchover_requested' order by id`;
    assert.deepEqual(h.map((r) => [r.member, r.actor, r.detail.status]), [["m-b", "api-token", 200], [
      "m-nope",
      "api-token",
      412,
    ]]);

    const noCreds = createApp({
      sql: db.sql,
      adminToken: "tok",
      env: {},
      log: createLogger("web", { level: "error" }),
    });
    const res = await noCreds.request("/api/admin/cluster/switchover", {
      method: "POST",
      headers: { authorization: "Bearer tok", "content-type": "application/json" },
      body: JSON.stringify({ scope: "app" }),
    });
    assert.equal(res.status, 503);
    await res.body?.cancel();
  } finally {
    await patroni.shutdown();
  }
});
