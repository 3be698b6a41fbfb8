/**
 * `deno task compile`: one self-contained binary per process of {@linkcode PROCESSES} (plus the health
 * probe) in `dist/`, with `deno compile`.
 *
 * `deno compile` joins the code to a Deno runtime (`denort`) that it downloads once per version and
 * target and caches in `DENO_DIR`. Where that download cannot happen (no internet, a firewall that
 * drops packets), `deno compile` would fail late or hang; so this script first looks for the runtime
 * (`DENORT_BIN`, or the cache) and otherwise asks the download server with a short timeout, and stops
 * at once with a message that says what is missing and how to get past it.
 *
 * Flags: `--only web,dispatch` · `--target <triple>` (cross-compile) · `--out dist` · `--dry-run`
 * (print the `deno compile` commands, check nothing) · `--timeout-ms N` (the runtime probe, default
 * 10 000). Processes whose entry file does not exist (yet) are skipped with a notice.
 */
import { join, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { binaryName, PROCESSES, type ProcessSpec } from "./processes.ts";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/** One binary to build. */
export interface CompileJob {
  /** `wharf-web`, `wharf-healthcheck`. */
  binary: string;
  entry: string;
  args: string[];
}

/** The health probe binary every container image carries. */
export const HEALTHCHECK_JOB_ENTRY = "deploy/healthcheck.ts";

/** The `deno compile` arguments for a process (everything after `deno`). */
export function compileArgs(
  p: Pick<ProcessSpec, "permissions" | "flags" | "include" | "selfExtracting">,
  options: {
    entry: string;
    output: string;
    target?: string;
  },
): string[] {
  const args = ["compile", "--frozen", "--no-check", ...p.permissions, ...(p.flags ?? [])];
  for (const inc of p.include ?? []) args.push("--include", inc);
  if (p.selfExtracting) args.push("--self-extracting");
  if (options.target) args.push("--target", options.target);
  args.push("--output", options.output, options.entry);
  return args;
}

/** Every job for the given processes, the health probe last. */
export function compileJobs(
  processes: ProcessSpec[],
  options: { out: string; target?: string; withHealthcheck?: boolean },
): CompileJob[] {
  const jobs = processes.map((p) => ({
    binary: binaryName(p),
    entry: p.entry,
    args: compileArgs(p, {
      entry: p.entry,
      output: join(options.out, binaryName(p)),
      target: options.target,
    }),
  }));
  if (options.withHealthcheck ?? true) {
    jobs.push({
      binary: "wharf-healthcheck",
      entry: HEALTHCHECK_JOB_ENTRY,
      args: compileArgs({ permissions: ["--allow-net", "--allow-env"] }, {
        entry: HEALTHCHECK_JOB_ENTRY,
        output: join(options.out, "wharf-healthcheck"),
        target: options.target,
      }),
    });
  }
  return jobs;
}

/** Where Deno keeps its cache (`DENO_DIR`, else the platform's cache folder). */
export function denoDir(env: Record<string, string | undefined> = Deno.env.toObject()): string | undefined {
  if (env.DENO_DIR) return env.DENO_DIR;
  if (Deno.build.os === "darwin") return env.HOME && join(env.HOME, "Library/Caches/deno");
  if (Deno.build.os === "windows") return env.LOCALAPPDATA && join(env.LOCALAPPDATA, "deno");
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "deno");
  return env.HOME && join(env.HOME, ".cache/deno");
}

/** The URL `deno compile` downloads the runtime from, for this Deno version and a target triple. */
export function runtimeUrl(target: string, version = Deno.version.deno): string {
  return `https://dl.deno.land/release/v${version}/denort-${target}.zip`;
}

/** Whether the runtime is at hand, and how; `ok: false` carries the reason. */
export type RuntimeCheck = { ok: true; via: string } | { ok: false; reason: string };

/**
 * Finds the runtime `deno compile` will need: `DENORT_BIN`, the cached download, or a reachable
 * download server (asked with a HEAD request that gives up after `timeoutMs`, so a network that drops
 * packets costs seconds, not minutes).
 */
