import assert from "node:assert/strict";
import { createLogger } from "../../shared/log.ts";
import { freePort } from "../../shared/stack/process.ts";
import { createApp } from "../../web/app.tsx";
import { createGateway } from "../../web/gateway.ts";
import { eventually, feedWorld, jpeg, uploadForm } from "./_util.ts";

Deno.test("the gateway fronts users and feeds running as separate services", async () => {
  await using w = await feedWorld({ imgproc: true });
  const log = createLogger("gateway-test", { level: "error" });
  const serve = (part: "users" | "feeds") => {
    const app = createApp({
      log,
      feed: { ...w.deps, cfg: { ...w.cfg, FEED_SERVE: part, FEED_TRUST_PROXY: true } },
    });
    return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  };
  const users = serve("users");
  const feeds = serve("feeds");
  try {
    // Each service alone serves only its part.
    const direct = await fetch(`http://127.0.0.1:${users.addr.port}/api/feeds`);
    assert.equal(direct.status, 404);
    await direct.body?.cancel();
    const gw = createGateway({
      usersUrl: `http://127.0.0.1:${users.addr.port}`,
      feedsUrl: `http://127.0.0.1:${feeds.addr.port}/`,
      log,
    });
    const json = (body: unknown) => ({
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "gw-test-1" },
      body: JSON.stringify(body),
    });
    const reg = await gw.request(
      "/api/users",
      json({ email: "g@x.io", username: "gwen", password: "a long password" }),
    );
    assert.equal(reg.status, 201);
    assert.equal(reg.headers.get("x-request-id"), "gw-test-1");
    const login = await gw.request(
      "/api/users/login",
      json({ username: "gwen", password: "a long password" }),
    );
    assert.equal(login.status, 200);
    const { access_token } = await login.json();
    const created = await gw.request("/api/feeds", {
      method: "POST",
      headers: { authorization: `Bearer ${access_token}` },
      body: uploadForm(await jpeg(), "through the gateway"),
    });
    assert.equal(created.status, 201);
    const feed = await created.json();
    assert.equal(feed.caption, "through the gateway");
    await eventually("the thumbnail", async () => {
      const r = await gw.request(`/api/feeds/${feed.id}/thumbnail`);
      await r.body?.cancel();
      return r.status === 302 ? r : undefined;
    });
    const redirect = await gw.request(`/api/feeds/${feed.id}/thumbnail`);
    assert.equal(redirect.status, 302, "the redirect reaches the client");
    assert.match(redirect.headers.get("location") ?? "", /X-Amz-Signature=/);
    const list = await (await gw.request("/api/feeds?limit=5")).json();
    assert.equal(list.items.length, 1);
    const doc = await gw.request("/api/openapi.json");
    assert.equal(doc.status, 200);
    await doc.body?.cancel();
    assert.equal((await gw.request("/elsewhere")).status, 404);
    // Behind the gateway, rate limits count the client the gateway saw, not the gateway.
    const keys = await w.deps.redis.keys(`${w.cfg.FEED_REDIS_PREFIX}login-client:*`);
    assert.deepEqual(keys, [`${w.cfg.FEED_REDIS_PREFIX}login-client:unknown`]);

    const down = createGateway({
      usersUrl: `http://127.0.0.1:${freePort()}`,
      feedsUrl: "http://127.0.0.1:1",
      log,
    });
    const bad = await down.request("/api/users/me");
    assert.equal(bad.status, 502);
    assert.equal((await bad.json()).error.code, "bad_gateway");
  } finally {
    await users.shutdown();
    await feeds.shutdown();
  }
});
