/**
 * What a test uses to reach the services `deno task test` started: its own database (cloned from the
 * migrated template), its own Redis key prefix, its own S3 bucket. Tests never share state, so test
 * files run in parallel.
 *
 * ```ts
 * Deno.test("…", async () => {
 *   await using db = await createTestDatabase();
 *   await db.sql`insert into …`;
 * });
 * ```
 */
import { connectPostgres, type Sql } from "../db.ts";

function need(name: string): string {
  const v = Deno.env.get(name);
  if (!v) {
    throw new Error(
      `Cannot find the test services: ${name} is not set. Run tests with \`deno task test\` ` +
        "(add a file path after it to run one file).",
    );
  }
  return v;
}

/** The environment the test runner set. */
export const testEnv = {
  get pgUrl(): string {
    return need("WHARF_TEST_PG_URL");
  },
  get pgTemplate(): string {
    return need("WHARF_TEST_PG_TEMPLATE");
  },
  get pgCaFile(): string {
    return need("WHARF_TEST_PG_CA_FILE");
  },
  get pgBinDir(): string {
    return need("WHARF_TEST_PG_BIN");
  },
  get redisUrl(): string {
    return need("WHARF_TEST_REDIS_URL");
  },
  get s3Endpoint(): string {
    return need("WHARF_TEST_S3_ENDPOINT");
  },
  /** A scratch folder removed when the run ends. */
  get tmp(): string {
    return need("WHARF_TEST_TMP");
  },
};

/** A short random id for names (databases, prefixes, buckets): lower-case letters and digits. */
export function testId(): string {
  return crypto.randomUUID().replace(/-/g, "").slice(0, 12);
}

/** Replaces the database of a Postgres URL. */
export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = "/" + encodeURIComponent(db);
  return u.toString();
}

/** A test's own database, dropped on dispose. */
export interface TestDatabase extends AsyncDisposable {
  name: string;
  url: string;
  sql: Sql;
  drop(): Promise<void>;
}

/**
 * A fresh database with every migration applied (a clone of the template, so it takes tens of
 * milliseconds). `migrated: false` gives an empty database, for tests of the migration runner itself.
 */
export async function createTestDatabase(options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  const name = `wharf_t_${testId()}`;
  const admin = connectPostgres(testEnv.pgUrl, { max: 1, applicationName: "wharf-test-admin" });
  try {
    const template = options.migrated === false ? "template0" : testEnv.pgTemplate;
    // Names are generated above from [a-z0-9_] only; CREATE DATABASE takes no parameters.
    await admin.unsafe(`create database ${name} template ${template}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(testEnv.pgUrl, name);
  const sql = connectPostgres(url, { max: 5, applicationName: "wharf-test" });
  let dropped = false;
  const drop = async () => {
    if (dropped) return;
    dropped = true;
    await sql.end({ timeout: 5 });
    const a = connectPostgres(testEnv.pgUrl, { max: 1, applicationName: "wharf-test-admin" });
    try {
      await a.unsafe(`drop database if exists ${name} with (force)`);
    } finally {
      await a.end();
    }
  };
  return { name, url, sql, drop, [Symbol.asyncDispose]: drop };
}

/** A Redis key prefix unique to one test, such as `t:3f9a…:`. */
export function testRedisPrefix(): string {
  return `t:${testId()}:`;
}

/** A bucket name unique to one test (S3 rules: lower case, digits, dashes). */
export function testBucketName(prefix = "t"): string {
  return `${prefix}-${testId()}`;
}

/** Collects a child process's output stream as text while it runs. */
export function captureText(stream: ReadableStream<Uint8Array>): { text(): string; done: Promise<void> } {
  let text = "";
  const dec = new TextDecoder();
  const done = (async () => {
    for await (const chunk of stream) text += dec.decode(chunk, { stream: true });
  })();
  return { text: () => text, done };
}

/**
 * Polls `f` every `everyMs` until it returns something truthy, and returns that; fails naming `what`
 * after `ms`.
 */
export async function waitFor<T>(
  what: string,
  f: () => Promise<T | undefined | false | null>,
  ms = 60_000,
  everyMs = 50,
): Promise<T> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = await f();
    if (v) return v;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`Timed out waiting for ${what}`);
}
