/**
 * Builds the browser bundle of the console's islands with `deno bundle`, the way Fresh ships only the
 * interactive parts of a page. The bundle is rebuilt when any source under `web/islands/`,
 * `web/components/` or `web/client.tsx` is newer than it; the write is atomic (temp file + rename) so
 * that processes starting together never serve a half-written file.
 *
 * Run as a program (`deno task build`) to build once.
 */
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const WEB = fromFileUrl(new URL("./", import.meta.url));
/** Where the bundle is written. */
export const BUNDLE_PATH = join(WEB, "static/build/islands.js");
/** uPlot's stylesheet, copied beside the bundle. */
export const UPLOT_CSS_PATH = join(WEB, "static/build/uPlot.min.css");
const SOURCES = [join(WEB, "client.tsx"), join(WEB, "islands"), join(WEB, "components")];

async function newestMtime(path: string): Promise<number> {
  const st = await Deno.stat(path);
  if (!st.isDirectory) return st.mtime?.getTime() ?? 0;
  let newest = 0;
  for await (const e of Deno.readDir(path)) newest = Math.max(newest, await newestMtime(join(path, e.name)));
  return newest;
}

/** True when the bundle is missing or older than a source. */
export async function bundleIsStale(): Promise<boolean> {
  let built: number;
  try {
    built = (await Deno.stat(BUNDLE_PATH)).mtime?.getTime() ?? 0;
    await Deno.stat(UPLOT_CSS_PATH);
  } catch {
    return true;
  }
  for (const s of SOURCES) if ((await newestMtime(s)) > built) return true;
  return false;
}

/** Builds the islands bundle when stale (or always with `force`). Returns the bundle's path. */
export async function buildIslands(options: { force?: boolean } = {}): Promise<string> {
  if (!options.force && !(await bundleIsStale())) return BUNDLE_PATH;
  await Deno.mkdir(join(WEB, "static/build"), { recursive: true });
  const tmp = `${BUNDLE_PATH}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp.js`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "browser", "--minify", "--output", tmp, join(WEB, "client.tsx")],
    cwd: join(WEB, ".."),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot build the console's islands: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  await Deno.rename(tmp, BUNDLE_PATH);
  // The chart library's stylesheet, served beside the bundle.
  const css = join(WEB, "../node_modules/uplot/dist/uPlot.min.css");
  const cssTmp = `${UPLOT_CSS_PATH}.${Deno.pid}.tmp`;
  await Deno.copyFile(css, cssTmp);
  await Deno.rename(cssTmp, UPLOT_CSS_PATH);
  return BUNDLE_PATH;
}

if (import.meta.main) {
  const path = await buildIslands({ force: true });
  console.log(`built ${path} (${(await Deno.stat(path)).size} bytes)`);
}
