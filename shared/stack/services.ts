/**
 * The set of services every wharf run needs (PostgreSQL, Redis, S3), started together on free loopback
 * ports. `deno task dev` keeps them in `.wharf/dev/` across restarts; `deno task test` starts a
 * throwaway set in a temporary folder. Both use this one start code.
 */
import { join } from "node:path";
import { freePort, portIsFree } from "./process.ts";
import { type LocalPostgres, startPostgres } from "./postgres.ts";
import { type LocalRedis, startRedis } from "./redis.ts";
import { LOCAL_S3_CREDENTIALS, type LocalS3, startS3 } from "./s3.ts";

/** Ports a previous run used; reused when still free so that URLs stay stable. */
export interface PreferredPorts {
  postgres?: number;
  redis?: number;
  s3?: number;
}

/** The running services and the environment that points a process at them. */
export interface Services {
  postgres: LocalPostgres;
  redis: LocalRedis;
  s3: LocalS3;
  /** `S3_*`, `REDIS_URL`, `PG*` variables common to every process (no database chosen here). */
  env: Record<string, string>;
  ports: Required<PreferredPorts>;
  stop(): Promise<void>;
}

function pick(preferred?: number): number {
  return preferred && portIsFree(preferred) ? preferred : freePort();
}

/** Starts Postgres, Redis and S3 under `dir`. Stops what did start if a later one fails. */
export async function startServices(options: {
  dir: string;
  pgUser: string;
  pgPassword: string;
  ephemeral: boolean;
  ports?: PreferredPorts;
  buckets?: string[];
  /** PostgreSQL's bin folder, when not the default one. */
  pgBinDir?: string;
}): Promise<Services> {
  // allSettled, not all: when one service fails, the others may still be starting, and every one that
  // did start must be stopped before we report the failure.
  const results = await Promise.allSettled([
    startPostgres({
      dir: join(options.dir, "postgres"),
      port: pick(options.ports?.postgres),
      user: options.pgUser,
      password: options.pgPassword,
      ephemeral: options.ephemeral,
      binDir: options.pgBinDir,
    }),
    startRedis({
      dir: join(options.dir, "redis"),
      port: pick(options.ports?.redis),
      persist: !options.ephemeral,
    }),
    startS3({ dir: join(options.dir, "s3"), port: pick(options.ports?.s3), buckets: options.buckets }),
  ]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.allSettled(
      results.flatMap((r) => r.status === "fulfilled" ? [r.value.stop()] : []),
    );
    throw failed.reason;
  }
  const [postgres, redis, s3] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
    LocalPostgres,
    LocalRedis,
    LocalS3,
  ];
  return {
    postgres,
    redis,
    s3,
    ports: { postgres: postgres.port, redis: redis.port, s3: s3.port },
    env: {
      REDIS_URL: redis.url,
      S3_ENDPOINT: s3.endpoint,
      S3_REGION: "us-east-1",
      S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
      S3_FORCE_PATH_STYLE: "true",
      WHARF_PG_CA_FILE: postgres.caFile,
    },
    stop: async () => {
      await Promise.allSettled([redis.stop(), s3.stop(), postgres.stop()]);
    },
  };
}
