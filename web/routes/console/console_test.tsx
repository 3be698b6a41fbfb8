import assert from "node:assert/strict";
import { connectPostgres } from "../../../shared/db.ts";
import { createTestDatabase, type TestDatabase } from "../../../shared/testing/mod.ts";
import { createApp } from "../../app.tsx";
import { LOGIN_LIMIT, upsertAdmin } from "../../console/auth.ts";
import { redactDetails } from "../../console/audit.ts";
import { parseCompileError } from "../../islands/FunctionEditor.tsx";
import { CONSOLE_PAGES } from "./pages.ts";

const PASSWORD = "correct horse battery";
const TOKEN = "a-long-enough-admin-token";

async function setup(db: TestDatabase) {
  await upsertAdmin(db.sql, "ops", PASSWORD);
  return createApp({ sql: db.sql, adminToken: TOKEN, islandsVersion: "t" });
}

/** Fetches the login form: its CSRF cookie and the same token from the form. */
async function loginForm(app: ReturnType<typeof createApp>, base = "http://localhost") {
  const res = await app.request(`${base}/console/login`);
  const html = await res.text();
  const token = /name="_csrf" value="([^"]+)"/.exec(html)?.[1];
  assert.ok(token, "the login form carries a CSRF token");
  const cookie = res.headers.getSetCookie().find((c) => c.startsWith("wharf_login="))!.split(";")[0];
  return { token, cookie };
}

