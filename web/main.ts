/**
 * The web process: the image-feed REST API and the operator console on one port.
 *
 * Env: `WEB_HOST` (default 127.0.0.1), `WEB_PORT` (default 8000), `DATABASE_URL` (optional until the
 * APIs that need it are configured). Stops gracefully on SIGTERM/SIGINT: no new connections, in-flight
 * requests finish.
 */
import { z } from "zod";
import { loadConfig, portVar, urlVar } from "../shared/config.ts";
import { connectPostgres } from "../shared/db.ts";
import { createLogger } from "../shared/log.ts";
import { createApp } from "./app.tsx";
import { buildIslands, BUNDLE_PATH } from "./build.ts";

const Config = z.object({
  WEB_HOST: z.string().default("127.0.0.1"),
  WEB_PORT: portVar.default(8000),
  DATABASE_URL: urlVar(["postgres:", "postgresql:"]).optional(),
  WHARF_ADMIN_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
});

const log = createLogger("web");
let config: z.infer<typeof Config>;
try {
  config = loadConfig(Config);
} catch (e) {
  log.error("cannot start", { error: (e as Error).message });
  Deno.exit(2);
}
/**
 * A process that may run `deno bundle` and write beside the bundle (`deno task dev`, `deno task web`)
 * rebuilds a stale islands bundle; a compiled web has neither permission and serves the bundle that
 * `deno task compile` built and embedded.
 */
async function mayBuildIslands(): Promise<boolean> {
  const run = await Deno.permissions.query({ name: "run" });
  const write = await Deno.permissions.query({ name: "write", path: BUNDLE_PATH });
  return run.state === "granted" && write.state === "granted";
}
const bundle = (await mayBuildIslands()) ? await buildIslands() : BUNDLE_PATH;
let bundleVersion: string | undefined;
try {
  bundleVersion = (await Deno.stat(bundle)).mtime?.getTime().toString(36);
} catch {
  log.error("cannot start", { error: "the islands bundle is missing: run `deno task build` first" });
  Deno.exit(2);
}
const sql = config.DATABASE_URL
  ? connectPostgres(config.DATABASE_URL, { applicationName: "wharf-web" })
  : undefined;
const app = createApp({
  sql,
  log,
  islandsVersion: bundleVersion,
  adminToken: config.WHARF_ADMIN_TOKEN,
  env: Deno.env.toObject(),
});
const controller = new AbortController();
const server = Deno.serve({
  hostname: config.WEB_HOST,
  port: config.WEB_PORT,
  signal: controller.signal,
  onListen: ({ hostname, port }) => log.info("listening", { url: `http://${hostname}:${port}/` }),
}, app.fetch);

const stop = (signal: string) => () => {
  log.info("stopping", { signal });
  controller.abort();
};
Deno.addSignalListener("SIGTERM", stop("SIGTERM"));
Deno.addSignalListener("SIGINT", stop("SIGINT"));
await server.finished;
await sql?.end({ timeout: 5 });
log.info("stopped");
