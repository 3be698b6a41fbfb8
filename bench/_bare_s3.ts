/**
 * The floor of `bench:s3`: a bare `Deno.serve` with no S3 protocol at all (no signature check, no
 * hashing, no metadata, no atomic rename): a GET streams one file (`FsFile.readable`), a PUT streams its
 * body into a file. It shows what part of the local S3 server's cost is HTTP and disk, and what part is
 * S3. Not a server to use: it answers anything to anyone.
 *
 * Usage: `deno run -A bench/_bare_s3.ts --port N --dir PATH`
 */
import { parseArgs } from "node:util";
import { join } from "node:path";

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: "string" }, dir: { type: "string" } } });
  if (!values.port || !values.dir) {
    console.error("Usage: _bare_s3.ts --port N --dir PATH");
    Deno.exit(2);
  }
  const dir = values.dir;
  await Deno.mkdir(dir, { recursive: true });
  let n = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: Number(values.port),
    onListen: ({ port }) => console.log(JSON.stringify({ ready: true, port })),
  }, async (req) => {
    const name = join(dir, encodeURIComponent(new URL(req.url).pathname));
    if (req.method === "PUT") {
      const tmp = join(dir, `.tmp-${n++}`);
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
      await req.body?.pipeTo(file.writable);
      await Deno.rename(tmp, name);
      return new Response(null, { headers: { etag: '"0"' } });
    }
    const file = await Deno.open(name);
    const { size } = await file.stat();
    return new Response(file.readable, { headers: { "content-length": String(size) } });
  });
  const stop = async () => {
    await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
