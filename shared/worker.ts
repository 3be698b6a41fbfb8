/**
 * The life every wharf worker shares: validated config, an ops server (`/healthz`, `/metrics`), explicit
 * states, abortable waits, and a graceful stop on SIGTERM/SIGINT.
 *
 * A worker's `run` receives a {@linkcode WorkerContext} whose `signal` aborts when a stop is asked for.
 * Loops wait with `ctx.sleep()`, which returns early on abort, so a worker idle in a wait stops at once;
 * a worker busy with a unit of work finishes it (or hands it back) and then returns. If `run` has not
 * returned after `drainTimeoutMs`, the process exits anyway with code 1 so that an orchestrator's kill
 * timer never has to.
 */
import { z } from "zod";
import { loadConfig } from "./config.ts";
import type { Sql } from "./db.ts";
import { errorResponseBody } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { METRICS_CONTENT_TYPE, Registry } from "./metrics.ts";

/** The states a worker moves through, in order; `failed` ends a run that threw. */
export type WorkerState = "starting" | "running" | "stopping" | "stopped" | "failed";

/**
 * Waits `ms` milliseconds unless `signal` aborts first. Resolves `true` when the full time passed and
 * `false` when it was cut short, so loops read `while (await sleep(…))`.
 */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A sleep that another part of the program can cut short: a loop waits with {@linkcode Waker.sleep}, a
 * notification handler calls {@linkcode Waker.wake}. `wake()` while nobody sleeps does nothing (a caller
 * that must not miss it keeps its own flag, checked before sleeping).
 */
export class Waker {
  #wake: (() => void) | undefined;

  /** Like {@linkcode abortableSleep}; a `wake()` ends it early with `true`. */
  sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (result: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (this.#wake === onWake) this.#wake = undefined;
        resolve(result);
      };
      const onAbort = () => done(false);
      const onWake = () => done(true);
      const timer = setTimeout(onWake, Math.max(0, ms));
      this.#wake = onWake;
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    this.#wake?.();
  }
}

/**
 * Exponential backoff with full jitter: attempt 0 → up to `baseMs`, doubling, capped at `maxMs`.
 * Background loops use it after an error so that many copies do not retry in step.
 */
