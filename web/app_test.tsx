import assert from "node:assert/strict";
import { createTestDatabase } from "../shared/testing/mod.ts";
import { connectPostgres } from "../shared/db.ts";
import { createApp } from "./app.tsx";

Deno.test("GET /healthz answers ok with the database reachable, 503 without it", async () => {
  await using db = await createTestDatabase();
  const ok = await createApp({ sql: db.sql }).request("/healthz");
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).database, "ok");
  const dead = connectPostgres("postgres://u:p@127.0.0.1:1/x", { max: 1, connectTimeout: 1 });
  const bad = await createApp({ sql: dead }).request("/healthz");
  assert.equal(bad.status, 503);
  assert.equal((await bad.json()).database, "unreachable");
  await dead.end();
});

Deno.test("every response carries a request id; a safe client id is kept, an unsafe one replaced", async () => {
  const app = createApp();
  const kept = await app.request("/healthz", { headers: { "x-request-id": "abc-123" } });
  assert.equal(kept.headers.get("x-request-id"), "abc-123");
  await kept.body?.cancel();
  const replaced = await app.request("/healthz", { headers: { "x-request-id": "<script>" } });
  assert.match(replaced.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  await replaced.body?.cancel();
});

Deno.test("unknown routes get a JSON 404 with the request id", async () => {
  const res = await createApp().request("/nope", { headers: { "x-request-id": "r1" } });
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), {
    error: { code: "not_found", message: "No route for GET /nope", request_id: "r1" },
  });
});

Deno.test("the root sends browsers to the console, whose login page is rendered on the server", async () => {
  const app = createApp({ islandsVersion: "v1" });
  const root = await app.request("/");
  assert.equal(root.status, 302);
  assert.equal(root.headers.get("location"), "/console");
  const page = await app.request("/console", { headers: { accept: "text/html" } });
  assert.equal(page.status, 303);
  assert.equal(page.headers.get("location"), "/console/login?next=%2Fconsole");
  const login = await app.request("/console/login");
  const html = await login.text();
  assert.ok(html.startsWith("<!doctype html>"));
  assert.ok(html.includes('action="/console/login"'));
  assert.ok(!html.includes("islands.js"), "the login page ships no script");
});

Deno.test("static files are served and paths cannot escape the static folder", async () => {
  const app = createApp();
  const css = await app.request("/static/console.css");
  assert.equal(css.status, 200);
  assert.match(css.headers.get("content-type") ?? "", /text\/css/);
  await css.body?.cancel();
  const escape = await app.request("/static/../app.tsx");
  assert.notEqual(escape.status, 200);
  await escape.body?.cancel();
  const encoded = await app.request("/static/%2e%2e/app.tsx");
  assert.notEqual(encoded.status, 200);
  await encoded.body?.cancel();
});

Deno.test("GET /metrics counts requests by route and status", async () => {
  const app = createApp();
  await (await app.request("/healthz")).body?.cancel();
  const text = await (await app.request("/metrics")).text();
  assert.match(text, /wharf_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
});

Deno.test("the admin API refuses requests without the right bearer token", async () => {
  const app = createApp({ adminToken: "a-long-enough-admin-token" });
  const none = await app.request("/api/admin/whoami");
  assert.equal(none.status, 401);
  assert.equal((await none.json()).error.code, "unauthorized");
  const wrong = await app.request("/api/admin/whoami", { headers: { authorization: "Bearer nope" } });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  const ok = await app.request("/api/admin/whoami", {
    headers: { authorization: "Bearer a-long-enough-admin-token" },
  });
  assert.deepEqual(await ok.json(), { admin: "api-token" });
  const unset = await createApp().request("/api/admin/whoami", { headers: { authorization: "Bearer x" } });
  assert.equal(unset.status, 401);
  await unset.body?.cancel();
});
