/**
 * The local S3-compatible server (s3rver, real S3 HTTP protocol) as a process of its own, so the stack
 * can stop it by pid like every other service.
 *
 * Usage: `deno run -A shared/stack/s3_server.ts --port 9000 --dir ./s3 [--bucket media]…`
 * Credentials are s3rver's fixed pair (access key `S3RVER`, secret `S3RVER`): it is a local stand-in.
 */
import { parseArgs } from "node:util";
import S3rver from "s3rver";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    dir: { type: "string" },
    bucket: { type: "string", multiple: true, default: [] },
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
const addr = await server.run();
console.log(JSON.stringify({ ready: true, port: addr.port }));
const stop = async () => {
  await server.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
