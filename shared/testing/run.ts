/**
 * `deno task test`: starts one throwaway set of services (PostgreSQL, Redis, S3) on free ports, prepares a
 * migrated template database, runs every test file in parallel against them, stops the services, and
 * prints a plain `N passed, N failed` line.
 *
 * Extra arguments go to `deno test` (a file or folder, `--filter name`). `WHARF_TEST_JOBS` sets how many
 * test files run at once (default 3: the tests mostly wait on services, so slightly more than the cores).
 */
import { fileURLToPath as fromFileUrl } from "node:url";
import { connectPostgres } from "../db.ts";
import { migrate } from "../migrate.ts";
import { BASE_REQUIREMENTS, ensurePackages } from "../stack/packages.ts";
import { startServices } from "../stack/services.ts";
import { buildIslands } from "../../web/build.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));

/** The template every test database is cloned from. */
export const TEMPLATE_DATABASE = "wharf_template";

/** Reads Deno's closing summary (`ok | 12 passed (3 steps) | 0 failed`) from the test output. */
export function parseSummary(output: string): { passed: number; failed: number } | undefined {
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const re = /^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/gm;
  let m: RegExpExecArray | null;
  let last: { passed: number; failed: number } | undefined;
  while ((m = re.exec(plain))) last = { passed: Number(m[1]), failed: Number(m[2]) };
  return last;
}

async function main(): Promise<number> {
  const started = performance.now();
  await ensurePackages(BASE_REQUIREMENTS);
  const dir = await Deno.makeTempDir({ prefix: "wharf-test-" });
  const password = crypto.randomUUID();
  console.log("[test] starting PostgreSQL, Redis and S3…");
  const islands = buildIslands();
  islands.catch(() => {}); // awaited below, inside the try that stops the services
  const services = await startServices({ dir, pgUser: "wharf", pgPassword: password, ephemeral: true });
  let code = 1;
  try {
    await islands;
    const admin = connectPostgres(services.postgres.url, { max: 1, applicationName: "wharf-test" });
    try {
      await admin.unsafe(`create database ${TEMPLATE_DATABASE}`);
    } finally {
      await admin.end();
    }
    const tpl = connectPostgres(services.postgres.urlFor(TEMPLATE_DATABASE), { max: 1 });
    try {
      await migrate(tpl);
    } finally {
      await tpl.end();
    }
    console.log(`[test] services up in ${Math.round(performance.now() - started)} ms`);

    const jobs = Deno.env.get("WHARF_TEST_JOBS") ?? "3";
    const args = Deno.args.length ? Deno.args : [];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--parallel", ...args],
      cwd: ROOT,
      env: {
        ...services.env,
        DENO_JOBS: jobs,
        WHARF_LOG_LEVEL: Deno.env.get("WHARF_LOG_LEVEL") ?? "warn",
        WHARF_TEST: "1",
        WHARF_TEST_PG_URL: services.postgres.url,
        WHARF_TEST_PG_TEMPLATE: TEMPLATE_DATABASE,
        WHARF_TEST_PG_CA_FILE: services.postgres.caFile,
        WHARF_TEST_PG_BIN: services.postgres.binDir,
        WHARF_TEST_REDIS_URL: services.redis.url,
        WHARF_TEST_S3_ENDPOINT: services.s3.endpoint,
        WHARF_TEST_TMP: dir,
      },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    // Echo the output as it comes and keep it to read the summary.
    let output = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      const text = dec.decode(chunk, { stream: true });
      output += text;
      await Deno.stdout.write(chunk);
    }
    const status = await child.status;
    const summary = parseSummary(output);
    console.log(`[test] finished in ${Math.round((performance.now() - started) / 1000)} s`);
    if (summary) {
      // deno test can fail after its summary (a module that could not be loaded is reported last):
      // that counts as a failure even when every test that ran passed.
      const failed = summary.failed || (status.success ? 0 : 1);
      if (!status.success && !summary.failed) {
        console.error("[test] deno test failed after its summary (did a test file fail to load?)");
      }
      console.log(`${summary.passed} passed, ${failed} failed`);
      code = status.success && failed === 0 ? 0 : 1;
    } else {
      console.log(`0 passed, 1 failed`);
      console.error("[test] deno test ended without a summary (did a test file fail to load?)");
      code = status.code || 1;
    }
  } finally {
    await services.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return code;
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    console.error(`[test] ${(e as Error).message}`);
    console.log("0 passed, 1 failed");
  }
  Deno.exit(code);
}
