/**
 * The image-feed API as one Hono app mounted at `/api`: users, feeds, thumbnails, and the OpenAPI
 * document. `FEED_SERVE` picks the parts when users and feeds run as separate services behind the
 * gateway.
 */
import { Hono } from "hono";
import { feedsRoutes } from "../routes/api/feeds.ts";
import { openApiRoutes } from "../routes/api/openapi.ts";
import { usersRoutes } from "../routes/api/users.ts";
import type { FeedDeps } from "./deps.ts";

/** Builds the routes under `/api` for the parts `deps.cfg.FEED_SERVE` names. */
export function feedApi(deps: FeedDeps): Hono {
  const serve = deps.cfg.FEED_SERVE;
  const api = new Hono();
  api.route("/", openApiRoutes());
  if (serve === "all" || serve === "users") api.route("/users", usersRoutes(deps));
  if (serve === "all" || serve === "feeds") api.route("/", feedsRoutes(deps));
  return api;
}
