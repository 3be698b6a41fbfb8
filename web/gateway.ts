/**
 * The optional front door when users and feeds run as separate services (`FEED_SERVE=users` and
 * `FEED_SERVE=feeds` on two web processes): one address for clients, `/api/users/*` to the users service,
 * everything else under `/api` to the feeds service. Bodies stream through both ways; redirects (the
 * thumbnail's signed URL) go back to the client untouched; hop-by-hop headers are dropped and
 * `X-Forwarded-*` plus the request id are added. By default the feed API runs inside the one web process
 * and no gateway is needed.
 *
 * Usage: `deno run -A web/gateway.ts` with `GATEWAY_UPSTREAM_USERS`, `GATEWAY_UPSTREAM_FEEDS`, `GATEWAY_PORT`
 * (default 8080), `GATEWAY_HOST` (default 0.0.0.0).
 */
import { type Context, Hono } from "hono";
import { getConnInfo } from "hono/deno";
import { z } from "zod";
import { loadConfig, portVar, urlVar } from "../shared/config.ts";
import { errorResponseBody, WharfError } from "../shared/errors.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { requestId } from "./middleware/request_id.ts";

/** The gateway's settings. */
export const GatewayConfig = z.object({
  // A front door listens on every interface unless told otherwise.
  GATEWAY_HOST: z.string().default("0.0.0.0"),
  GATEWAY_PORT: portVar.default(8080),
  GATEWAY_UPSTREAM_USERS: urlVar(["http:", "https:"]),
  GATEWAY_UPSTREAM_FEEDS: urlVar(["http:", "https:"]),
  GATEWAY_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
});

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
];

function stripHopByHop(h: Headers): Headers {
  const out = new Headers(h);
  for (const name of (h.get("connection") ?? "").split(",")) if (name.trim()) out.delete(name.trim());
  for (const name of HOP_BY_HOP) out.delete(name);
  return out;
}

/** Options for {@linkcode createGateway}. */
export interface GatewayOptions {
  usersUrl: string;
  feedsUrl: string;
  timeoutMs?: number;
  log?: Logger;
}

/** Builds the gateway app (no listening, so tests drive it with `app.request`). */
export function createGateway(o: GatewayOptions): Hono<{ Variables: { requestId: string } }> {
  const log = o.log ?? createLogger("gateway");
  const app = new Hono<{ Variables: { requestId: string } }>();
  app.use(requestId());
  app.onError((err, c) => {
    const { status, body } = errorResponseBody(err, c.get("requestId"));
    return c.json(body, status as 500);
  });

  const forward = (upstream: string) => async (c: Context<{ Variables: { requestId: string } }>) => {
    const incoming = new URL(c.req.url);
    const target = new URL(incoming.pathname + incoming.search, upstream);
    const headers = stripHopByHop(c.req.raw.headers);
    let peer = "unknown";
    try {
      peer = getConnInfo(c).remote.address ?? peer;
    } catch { /* in-process requests have no socket */ }
    const prior = c.req.header("x-forwarded-for");
    headers.set("x-forwarded-for", prior ? `${prior}, ${peer}` : peer);
    headers.set("x-forwarded-proto", incoming.protocol.replace(":", ""));
    headers.set("x-forwarded-host", incoming.host);
    headers.set("x-request-id", c.get("requestId"));
    const hasBody = !["GET", "HEAD"].includes(c.req.method);
    let res: Response;
    try {
      res = await fetch(target, {
        method: c.req.method,
        headers,
        body: hasBody ? c.req.raw.body : undefined,
        redirect: "manual",
        signal: AbortSignal.timeout(o.timeoutMs ?? 30_000),
        ...(hasBody ? { duplex: "half" } : {}),
      } as RequestInit);
    } catch (e) {
      log.warn("upstream unreachable", { upstream: target.origin, error: (e as Error).message });
      throw new WharfError(502, "The service behind the gateway did not answer", { code: "bad_gateway" });
    }
    return new Response(res.body, { status: res.status, headers: stripHopByHop(res.headers) });
  };

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.all("/api/users", forward(o.usersUrl));
  app.all("/api/users/*", forward(o.usersUrl));
  app.all("/api/*", forward(o.feedsUrl));
  app.notFound((c) => {
    const { status, body } = errorResponseBody(
      new WharfError(404, `No route for ${c.req.method} ${c.req.path}`),
    );
    return c.json(body, status as 404);
  });
  return app;
}

if (import.meta.main) {
  const log = createLogger("gateway");
  let cfg: z.infer<typeof GatewayConfig>;
  try {
    cfg = loadConfig(GatewayConfig);
  } catch (e) {
    log.error("cannot start", { error: (e as Error).message });
    Deno.exit(2);
  }
  const app = createGateway({
    usersUrl: cfg.GATEWAY_UPSTREAM_USERS,
    feedsUrl: cfg.GATEWAY_UPSTREAM_FEEDS,
    timeoutMs: cfg.GATEWAY_TIMEOUT_MS,
    log,
  });
  const controller = new AbortController();
  const server = Deno.serve({
    hostname: cfg.GATEWAY_HOST,
    port: cfg.GATEWAY_PORT,
    signal: controller.signal,
    onListen: ({ hostname, port }) => log.info("listening", { url: `http://${hostname}:${port}/` }),
  }, app.fetch);
  for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => controller.abort());
  await server.finished;
}
