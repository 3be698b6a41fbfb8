/**
 * A local Redis server for dev and tests, on a loopback port, as a child process stopped by its pid.
 */
import { join } from "node:path";
import { which } from "./packages.ts";
import { type ManagedProcess, startProcess } from "./process.ts";

/** Options for {@linkcode startRedis}. */
export interface RedisOptions {
  /** Working folder (append-only file, log). */
  dir: string;
  port: number;
  /** Keep data across restarts (append-only file). Off for tests. */
  persist?: boolean;
}

/** A running local Redis. */
export interface LocalRedis {
  process: ManagedProcess;
  port: number;
  url: string;
  stop(): Promise<void>;
}

/** Sends one inline command and returns the first reply line (`+PONG`, `-ERR…`). */
export async function redisCommand(port: number, line: string, hostname = "127.0.0.1"): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await conn.write(new TextEncoder().encode(line + "\r\n"));
    const buf = new Uint8Array(512);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/** Starts Redis on `options.port`. */
export async function startRedis(options: RedisOptions): Promise<LocalRedis> {
  const bin = which("redis-server");
  if (!bin) throw new Error("Cannot start Redis: redis-server not found (apt-get install redis-server)");
  await Deno.mkdir(options.dir, { recursive: true });
  const args = [
    "--port",
    String(options.port),
    "--bind",
    "127.0.0.1",
    "--dir",
    options.dir,
    "--daemonize",
    "no",
    "--save",
    "",
    "--appendonly",
    options.persist ? "yes" : "no",
    "--logfile",
    "",
    "--loglevel",
    "warning",
  ];
  const proc = await startProcess({ name: "redis", cmd: bin, args, output: join(options.dir, "redis.log") });
  await proc.waitReady(
    "Redis to answer PING",
    async () => (await redisCommand(options.port, "PING")) === "+PONG",
    30_000,
    join(options.dir, "redis.log"),
  );
  return {
    process: proc,
    port: options.port,
    url: `redis://127.0.0.1:${options.port}`,
    stop: async () => {
      await proc.stop(10_000);
    },
  };
}
