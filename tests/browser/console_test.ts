/**
 * The islands pipeline in a real browser: the server renders the page, the bundle hydrates the island,
 * a click reaches the server and the island shows the answer.
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { createApp } from "../../web/app.tsx";
import { buildIslands } from "../../web/build.ts";

/** Launch options for Debian's Chromium, headless, with no background traffic. */
export const CHROMIUM = {
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
};

Deno.test("the console's island hydrates in Chromium and reacts to a click", async () => {
  await buildIslands();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, createApp().fetch);
  const browser = await chromium.launch(CHROMIUM);
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${server.addr.port}/`);
    await page.waitForSelector('[data-island="HealthCheck"][data-hydrated="true"]', { timeout: 15_000 });
    assert.equal(await page.textContent('[data-testid="health-result"]'), "not checked yet");
    await page.click('[data-testid="health-check"]');
    await page.waitForFunction(
      () => document.querySelector('[data-testid="health-result"]')?.textContent?.startsWith("ok"),
      undefined,
      { timeout: 10_000 },
    );
    assert.match((await page.textContent('[data-testid="health-result"]')) ?? "", /^ok · up \d+ s$/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.shutdown();
  }
});
