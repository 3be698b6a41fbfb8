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

/**
 * glibc's malloc settings for the server: a GET sends an object from one buffer of its size, and glibc by
 * default maps each multi-MiB buffer afresh and returns it to the kernel when freed, so every GET of a 3.4
 * MiB photo faulted in and zeroed about 850 new pages (a sixth of the server's CPU in `bench:thumbs`, about
 * 2.5 ms per photo). With buffers up to 32 MiB taken from the heap and up to 128 MiB of freed heap kept,
 * the next GET reuses the memory. Settings the caller already has come after these, so they win.
 */
function mallocTunables(): string {
  const own = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728";
  const given = Deno.env.get("GLIBC_TUNABLES");
  return given ? `${own}:${given}` : own;
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
    env: { GLIBC_TUNABLES: mallocTunables() },
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
