/**
 * The local S3-compatible server (s3rver, real S3 HTTP protocol) as a process of its own, so the stack
 * can stop it by pid like every other service.
 *
 * Usage: `deno run -A shared/stack/s3_server.ts --port 9000 --dir ./s3 [--bucket media]…`
 * Credentials are s3rver's fixed pair (access key `S3RVER`, secret `S3RVER`): it is a local stand-in.
 *
 * Object events (created, removed) go to an event log served on `/_wharf/events` (see s3_events.ts): the
 * local stand-in for S3 → SQS notifications. The log lives beside `--dir` (or in `--events-dir`).
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import S3rver from "s3rver";
import { eventsMiddleware, S3EventLog, type S3EventNotification } from "./s3_events.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    dir: { type: "string" },
    bucket: { type: "string", multiple: true, default: [] },
    "events-dir": { type: "string" },
  },
});
if (!values.port || !values.dir) {
  console.error("Usage: s3_server.ts --port N --dir PATH [--bucket NAME]…");
  Deno.exit(2);
}
await Deno.mkdir(values.dir, { recursive: true });
const server = new S3rver({
  port: Number(values.port),
  address: "127.0.0.1",
  directory: values.dir,
  silent: true,
  configureBuckets: (values.bucket as string[]).map((name) => ({ name })),
});
const events = await S3EventLog.open(values["events-dir"] ?? dirname(values.dir));
server.on("event", (e: S3EventNotification) => events.append(e));
// Ahead of s3rver's own router; Koa composes the middleware list when the server starts.
(server as unknown as { middleware: unknown[] }).middleware.unshift(eventsMiddleware(events));
const addr = await server.run();
console.log(JSON.stringify({ ready: true, port: addr.port }));
const stop = async () => {
  events.wakeAll();
  await server.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