export function backoffMs(attempt: number, baseMs = 200, maxMs = 30_000, random = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/** What a worker's `run` gets. */
export interface WorkerContext {
  readonly name: string;
  /** Unique per process: `<name>-<host>-<pid>-<random>`. */
  readonly instanceId: string;
  readonly log: Logger;
  readonly metrics: Registry;
  /** Aborts when the process is asked to stop. */
  readonly signal: AbortSignal;
  /** {@linkcode abortableSleep} bound to `signal`. */
  sleep(ms: number): Promise<boolean>;
  /** Marks the worker ready (`/healthz` answers 200 from then on). */
  ready(): void;
  /**
   * Sets what `/healthz` reports; `healthy: false` makes it answer 503 (a lost connection, say) while the
   * worker keeps trying.
   */
  setHealth(healthy: boolean, detail?: Record<string, unknown>): void;
  /**
   * Writes this instance's state and `status()` to `control.worker_instances` every `intervalMs`, so the
   * console can show it without talking to the worker. Stops with the worker.
   */
  reportTo(sql: Sql, status?: () => Record<string, unknown>, intervalMs?: number): void;
}

/** What a worker is: a name, its config schema, and its run function. */
export interface WorkerDefinition<S extends z.ZodType> {
  name: string;
  /** The config schema (keys are env variable names). */
  config: S;
  /** The ops port used when `OPS_PORT` is unset. */
  defaultOpsPort?: number;
  /** How long a stop may take before the process exits anyway (default 10 s). */
  drainTimeoutMs?: number;
  run(ctx: WorkerContext, config: z.infer<S>): Promise<void>;
}

/** The ops server's own settings, read beside every worker's config. */
export const OpsConfig = z.object({
  OPS_HOST: z.string().default("127.0.0.1"),
  OPS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
});

/** A running worker, as seen by its owner (the process entry point, or a test). */
export interface WorkerHandle {
  readonly ctx: WorkerContext;
  readonly opsPort: number;
  state(): WorkerState;
  /** Asks the worker to stop and waits for it (up to the drain timeout). Resolves to the exit code. */
  stop(reason?: string): Promise<number>;
  /** Resolves to the exit code when the worker has ended on its own or after `stop()`. */
  readonly done: Promise<number>;
}

/**
 * Starts a worker in this process: loads config, serves ops, runs `def.run`. Used by
 * {@linkcode runWorkerMain} and by in-process tests.
 */
export function startWorker<S extends z.ZodType>(
  def: WorkerDefinition<S>,
  env?: Record<string, string | undefined>,
): WorkerHandle {
  const config = loadConfig(def.config, env);
  const ops = loadConfig(OpsConfig, env);
  const log = createLogger(def.name);
  const metrics = new Registry();
  const controller = new AbortController();
  const instanceId = `${def.name}-${Deno.hostname()}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  let state: WorkerState = "starting";
  let healthy = true;
  let healthDetail: Record<string, unknown> = {};
  let isReady = false;
  const reporters: Promise<void>[] = [];
  /** Last writes of the final state, made after `run` returned. */
  const finalReports: (() => Promise<void>)[] = [];
  const startedAt = new Date();

  const stateGauge = metrics.gauge("wharf_worker_up", "1 while the worker runs and is healthy");
  const setState = (s: WorkerState) => {
    state = s;
    log.info("worker state", { state: s });
  };

  const ctx: WorkerContext = {
    name: def.name,
    instanceId,
    log: log.child({ instance: instanceId }),
    metrics,
    signal: controller.signal,
    sleep: (ms) => abortableSleep(ms, controller.signal),
    ready() {
      isReady = true;
    },
    setHealth(h, detail) {
      healthy = h;
      healthDetail = detail ?? {};
    },
    reportTo(sql, status = () => ({}), intervalMs = 5_000) {
      const write = async () => {
        await sql`
          insert into control.worker_instances
            (instance_id, worker, host, pid, state, healthy, status, started_at, heartbeat_at)
          values (${instanceId}, ${def.name}, ${Deno.hostname()}, ${Deno.pid}, ${state}, ${healthy},
                  ${sql.json(JSON.parse(JSON.stringify(status())))}, ${startedAt}, now())
          on conflict (instance_id) do update set
            state = excluded.state, healthy = excluded.healthy, status = excluded.status,
            heartbeat_at = now()`;
      };
      finalReports.push(() => write().catch(() => {}));
      reporters.push((async () => {
        let attempt = 0;
        while (!controller.signal.aborted) {
          try {
            await write();
            attempt = 0;
          } catch (e) {
            log.warn("heartbeat write failed", { error: e, attempt });
            attempt++;
          }
          await abortableSleep(attempt ? backoffMs(attempt, 500, intervalMs) : intervalMs, controller.signal);
        }
      })());
    },
  };

  const server = Deno.serve({
    hostname: ops.OPS_HOST,
    port: ops.OPS_PORT ?? def.defaultOpsPort ?? 0,
    onListen: () => {},
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/healthz") {
      const ok = state === "running" && healthy && isReady;
      stateGauge.set(ok ? 1 : 0);
      return Response.json({ status: ok ? "ok" : "unavailable", worker: def.name, state, ...healthDetail }, {
        status: ok ? 200 : 503,
      });
    }
    if (path === "/metrics") {
      stateGauge.set(state === "running" && healthy ? 1 : 0);
      return new Response(metrics.render(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
    }
    const { status, body } = errorResponseBody(Object.assign(new Error("Not found"), { status: 404 }));
    return Response.json(body, { status });
  });
  const opsPort = server.addr.port;
  log.info("ops server listening", { host: ops.OPS_HOST, port: opsPort });

  setState("running");
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const finish = async (code: number) => {
    controller.abort();
    await Promise.allSettled(reporters);
    await Promise.allSettled(finalReports.map((f) => f()));
    await server.shutdown();
    resolveDone(code);
  };
  void (async () => {
    try {
      await def.run(ctx, config);
      if (!controller.signal.aborted) log.info("worker returned on its own");
      setState("stopped");
      await finish(0);
    } catch (e) {
      log.error("worker failed", { error: e });
      setState("failed");
      await finish(1);
    }
  })();

  return {
    ctx,
    opsPort,
    state: () => state,
    done,
    async stop(reason = "stop requested") {
      if (state === "running") {
        setState("stopping");
        log.info("stopping", { reason });
        controller.abort();
      }
      const timeout = def.drainTimeoutMs ?? 10_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const code = await Promise.race([
        done,
        new Promise<number>((r) => {
          timer = setTimeout(() => {
            log.error("worker did not stop in time", { timeout_ms: timeout });
            r(1);
          }, timeout);
        }),
      ]);
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * The entry point of a worker process: starts it, stops it on SIGTERM or SIGINT, and exits with its code.
 * A config error ends the process with code 2 and a message that names the variable.
 */
export async function runWorkerMain<S extends z.ZodType>(def: WorkerDefinition<S>): Promise<never> {
  let handle: WorkerHandle;
  try {
    handle = startWorker(def);
  } catch (e) {
    createLogger(def.name).error("cannot start", { error: (e as Error).message });
    Deno.exit(2);
  }
  let stopping = false;
  const code = await new Promise<number>((resolve) => {
    const onSignal = (sig: Deno.Signal) => () => {
      if (stopping) {
        handle.ctx.log.warn("second signal: exiting now", { signal: sig });
        Deno.exit(1);
      }
      stopping = true;
      handle.stop(sig).then(resolve);
    };
    Deno.addSignalListener("SIGTERM", onSignal("SIGTERM"));
    Deno.addSignalListener("SIGINT", onSignal("SIGINT"));
    handle.done.then(resolve);
  });
  Deno.exit(code);
}
