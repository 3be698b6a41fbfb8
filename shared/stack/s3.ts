/**
 * Starts the local S3 server ({@link ./s3_server.ts}) as a child process and waits for it.
 */
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { type ManagedProcess, startProcess, tcpOpen } from "./process.ts";

/** The local server's fixed credentials (see s3_credentials.ts): a local stand-in, never a real secret. */
export { LOCAL_S3_CREDENTIALS } from "./s3_credentials.ts";

/** A running local S3 server. */
export interface LocalS3 {
  process: ManagedProcess;
  port: number;
  endpoint: string;
  stop(): Promise<void>;
}

/** Starts the local S3 server on `port`, storing objects under `dir`, creating `buckets`. */
export async function startS3(options: { dir: string; port: number; buckets?: string[] }): Promise<LocalS3> {
  await Deno.mkdir(options.dir, { recursive: true });
  const entry = fromFileUrl(new URL("./s3_server.ts", import.meta.url));
  const args = ["run", "-A", entry, "--port", String(options.port), "--dir", join(options.dir, "objects")];
  for (const b of options.buckets ?? []) args.push("--bucket", b);
  const proc = await startProcess({
    name: "s3",
    cmd: Deno.execPath(),
    args,
    output: join(options.dir, "s3.log"),
  });
  await proc.waitReady(
    "the S3 server to listen",
    () => tcpOpen(options.port),
    60_000,
    join(options.dir, "s3.log"),
  );
  return {
    process: proc,
    port: options.port,
    endpoint: `http://127.0.0.1:${options.port}`,
    stop: async () => {
      await proc.stop(10_000);
    },
  };
}
