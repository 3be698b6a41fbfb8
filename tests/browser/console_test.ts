/**
 * The console in a real browser against real data: log in, write a function (and see the compiler's
 * error inline), attach it to a table, insert a row and watch the event run on a dispatch node, test-run
 * it, read pages without JavaScript, and be refused without a session or without the CSRF token.
 *
 * With `WHARF_SCREENSHOTS=1` (`deno task screenshots`) each page is saved as `docs/console-*.png`.
 */
import assert from "node:assert/strict";
import { type Browser, chromium } from "playwright-core";
import { CHROMIUM, shot, waitFor } from "./_browser.ts";
import { createLogger } from "../../shared/log.ts";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { abortableSleep } from "../../shared/worker.ts";
import { createApp } from "../../web/app.tsx";
import { buildIslands } from "../../web/build.ts";
import { upsertAdmin } from "../../web/console/auth.ts";
import { type NodeStatus, runNode } from "../../workers/dispatch/node.ts";

const PASSWORD = "browser-test-password";

const GOOD_CODE = `export default async (event, db) => {
  await db.sql\`insert into public.order_log (event_id, item) values (\${event.id}, \${event.new.item})\`;
};
`;
const BAD_CODE = `export default async (event, db) => {
  const item = ;
};
`;

Deno.test("an operator logs in, writes a function, attaches it to a table and watches it run on a node", async () => {
  await using db = await createTestDatabase();
  const { sql } = db;
  await upsertAdmin(sql, "ops", PASSWORD);
  await sql`create table public.orders (id serial primary key, item text not null)`;
  await sql`create table public.order_log (event_id bigint primary key, item text)`;

  // A dispatch node in this process, reporting to worker_instances like the worker process does.
  const stop = new AbortController();
  const status: NodeStatus = { master: false, running: 0, done: 0, failed: 0 };
  const nodeId = `dispatch-test-${crypto.randomUUID().slice(0, 8)}`;
  const node = runNode(
    {
      sql,
      functionSql: sql,
      schema: "control",
      nodeId,
      bind: "127.0.0.1:0",
      log: createLogger("dispatch", { level: "error" }),
      leaseMs: 1_000,
      concurrency: 2,
      pollMs: 200,
      trustedKeys: [],
    },
    stop.signal,
    status,
  );
  const report = (async () => {
    while (!stop.signal.aborted) {
      await sql`
        insert into control.worker_instances (instance_id, worker, host, pid, state, healthy, status, started_at)
        values (${nodeId}, 'dispatch', ${Deno.hostname()}, ${Deno.pid}, 'running', true,
                ${sql.json({ ...status })}, now())
        on conflict (instance_id) do update set status = excluded.status, heartbeat_at = now()`;
      await abortableSleep(300, stop.signal);
    }
  })();

  await buildIslands();
  const app = createApp({ sql, adminToken: "a-long-enough-admin-token", islandsVersion: "test" });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  let browser: Browser | undefined;
  try {
    browser = await chromium.launch(CHROMIUM);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      // Refused requests (401, 403, the compile error's 400) are expected here; anything else is not.
      if (
        m.type() === "error" &&
        !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())
      ) {
        errors.push(m.text());
      }
    });

    // Without a session: the console sends the browser to the login form; the admin API refuses.
    await page.goto(`${base}/console/functions`);
    assert.equal(new URL(page.url()).pathname, "/console/login");
    const anonymous = await page.evaluate(async () => (await fetch("/api/admin/functions")).status);
    assert.equal(anonymous, 401);
    await page.fill('input[name="name"]', "ops");
    await page.fill('input[name="password"]', "not the password");
    await page.click('button[type="submit"]');
    assert.match(await page.textContent('[data-testid="login-error"]') ?? "", /Wrong name or password/);
    await shot(page, "login");
    await page.fill('input[name="password"]', PASSWORD);
    await page.click('button[type="submit"]');
    await page.waitForURL(`${base}/console/functions`);

    // A new function: the compiler's error is shown inline at its line; the fixed code saves.
    await page.click('[data-testid="new-function"]');
    await page.waitForSelector('[data-island="FunctionEditor"][data-hydrated="true"]');
    await page.fill('[data-testid="function-name"]', "record_order");
    await page.fill('[data-testid="function-code"]', BAD_CODE);
    await page.click('[data-testid="function-save"]');
    const problem = await page.waitForSelector('[data-testid="compile-error"]', { timeout: 20_000 });
    assert.match(await problem.textContent() ?? "", /Line 2, column \d+: SyntaxError: Expression expected/);
    assert.equal(await page.textContent(".gutter .err"), "2\n");
    await shot(page, "function-error");
    await page.fill('[data-testid="function-code"]', GOOD_CODE);
    await page.click('[data-testid="function-save"]');
    await page.waitForURL(`${base}/console/functions/record_order`, { timeout: 20_000 });

    // Attach it to public.orders for inserts only.
    await page.waitForSelector('[data-testid="attach-form"] button:not([disabled])');
    await page.selectOption('[data-testid="attach-form"] select[name="table"]', "public.orders");
    await page.uncheck('[data-testid="attach-form"] input[value="update"]');
    await page.uncheck('[data-testid="attach-form"] input[value="delete"]');
    await page.click('[data-testid="attach-form"] button[type="submit"]');
    await page.waitForSelector('[data-trigger="public.orders"]');
    const [trigger] =
      await sql`select ops from control.dispatch_triggers where function_name = 'record_order'`;
    assert.deepEqual(trigger.ops, ["insert"]);

    // Test-run against a sample event: the node runs it and the island shows the outcome.
    await page.fill(
      '[data-testid="test-run"] textarea',
      JSON.stringify({ op: "insert", new: { item: "sample" } }),
    );
    await page.click('[data-testid="test-run-button"]');
    await page.waitForFunction(
      () => /done/.test(document.querySelector('[data-testid="test-run-result"]')?.textContent ?? ""),
      undefined,
      { timeout: 30_000 },
    );
    await shot(page, "function");

    // The event log updates live: insert a row while it is open and watch the event finish.
    await page.goto(`${base}/console/events?function=record_order`);
    await page.waitForSelector('[data-island="EventLog"][data-hydrated="true"]');
    const before = await page.locator("[data-event]").count();
    await sql`insert into public.orders (item) values ('anchor chain')`;
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-state="done"]').length > n,
      before,
      { timeout: 30_000 },
    );
    const logged = await waitFor("the function's row", async () => {
      const rows = await sql`select item from public.order_log where item = 'anchor chain'`;
      return rows.length ? rows : undefined;
    });
    assert.equal(logged.length, 1);
    assert.match(await page.textContent('[data-testid="events"]') ?? "", /insert public\.orders/);
    await shot(page, "events");

    // With a session but without the CSRF token, a change is refused; with it, it passes.
    const noCsrf = await page.evaluate(async () =>
      (await fetch("/api/admin/functions/record_order", {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ enabled: false }),
      })).status
    );
    assert.equal(noCsrf, 403);
    const withCsrf = await page.evaluate(async () =>
      (await fetch("/api/admin/functions/record_order", {
        method: "PATCH",
        headers: {
          "content-type": "application/json",
          "x-csrf-token": document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')!.content,
        },
        body: JSON.stringify({ enabled: true }),
      })).status
    );
    assert.equal(withCsrf, 200);
    // Another browser context has no session: refused.
    const other = await browser.newContext();
    const refused = await other.request.patch(`${base}/api/admin/functions/record_order`, {
      data: { enabled: false },
    });
    assert.equal(refused.status(), 401);
    await other.close();

    // A dead event is retried from its row in the event log, and then runs.
    await sql`create table public.stock (ok boolean not null)`;
    await sql`insert into public.stock values (false)`;
    await sql`insert into control.dispatch_functions (name, code, max_attempts) values ('check_stock', ${`
      export default async (event, db) => {
        const [s] = await db.sql\`select ok from public.stock\`;
        if (!s.ok) throw new Error("out of stock");
      };`}, 1)`;
    const [dead] =
      await sql`insert into control.dispatch_events (function_name, source) values ('check_stock', 'manual')
                             returning id`;
    await sql`select pg_notify('wharf_dispatch', '')`;
    await waitFor("the event to die", async () => {
      const [e] = await sql`select state from control.dispatch_events where id = ${dead.id}`;
      return e.state === "dead";
    });
    await page.goto(`${base}/console/events?state=dead`);
    assert.match(await page.textContent(`[data-event="${dead.id}"]`) ?? "", /out of stock/);
    await sql`update public.stock set ok = true`;
    // The button reloads the page when the retry is accepted: wait for that, so that it cannot cut
    // short the next navigation.
    await Promise.all([
      page.waitForEvent("load"),
      page.click(`[data-testid="retry-${dead.id}"]:not([disabled])`),
    ]);
    await waitFor("the retried event to run", async () => {
      const [e] = await sql`select state from control.dispatch_events where id = ${dead.id}`;
      return e.state === "done";
    });

    // The overview shows the node's health and throughput; the chart is drawn.
    await page.goto(`${base}/console`);
    await page.waitForSelector('[data-worker="dispatch"][data-health="ok"]');
    await page.waitForSelector('[data-testid="throughput-chart"] canvas');
    assert.ok(Number(await page.getAttribute('[data-testid="throughput-chart"]', "data-points")) >= 30);
    await shot(page, "overview");

    await page.goto(`${base}/console/functions`);
    await shot(page, "functions");
    await page.goto(`${base}/console/schedules`);
    await page.waitForSelector('[data-role="master"]');
    await shot(page, "schedules");
    await page.goto(`${base}/console/audit`);
    const audit = await page.textContent('[data-testid="audit"]') ?? "";
    assert.match(audit, /PUT \/api\/admin\/functions\/:name/);
    assert.match(audit, /POST \/api\/admin\/triggers/);
    await shot(page, "audit");

    // On a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/console/events`);
    await shot(page, "phone");
    assert.deepEqual(errors, []);

    // Log out: the session is gone.
    await page.click('[data-testid="logout"]');
    await page.waitForURL(`${base}/console/login`);
    await page.goto(`${base}/console/events`);
    assert.equal(new URL(page.url()).pathname, "/console/login");
    await context.close();

    // Without JavaScript: the login form and the read-only pages still work.
    const noJs = await browser.newContext({ javaScriptEnabled: false });
    const plain = await noJs.newPage();
    await plain.goto(`${base}/console/login`);
    await plain.fill('input[name="name"]', "ops");
    await plain.fill('input[name="password"]', PASSWORD);
    await plain.click('button[type="submit"]');
    await plain.goto(`${base}/console/events?state=done`);
    assert.ok(await plain.locator('[data-state="done"]').count() >= 2);
    assert.equal(
      await plain.locator('[data-state="pending"]').count(),
      0,
      "the filter applies without a script",
    );
    await noJs.close();
  } finally {
    await browser?.close();
    await server.shutdown();
    stop.abort();
    await node;
    await report;
  }
});