export async function checkRuntime(options: {
  target: string;
  timeoutMs: number;
  env?: Record<string, string | undefined>;
  /** The URL to probe; the real download URL by default. */
  url?: string;
}): Promise<RuntimeCheck> {
  const env = options.env ?? Deno.env.toObject();
  if (env.DENORT_BIN) {
    try {
      if (Deno.statSync(env.DENORT_BIN).isFile) return { ok: true, via: "DENORT_BIN" };
    } catch { /* reported below */ }
    return { ok: false, reason: "DENORT_BIN is set but is not a file" };
  }
  const dir = denoDir(env);
  if (dir) {
    const cached = join(dir, "dl", "release", `v${Deno.version.deno}`, `denort-${options.target}.zip`);
    try {
      if (Deno.statSync(cached).isFile) return { ok: true, via: "the cached runtime in DENO_DIR" };
    } catch { /* not cached */ }
  }
  const url = options.url ?? runtimeUrl(options.target);
  try {
    const res = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(options.timeoutMs) });
    await res.body?.cancel();
    if (res.ok) return { ok: true, via: `the download server (${new URL(url).host})` };
    return { ok: false, reason: `${new URL(url).host} answered ${res.status} for ${new URL(url).pathname}` };
  } catch (e) {
    const why = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${options.timeoutMs} ms`
      : errorText(e);
    return { ok: false, reason: `${new URL(url).host} cannot be reached: ${why}` };
  }
}

/** The innermost useful message of a fetch error (the DNS or connect error sits in its cause). */
function errorText(e: unknown): string {
  const err = e as Error;
  const text = err.cause instanceof Error ? err.cause.message : err.message;
  return text.split("\n")[0];
}

/** The message printed when the runtime is missing. */
export function runtimeMissingMessage(target: string, reason: string): string {
  return [
    `Cannot compile: deno compile needs the Deno runtime for ${target} (denort ${Deno.version.deno}), ` +
    `which it downloads from ${runtimeUrl(target)} — ${reason}.`,
    "Run `deno task compile` on a machine with internet access (or in the Dockerfile's build stage there),",
    "or point DENORT_BIN at a denort binary of the same version.",
  ].join("\n");
}

function parseFlags(args: string[]) {
  const out = {
    only: undefined as string[] | undefined,
    target: Deno.build.target,
    outDir: "dist",
    dryRun: false,
    timeoutMs: 10_000,
  };
  for (let i = 0; i < args.length; i++) {
    const [k, inline] = args[i].split("=", 2);
    const value = () => inline ?? args[++i];
    if (k === "--only") out.only = value().split(",").map((s) => s.trim()).filter(Boolean);
    else if (k === "--target") out.target = value();
    else if (k === "--out") out.outDir = value();
    else if (k === "--dry-run") out.dryRun = true;
    else if (k === "--timeout-ms") out.timeoutMs = Number(value());
    else {throw new Error(
        `Cannot read argument ${k}: expected --only, --target, --out, --dry-run or --timeout-ms`,
      );}
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args);
  const unknown = (flags.only ?? []).filter((n) => !PROCESSES.some((p) => p.name === n));
  if (unknown.length) {
    console.error(
      `Cannot compile ${unknown.join(", ")}: known are ${PROCESSES.map((p) => p.name).join(", ")}`,
    );
    return 2;
  }
  const selected = PROCESSES.filter((p) => !flags.only || flags.only.includes(p.name));
  const present: ProcessSpec[] = [];
  for (const p of selected) {
    if (await exists(join(ROOT, p.entry))) present.push(p);
    else console.log(`[compile] skipping ${p.name}: ${p.entry} does not exist in this tree`);
  }
  const outDir = resolve(ROOT, flags.outDir);
  const jobs = compileJobs(present, { out: flags.dryRun ? flags.outDir : outDir, target: flags.target });
  if (flags.dryRun) {
    for (const j of jobs) console.log(["deno", ...j.args].join(" "));
    return 0;
  }

  const runtime = await checkRuntime({
    target: flags.target,
    timeoutMs: flags.timeoutMs,
    url: Deno.env.get("WHARF_DENORT_PROBE_URL") || undefined,
  });
  if (!runtime.ok) {
    console.error(runtimeMissingMessage(flags.target, runtime.reason));
    return 1;
  }
  console.log(`[compile] runtime: ${runtime.via}`);

  if (present.some((p) => p.name === "web")) {
    // The islands bundle is embedded with web/static/: build it now, a compiled web cannot.
    const { buildIslands } = await import("../web/build.ts");
    await buildIslands({ force: true });
  }
  await Deno.mkdir(outDir, { recursive: true });
  // Binaries are large (tens of MB each): the output folder ignores itself so they are never committed.
  await Deno.writeTextFile(join(outDir, ".gitignore"), "*\n");
  for (const job of jobs) {
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: job.args,
      cwd: ROOT,
      stdout: "inherit",
      stderr: "inherit",
    })
      .output();
    if (!out.success) {
      console.error(`[compile] ${job.binary} failed (exit ${out.code})`);
      return 1;
    }
    console.log(`[compile] ${job.binary} in ${Math.round(performance.now() - t0)} ms`);
  }
  console.log(`[compile] ${jobs.length} binaries in ${outDir}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
