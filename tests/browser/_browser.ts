/**
 * What the browser tests share: how Debian's Chromium is launched, screenshots for `docs/`, and a
 * polling wait.
 */
import { fileURLToPath as fromFileUrl } from "node:url";
import type { Page } from "playwright-core";
import { waitFor as sharedWaitFor } from "../../shared/testing/mod.ts";

/** Launch options for Debian's Chromium, headless, with no background traffic. */
export const CHROMIUM = {
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
};

const DOCS = fromFileUrl(new URL("../../docs/", import.meta.url));
const SHOTS = Deno.env.get("WHARF_SCREENSHOTS") === "1";

/** Saves the page as `docs/console-<name>.png` when `WHARF_SCREENSHOTS=1` (`deno task screenshots`). */
export async function shot(page: Page, name: string): Promise<void> {
  if (!SHOTS) return;
  await page.screenshot({ path: `${DOCS}console-${name}.png`, fullPage: true });
}

/** Polls `f` every 100 ms until it gives a truthy value, or fails naming `what` after `ms`. */
export function waitFor<T>(
  what: string,
  f: () => Promise<T | undefined | false>,
  ms = 30_000,
): Promise<T> {
  return sharedWaitFor(what, f, ms, 100);
}
