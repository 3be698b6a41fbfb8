/**
 * What a console page is. Every page registers itself in `pages.ts`; the navigation, the login guard,
 * the CSRF check and the HTML frame come from the console, so a page only reads its data and renders.
 */
import type { Context, Hono } from "hono";
import type { VNode } from "preact";
import type { AppEnv } from "../../app.tsx";
import type { Sql } from "../../../shared/db.ts";

/** What a page's handlers get besides the request. */
export interface PageKit {
  /** The database; throws a 503 (shown as an error page) when none is configured. */
  sql(): Sql;
  /** Renders `body` in the console frame (navigation, admin, CSRF meta, islands script). */
  render(c: Context<AppEnv>, page: { title: string; active: string; body: VNode; status?: number }): Response;
  /** The process environment, for pages that read their own settings. */
  env: Record<string, string>;
}

/** A console page: its place in the navigation and its routes. */
export interface ConsolePage {
  /** The navigation link, such as `/console/functions`. */
  href: string;
  /** The navigation label. */
  title: string;
  /**
   * Adds the page's routes to `r`, which is mounted at `/console` behind the login guard: its HTML
   * pages and the JSON endpoints its islands poll (`/console/live/...`).
   */
  routes(r: Hono<AppEnv>, kit: PageKit): void;
}
