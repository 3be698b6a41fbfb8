/**
 * wharf's local S3 server (S3's real HTTP protocol, Signature V4 checked) as a process of its own, so
 * the stack can stop it by pid like every other service. Built on `Deno.serve` with bodies streamed
 * between socket and file: a general-purpose emulator cost several times its CPU per request, on the
 * same cores as the workloads being measured. See s3_handler.ts (protocol), s3_store.ts (files),
 * s3_sigv4.ts (signatures), s3_events.ts (event log).
 *
 * Usage: `deno run -A shared/stack/s3_server.ts --port 9000 --dir ./s3 [--bucket media]… [--events-dir D]`
 * It accepts only {@linkcode LOCAL_S3_CREDENTIALS} (a fixed local pair, never a real secret).
 *
 * Object events (created, removed) go to an event log served on `/_wharf/events` (see s3_events.ts): the
 * local stand-in for S3 → SQS notifications. The log lives beside `--dir` (or in `--events-dir`).
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { S3EventLog } from "./s3_events.ts";
import { createS3Handler } from "./s3_handler.ts";
import { SigV4Verifier } from "./s3_sigv4.ts";
import { S3Store } from "./s3_store.ts";
import { LOCAL_S3_CREDENTIALS } from "./s3_credentials.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    dir: { type: "string" },
    bucket: { type: "string", multiple: true, default: [] },
    "events-dir": { type: "string" },
    region: { type: "string", default: "us-east-1" },
  },
});
if (!values.port || !values.dir) {
  console.error("Usage: s3_server.ts --port N --dir PATH [--bucket NAME]… [--events-dir PATH]");
  Deno.exit(2);
}
const store = await S3Store.open(values.dir);
for (const b of values.bucket as string[]) store.createBucket(b);
const events = await S3EventLog.open(values["events-dir"] ?? dirname(values.dir));
const handler = createS3Handler({
  store,
  events,
  region: values.region as string,
  verifier: new SigV4Verifier({ [LOCAL_S3_CREDENTIALS.accessKeyId]: LOCAL_S3_CREDENTIALS.secretAccessKey }),
});
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: Number(values.port),
  onListen: ({ port }) => console.log(JSON.stringify({ ready: true, port })),
}, handler);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  events.wakeAll(); // long polls answer at once, so the shutdown does not wait for them
  await server.shutdown();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