async function login(
  app: ReturnType<typeof createApp>,
  password = PASSWORD,
  base = "http://localhost",
  name = "ops",
) {
  const form = await loginForm(app, base);
  const res = await app.request(`${base}/console/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", cookie: form.cookie },
    body: new URLSearchParams({ name, password, next: "/console/functions", _csrf: form.token }),
  });
  await res.body?.cancel();
  const setCookie = res.headers.getSetCookie().find((c) => c.startsWith("wharf_session=")) ?? "";
  const cookie = setCookie.split(";")[0];
  return { res, setCookie, cookie };
}

async function csrfOf(app: ReturnType<typeof createApp>, cookie: string): Promise<string> {
  const html = await (await app.request("/console/functions", { headers: { cookie, accept: "text/html" } }))
    .text();
  const m = /<meta name="csrf-token" content="([^"]+)"/.exec(html);
  assert.ok(m, "the page carries the CSRF token");
  return m[1];
}

Deno.test("a console page without a session sends a browser to the login form and a script gets 401", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const page = await app.request("/console/events?state=dead", { headers: { accept: "text/html" } });
  assert.equal(page.status, 303);
  assert.equal(page.headers.get("location"), "/console/login?next=%2Fconsole%2Fevents%3Fstate%3Ddead");
  const live = await app.request("/console/live/workers", { headers: { accept: "application/json" } });
  assert.equal(live.status, 401);
  assert.equal((await live.json()).error.code, "unauthorized");
  const api = await app.request("/api/admin/functions");
  assert.equal(api.status, 401);
  await api.body?.cancel();
});

Deno.test("login sets an HttpOnly SameSite=Strict cookie, Secure over TLS, and only the token's hash is stored", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const { res, setCookie, cookie } = await login(app);
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/console/functions");
  assert.match(setCookie, /HttpOnly/);
  assert.match(setCookie, /SameSite=Strict/);
  assert.doesNotMatch(setCookie, /Secure/);
  const token = cookie.split("=")[1];
  const [row] = await db.sql`select token_hash from control.console_sessions`;
  assert.notEqual(row.token_hash, token);
  assert.equal(row.token_hash.length, 64);
  const page = await app.request("/console/functions", { headers: { cookie, accept: "text/html" } });
  assert.equal(page.status, 200);
  assert.match(await page.text(), /data-testid="functions-empty"/);
  const tls = await login(app, PASSWORD, "https://localhost");
  assert.match(tls.setCookie, /Secure/);
  const [{ hash }] = await db
    .sql`select password_hash as hash from control.console_admins where name = 'ops'`;
  assert.match(hash, /^\$argon2id\$/);
});

Deno.test("a login post without the login form's token, or with another one, is refused", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const body = { name: "ops", password: PASSWORD };
  const bare = await app.request("/console/login", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(body),
  });
  assert.equal(bare.status, 403);
  assert.match(await bare.text(), /The login form expired/);
  const form = await loginForm(app);
  const other = await loginForm(app);
  const mixed = await app.request("/console/login", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", cookie: form.cookie },
    body: new URLSearchParams({ ...body, _csrf: other.token }),
  });
  assert.equal(mixed.status, 403);
  await mixed.body?.cancel();
  assert.equal((await db.sql`select * from control.console_sessions`).length, 0);
});

Deno.test("wrong passwords are refused and, past the limit, even the right one is rate limited", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  for (let i = 0; i < LOGIN_LIMIT.perName; i++) {
    const { res } = await login(app, "wrong password");
    assert.equal(res.status, 401);
  }
  const { res, setCookie } = await login(app);
  assert.equal(res.status, 429);
  assert.equal(setCookie, "");
  const refused = await db.sql`select status from control.console_audit where action = 'login refused'`;
  assert.equal(refused.length, LOGIN_LIMIT.perName + 1);
});

Deno.test("a change with a session but without its CSRF token is refused; with it, it is made and audited", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const { cookie } = await login(app);
  const body = JSON.stringify({ code: "export default () => {}" });
  const without = await app.request("/api/admin/functions/f1", {
    method: "PUT",
    headers: { cookie, "content-type": "application/json" },
    body,
  });
  assert.equal(without.status, 403);
  assert.equal((await without.json()).error.code, "csrf");
  const wrong = await app.request("/api/admin/functions/f1", {
    method: "PUT",
    headers: { cookie, "content-type": "application/json", "x-csrf-token": "nope" },
    body,
  });
  assert.equal(wrong.status, 403);
  await wrong.body?.cancel();
  assert.equal((await db.sql`select * from control.dispatch_functions`).length, 0);
  const csrf = await csrfOf(app, cookie);
  const ok = await app.request("/api/admin/functions/f1", {
    method: "PUT",
    headers: { cookie, "content-type": "application/json", "x-csrf-token": csrf },
    body,
  });
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  const audit = await db.sql`select admin, via, action, target, status, details from control.console_audit
                              where via = 'session' order by id`;
  assert.equal(audit.length, 1, "refused CSRF requests never reach the audited handler");
  assert.equal(audit[0].admin, "ops");
  assert.equal(audit[0].action, "PUT /api/admin/functions/:name");
  assert.equal(audit[0].target, "/api/admin/functions/f1");
  assert.equal(audit[0].status, 200);
  assert.equal(audit[0].details.body.code, "export default () => {}");
  // A form post to the console (logout) without the token is refused too.
  const logout = await app.request("/console/logout", {
    method: "POST",
    headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
    body: "",
  });
  assert.equal(logout.status, 403);
  await logout.body?.cancel();
});

Deno.test("the bearer token still opens the admin API and its changes are audited, refused ones included", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  const bad = await app.request("/api/admin/functions/f2", {
    method: "PUT",
    headers,
    body: JSON.stringify({ code: "export default () => {" }),
  });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /does not compile/);
  const good = await app.request("/api/admin/functions/f2", {
    method: "PUT",
    headers,
    body: JSON.stringify({ code: "export default () => {}" }),
  });
  assert.equal(good.status, 200);
  await good.body?.cancel();
  const list = await app.request("/api/admin/functions", { headers });
  assert.equal((await list.json()).length, 1);
  const audit = await db.sql`select admin, via, status from control.console_audit order by id`;
  assert.deepEqual(audit.map((a) => [a.admin, a.via, a.status]), [["api-token", "token", 400], [
    "api-token",
    "token",
    200,
  ]]);
});

Deno.test("logout ends the session: the same cookie no longer opens a page", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const { cookie } = await login(app);
  const csrf = await csrfOf(app, cookie);
  const out = await app.request("/console/logout", {
    method: "POST",
    headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ _csrf: csrf }),
  });
  assert.equal(out.status, 303);
  assert.match(out.headers.get("set-cookie") ?? "", /wharf_session=;/);
  const after = await app.request("/console/functions", { headers: { cookie, accept: "text/html" } });
  assert.equal(after.status, 303);
  assert.equal((await db.sql`select * from control.console_sessions`).length, 0);
  const actions = await db.sql`select action from control.console_audit order by id`;
  assert.deepEqual(actions.map((a) => a.action), ["login", "logout"]);
});

Deno.test("every registered page renders with data, without a script needed to read it", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const { cookie } = await login(app);
  await db.sql`create table public.items (id int primary key)`;
  await db.sql`insert into control.dispatch_functions (name, code) values ('fx', 'export default () => {}')`;
  await db.sql`insert into control.dispatch_triggers (table_schema, table_name, function_name)
               values ('public', 'items', 'fx')`;
  await db.sql`insert into control.dispatch_events (function_name, state, last_error, attempts)
               values ('fx', 'dead', 'Error: boom', 5)`;
  await db.sql`insert into control.dispatch_schedules (function_name, cron) values ('fx', '*/5 * * * *')`;
  await db
    .sql`insert into control.worker_instances (instance_id, worker, host, pid, state, status, started_at)
               values ('dispatch-a', 'dispatch', 'h', 1, 'running', '{"done": 12, "failed": 1}', now() - interval '1 minute')`;
  const expect: Record<string, RegExp> = {
    "/console": /data-worker="dispatch" data-health="ok"/,
    "/console/functions": /data-function="fx"/,
    "/console/events": /data-state="dead"/,
    "/console/schedules": /\*\/5 \* \* \* \*/,
    "/console/audit": /data-action="login"/,
  };
  for (const p of CONSOLE_PAGES) {
    const res = await app.request(p.href, { headers: { cookie, accept: "text/html" } });
    assert.equal(res.status, 200, p.href);
    assert.match(
      res.headers.get("content-security-policy") ?? "",
      /default-src 'self'.*frame-ancestors 'none'/,
    );
    assert.equal(res.headers.get("cache-control"), "no-store");
    const html = await res.text();
    assert.match(html, expect[p.href] ?? /./, p.href);
    assert.match(html, new RegExp(`aria-current="page"[^>]*>|href="${p.href}" aria-current="page"`), p.href);
  }
  const fn = await (await app.request("/console/functions/fx", { headers: { cookie, accept: "text/html" } }))
    .text();
  assert.match(fn, /data-trigger="public.items"/);
  const missing = await app.request("/console/functions/nope", { headers: { cookie, accept: "text/html" } });
  assert.equal(missing.status, 404);
  assert.match(await missing.text(), /There is no function named nope/);
  const filtered = await app.request("/console/live/events?state=done", { headers: { cookie } });
  assert.deepEqual(await filtered.json(), []);
});

Deno.test("a test run enqueues a manual event; retry-all revives dead events and hurries failed ones", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  await db.sql`insert into control.dispatch_functions (name, code) values ('fx', 'export default () => {}')`;
  const run = await app.request("/api/admin/functions/fx/test", {
    method: "POST",
    headers,
    body: JSON.stringify({ event: { op: "insert", table_name: "t", new: { id: 7 } } }),
  });
  assert.equal(run.status, 201);
  const ev = await run.json();
  assert.equal(ev.source, "manual");
  assert.deepEqual(ev.new_row, { id: 7 });
  const one = await app.request(`/api/admin/events/${ev.id}`, { headers });
  assert.equal((await one.json()).state, "pending");
  await db.sql`update control.dispatch_events set state = 'dead'`;
  await db.sql`insert into control.dispatch_events (function_name, state) values ('fx', 'dead')`;
  const [waiting] = await db
    .sql`insert into control.dispatch_events (function_name, last_error, attempts, run_at)
                                 values ('fx', 'Error: later', 1, now() + interval '1 hour') returning id`;
  const retry = await app.request("/api/admin/events/retry", {
    method: "POST",
    headers,
    body: JSON.stringify({ function: "fx" }),
  });
  assert.deepEqual(await retry.json(), { retried: 2 });
  const failed = await app.request("/api/admin/events/retry", {
    method: "POST",
    headers,
    body: JSON.stringify({ failed: true }),
  });
  assert.deepEqual(await failed.json(), { retried: 1 });
  const [now] = await db
    .sql`select run_at <= now() as due from control.dispatch_events where id = ${waiting.id}`;
  assert.equal(now.due, true);
  const off = await app.request("/api/admin/functions/fx", {
    method: "PATCH",
    headers,
    body: JSON.stringify({ enabled: false }),
  });
  assert.equal((await off.json()).enabled, false);
});

Deno.test("audit details hide secrets and cut long strings", () => {
  const d = redactDetails({ password: "p", nested: { api_token: "t", ok: "x".repeat(30_000) } }) as {
    password: string;
    nested: { api_token: string; ok: string };
  };
  assert.equal(d.password, "[redacted]");
  assert.equal(d.nested.api_token, "[redacted]");
  assert.ok(d.nested.ok.length < 20_100);
});

Deno.test("parseCompileError() finds the line and column of the sandbox compiler's message", () => {
  const p = parseCompileError(
    "Cannot save function as its code does not compile: SyntaxError: Expression expected\n  |\n2 |   const x = ;\n" +
      "  |             ~\n    at data:application/typescript;base64,AAAA:2:13",
  );
  assert.equal(p.message, "SyntaxError: Expression expected");
  assert.equal(p.line, 2);
  assert.equal(p.col, 13);
  assert.match(p.snippet ?? "", /const x = ;/);
});

Deno.test("console:admin creates an admin from stdin and --disable locks it out with its sessions", async () => {
  await using db = await createTestDatabase();
  const cli = new URL("../../console/admin_cli.ts", import.meta.url).pathname;
  const run = async (args: string[], input = "") => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli, ...args],
      env: { DATABASE_URL: db.url },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(input));
    await w.close();
    const out = await child.output();
    return {
      code: out.code,
      text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
    };
  };
  const short = await run(["alice"], "short\n");
  assert.equal(short.code, 1);
  assert.match(short.text, /shorter than 8/);
  const made = await run(["alice"], "a long password\n");
  assert.equal(made.code, 0, made.text);
  const app = createApp({ sql: db.sql });
  const { res, cookie } = await login(app, "a long password", "http://localhost", "alice");
  assert.equal(res.status, 303);
  const disabled = await run(["alice", "--disable"]);
  assert.equal(disabled.code, 0, disabled.text);
  const after = await app.request("/console", { headers: { cookie, accept: "text/html" } });
  assert.equal(after.status, 303, "a disabled admin's session no longer opens the console");
});

Deno.test("with the database unreachable a console page says so with a 503 page, not a stack trace", async () => {
  const dead = connectPostgres("postgres://u:p@127.0.0.1:1/x", { max: 1, connectTimeout: 1 });
  try {
    const app = createApp({ sql: dead });
    const res = await app.request("/console/events", {
      headers: { accept: "text/html", cookie: `wharf_session=${"x".repeat(43)}` },
    });
    assert.equal(res.status, 503);
    const html = await res.text();
    assert.match(html, /data-testid="error-page"/);
    assert.match(html, /Cannot reach the database/);
    const login = await app.request("/console/login");
    assert.equal(login.status, 200, "the login form itself needs no database");
    await login.body?.cancel();
  } finally {
    await dead.end();
  }
});

Deno.test("the event log pages back with an Older link and filters by state, function and table", async () => {
  await using db = await createTestDatabase();
  const app = await setup(db);
  const { cookie } = await login(app);
  await db.sql`insert into control.dispatch_functions (name, code) values ('fx', 'export default () => {}'),
                 ('gx', 'export default () => {}')`;
  await db.sql`insert into control.dispatch_events (function_name, state, table_schema, table_name, op)
               select case when i % 2 = 0 then 'fx' else 'gx' end, case when i < 4 then 'done' else 'dead' end,
                      'public', case when i = 5 then 'special' else 'items' end, 'insert'
                 from generate_series(1, 6) i`;
  const html =
    await (await app.request("/console/events?limit=2", { headers: { cookie, accept: "text/html" } }))
      .text();
  assert.deepEqual([...html.matchAll(/data-event="(\d+)"/g)].map((m) => m[1]), ["6", "5"]);
  assert.match(html, /href="\/console\/events\?limit=2&amp;before=5"/);
  const live = async (q: string) =>
    (await (await app.request(`/console/live/events?${q}`, { headers: { cookie } })).json() as {
      id: string;
    }[])
      .map((e) => e.id);
  assert.deepEqual(await live("limit=2&before=5"), ["4", "3"]);
  assert.deepEqual(await live("state=dead&function=fx"), ["6", "4"]);
  assert.deepEqual(await live("table=public.special"), ["5"]);
  assert.deepEqual(await live("state=bogus&limit=2"), ["6", "5"], "an unknown filter value is dropped");
});
