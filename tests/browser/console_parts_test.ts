/**
 * The parts' console pages in a real browser against real data: a replicate pipeline runs in this
 * process (its own status code writes the lag history the chart draws), the discovery worker's status
 * code writes cluster members and a failover, a hydrate mapping is validated and created through the
 * form, and a feed is moderated.
 *
 * With `WHARF_SCREENSHOTS=1` (`deno task screenshots`) each page is saved as `docs/console-*.png`.
 */
import assert from "node:assert/strict";
import { type Browser, chromium } from "playwright-core";
import { CHROMIUM, shot, waitFor } from "./_browser.ts";
import { writeSnapshot } from "../../workers/discovery/status.ts";
import { createApp } from "../../web/app.tsx";
import { buildIslands } from "../../web/build.ts";
import { upsertAdmin } from "../../web/console/auth.ts";
import { fixture } from "../replicate/_helpers.ts";

const PASSWORD = "browser-test-password";

Deno.test("an operator watches replication lag drawn live, sees the cluster, edits a mapping and moderates the feed", async () => {
  await using fx = await fixture(async (sql) => {
    await sql`create table public.orders (id int primary key, item text not null)`;
    await sql`insert into public.orders select g, 'item ' || g from generate_series(1, 500) g`;
  }, ["public.orders"]);
  const sql = fx.source.sql;
  await upsertAdmin(sql, "ops", PASSWORD);
  const pipeline = fx.start();

  // The discovery worker's status code: a three-member cluster, then a failover from pg1 to pg2.
  const t0 = Date.now() - 10_000;
  await writeSnapshot(sql, "main", [
    {
      name: "pg1",
      role: "leader",
      state: "running",
      host: "10.0.0.1",
      port: 5432,
      timeline: 1,
      lsn: "0/3000060",
    },
    { name: "pg2", role: "replica", state: "streaming", host: "10.0.0.2", port: 5432, timeline: 1, lag: 0 },
    { name: "pg3", role: "replica", state: "streaming", host: "10.0.0.3", port: 5432, timeline: 1, lag: 0 },
  ], new Date(t0));
  await writeSnapshot(sql, "main", [
    {
      name: "pg1",
      role: "replica",
      state: "streaming",
      host: "10.0.0.1",
      port: 5432,
      timeline: 2,
      lag: 2048,
    },
    {
      name: "pg2",
      role: "leader",
      state: "running",
      host: "10.0.0.2",
      port: 5432,
      timeline: 2,
      lsn: "0/3000148",
    },
    { name: "pg3", role: "replica", state: "streaming", host: "10.0.0.3", port: 5432, timeline: 2, lag: 0 },
  ], new Date(t0 + 5_000));

  // Feed users and posts.
  const [alice] = await sql`insert into app.users (email, username, password)
                             values ('alice@example.com', 'alice', 'x') returning id::text`;
  const [bob] = await sql`insert into app.users (email, username, password)
                           values ('bob@example.com', 'bob', 'x') returning id::text`;
  const [spam] = await sql`insert into app.feeds (user_id, caption, media_key, content_type, size_bytes)
                            values (${bob.id}, 'buy now!!!', 'm/spam', 'image/png', 1200) returning id::text`;
  await sql`insert into app.feeds (user_id, caption, media_key, content_type, size_bytes, thumbnail_status)
            values (${alice.id}, 'harbour at dusk', 'm/dusk', 'image/jpeg', 2400000, 'ready')`;

  await buildIslands();
  const app = createApp({ sql, islandsVersion: "test" });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  let browser: Browser | undefined;
  try {
    // The pipeline has copied the table and is writing lag points.
    await waitFor("the snapshot to be applied", async () => {
      const [t] = await sql`select rows_applied + snapshot_rows as n from control.replicate_tables`;
      return t && Number(t.n) >= 500;
    });
    // Changes after the snapshot stream through batches.
    await sql`insert into public.orders select g, 'item ' || g from generate_series(501, 800) g`;
    await waitFor("the streamed rows to be applied", async () => {
      const [t] = await sql`select rows_applied from control.replicate_tables`;
      return Number(t.rows_applied) >= 300;
    });
    await waitFor("lag history", async () => {
      const [h] = await sql`select count(*)::int as n from control.replicate_lag_history`;
      return h.n >= 3;
    });

    browser = await chromium.launch(CHROMIUM);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (
        m.type() === "error" &&
        !/^Failed to load resource: the server responded with a status of (4\d\d|503)/.test(m.text())
      ) {
        errors.push(m.text());
      }
    });
    page.on("dialog", (d) => d.accept());
    await page.goto(`${base}/console/login?next=/console/replication`);
    await page.fill('input[name="name"]', "ops");
    await page.fill('input[name="password"]', PASSWORD);
    await page.click('button[type="submit"]');
    await page.waitForURL(`${base}/console/replication`);

    // Replication: the chart draws the worker's lag points and gains new ones without a reload.
    const chart = `[data-testid="lag-chart-${fx.pipeline}"]`;
    await page.waitForSelector(`${chart} canvas`);
    const first = Number(await page.getAttribute(chart, "data-points"));
    assert.ok(first >= 3, `the chart starts with the lag history (${first} points)`);
    await page.waitForFunction(
      ([sel, n]) =>
        Number(document.querySelector(sel as string)?.getAttribute("data-points")) > (n as number),
      [chart, first],
      { timeout: 20_000 },
    );
    assert.match(
      await page.textContent(`[data-testid="tables-${fx.pipeline}"]`) ?? "",
      /public\.orders\s*300/,
    );
    assert.match(
      await page.getAttribute(`[data-pipeline="${fx.pipeline}"]`, "data-state") ?? "",
      /streaming/,
    );
    await shot(page, "replication");
    // Pause: the flag reaches the worker, which reports itself paused; resume again.
    // The button reloads the page once the change is accepted: a later navigation must not cut that short.
    await Promise.all([
      page.waitForEvent("load"),
      page.click(`[data-testid="pause-${fx.pipeline}"]:not([disabled])`),
    ]);
    await waitFor("the pipeline to pause", async () => {
      const [p] = await sql`select state from control.replicate_pipelines`;
      return p.state === "paused";
    });
    await page.goto(`${base}/console/replication`);
    // The button reloads the page once the change is accepted: a later navigation must not cut that short.
    await Promise.all([
      page.waitForEvent("load"),
      page.click(`[data-testid="resume-${fx.pipeline}"]:not([disabled])`),
    ]);
    await waitFor("the pipeline to resume", async () => {
      const [p] = await sql`select paused, state from control.replicate_pipelines`;
      return !p.paused && p.state !== "paused";
    });

    // Cluster: members from the discovery status rows, the failover in the history, switchover confirmation.
    await page.goto(`${base}/console/cluster`);
    await page.waitForSelector('[data-member="pg2"][data-role="leader"]');
    assert.equal(await page.locator('[data-testid="members-main"] [data-member]').count(), 3);
    assert.match(await page.textContent('[data-testid="cluster-history"]') ?? "", /leader pg1 → pg2/);
    await shot(page, "cluster");
    await page.click('[data-testid="switchover-pg3"]');
    await page.waitForSelector('[data-testid="switchover-confirm"]');
    assert.match(
      await page.textContent('[data-testid="switchover-confirm"]') ?? "",
      /pg2.*hands over to.*pg3/s,
    );
    await shot(page, "switchover");
    // No Patroni REST credentials are configured here: the API's refusal shows next to the button.
    await page.click('[data-testid="confirm-switchover"]:not([disabled])');
    assert.match(await (await page.waitForSelector(".api-action .error")).textContent() ?? "", /credentials/);

    // Hydration: the server's 400 shows inline; the fixed mapping is created.
    await page.goto(`${base}/console/hydration`);
    await page.waitForSelector('[data-island="MappingForm"][data-hydrated="true"]');
    const form = '[data-testid="new-mapping"]';
    await page.fill(`${form} input[name="name"]`, "order_items");
    await page.fill(`${form} input[name="table"]`, "public.orders");
    await page.fill(`${form} input[name="key_template"]`, "order:{id}:{colour}");
    await page.click(`${form} [data-testid="validate-mapping"]`);
    assert.match(
      await (await page.waitForSelector('[data-testid="mapping-error"]')).textContent() ?? "",
      /no column colour/,
    );
    await shot(page, "hydration-error");
    await page.fill(`${form} input[name="key_template"]`, "order:{id}");
    await page.click(`${form} [data-testid="validate-mapping"]`);
    assert.match(
      await (await page.waitForSelector('[data-testid="mapping-ok"]')).textContent() ?? "",
      /id, item/,
    );
    await page.click(`${form} [data-testid="save-mapping"]`);
    await page.waitForURL(`${base}/console/hydration/order_items`);
    // The button reloads the page once the change is accepted: a later navigation must not cut that short.
    await Promise.all([
      page.waitForEvent("load"),
      page.click('[data-testid="resync-order_items"]:not([disabled])'),
    ]);
    await waitFor("the resync request", async () => {
      const [m] =
        await sql`select resync_requested_at from control.hydrate_mappings where name = 'order_items'`;
      return m?.resync_requested_at;
    });
    await sql`insert into control.hydrate_stats (mapping, last_sync_started_at, last_sync_finished_at,
                last_sync_duration_ms, last_sync_rows, last_sync_rows_per_s, last_sync_keys_written,
                last_sync_keys_removed, changes_applied, freshness_lag_ms)
              values ('order_items', now(), now(), 35, 500, 14285, 500, 0, 3, 4)`;
    await page.goto(`${base}/console/hydration`);
    await page.waitForSelector('[data-mapping="order_items"]');
    await shot(page, "hydration");

    // Feed: delete the spam post, disable its author.
    await page.goto(`${base}/console/feed`);
    await page.click(`[data-testid="delete-feed-${spam.id}"]:not([disabled])`);
    await page.waitForSelector(`[data-feed="${spam.id}"]`, { state: "detached" });
    assert.equal((await sql`select count(*)::int as n from app.feeds where id = ${spam.id}`)[0].n, 0);
    await page.click('[data-testid="disable-bob"]:not([disabled])');
    await page.waitForSelector('[data-user="bob"][data-disabled="true"]');
    assert.ok((await sql`select disabled_at from app.users where username = 'bob'`)[0].disabled_at);
    await shot(page, "feed");
    await page.goto(`${base}/console/audit`);
    const audit = await page.textContent('[data-testid="audit"]') ?? "";
    assert.match(audit, /DELETE \/api\/admin\/feed\/feeds\/:id/);
    assert.match(audit, /POST \/api\/admin\/feed\/users\/:id\/disable/);
    assert.match(audit, /POST \/api\/admin\/cluster\/switchover/);

    // On a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/console/replication`);
    await page.waitForSelector(`${chart} canvas`);
    await shot(page, "phone-replication");
    assert.deepEqual(errors, []);
    await context.close();

    // Without JavaScript the pages read: the lag figures and the members are in the HTML.
    const noJs = await browser.newContext({ javaScriptEnabled: false });
    const plain = await noJs.newPage();
    await plain.goto(`${base}/console/login`);
    await plain.fill('input[name="name"]', "ops");
    await plain.fill('input[name="password"]', PASSWORD);
    await plain.click('button[type="submit"]');
    await plain.goto(`${base}/console/replication`);
    assert.match(await plain.textContent(chart) ?? "", /latest: bytes/);
    await plain.goto(`${base}/console/cluster`);
    assert.equal(await plain.locator("[data-member]").count(), 3);
    await plain.goto(`${base}/console/feed`);
    assert.equal(await plain.locator('[data-user="bob"][data-disabled="true"]').count(), 1);
    await noJs.close();
  } finally {
    await browser?.close();
    await server.shutdown();
    await pipeline.stop();
  }
});
