/**
 * The peer of `bench:s3`: s3rver (the general-purpose S3 emulator on Koa that wharf's local server
 * replaced) in a process of its own, with the same arguments and ready line as shared/stack/s3_server.ts,
 * so the bench measures both the same way. Its credentials are s3rver's fixed pair (`S3RVER`/`S3RVER`).
 *
 * Usage: `deno run -A bench/_s3rver.ts --port N --dir PATH [--bucket NAME]…`
 */
import { parseArgs } from "node:util";
import S3rver from "s3rver";

/** s3rver's fixed credentials. */
export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } as const;

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      dir: { type: "string" },
      bucket: { type: "string", multiple: true, default: [] },
    },
  });
  if (!values.port || !values.dir) {
    console.error("Usage: _s3rver.ts --port N --dir PATH [--bucket NAME]…");
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
    // s3rver's close waits for idle keep-alive connections: give it a moment, not the stop's whole grace.
    await Promise.race([server.close(), new Promise((r) => setTimeout(r, 500))]);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
