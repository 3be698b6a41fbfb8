/**
 * Runs one function in a Deno Web Worker with no permissions at all (no file system, network, env, run,
 * ffi, sys or imports beyond its own `data:` module). Its only way out is the database handle, whose
 * queries the node runs on the function pool. A timeout terminates the worker, which also stops an
 * infinite loop: the node's own event loop is never blocked.
 *
 * Needs `--unstable-worker-options` (Deno 2.9 still gates `Worker` `deno.permissions` behind it).
 */
import type { Sql } from "../../shared/db.ts";

const WORKER_URL = new URL("./sandbox_worker.ts", import.meta.url);

/** What a function receives as its first argument. */
export interface DispatchEvent {
  id: string;
  function: string;
  source: string;
  table: string | null;
  op: string | null;
  row_id: string | null;
  new: unknown;
  old: unknown;
  attempt: number;
}

/** The outcome of one call. */
export type SandboxResult =
  | { ok: true; ms: number }
  | { ok: false; ms: number; error: string; stack: string; timedOut: boolean };

/** What {@linkcode runInSandbox} needs. */
export interface SandboxOptions {
  code: string;
  event?: DispatchEvent;
  timeoutMs: number;
  /** Runs the function's queries. */
  sql?: Sql;
  /** Runs `db.readonly` queries (a follower); falls back to `sql` in a read-only transaction. */
  readonlySql?: Sql;
  /** Only import the code (compile check) instead of calling it. */
  checkOnly?: boolean;
}

async function runQuery(o: SandboxOptions, readonly: boolean, text: string, params: unknown[]) {
  if (!o.sql) throw new Error("No database is available here");
  if (readonly && o.readonlySql) return await o.readonlySql.unsafe(text, params as never[]);
  if (readonly) {
    return await o.sql.begin("read only", (tx) => tx.unsafe(text, params as never[]));
  }
  return await o.sql.unsafe(text, params as never[]);
}

function newWorker(): Worker {
  // `deno.permissions` is an unstable option missing from the stable WorkerOptions type.
  const options = { type: "module", deno: { permissions: "none" } } as WorkerOptions;
  return new Worker(WORKER_URL, options);
}

/**
 * Runs one call on `worker`; `release` gets the worker back with whether it may be reused (a call that
 * returned or threw) or must be terminated (a timeout or a crash).
 */
function execIn(
  worker: Worker,
  o: SandboxOptions,
  release: (w: Worker, reusable: boolean) => void,
): Promise<SandboxResult> {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: SandboxResult, reusable: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      worker.onmessage = null;
      worker.onerror = null;
      release(worker, reusable);
      resolve(r);
    };
    const timer = setTimeout(() => {
      finish({
        ok: false,
        ms: ms(),
        error: `Function timed out after ${o.timeoutMs} ms`,
        stack: "",
        timedOut: true,
      }, false);
    }, o.timeoutMs);
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data;
      if (m.type === "done") finish({ ok: true, ms: ms() }, true);
      else if (m.type === "error") {
        finish(
          { ok: false, ms: ms(), error: String(m.message), stack: String(m.stack), timedOut: false },
          true,
        );
      } else if (m.type === "query") {
        runQuery(o, Boolean(m.readonly), String(m.text), Array.isArray(m.params) ? m.params : [])
          .then((rows) => {
            if (!settled) worker.postMessage({ type: "result", id: m.id, rows: [...rows] });
          })
          .catch((err: Error & { code?: string }) => {
            if (!settled) {
              worker.postMessage({ type: "result", id: m.id, error: err.message, code: err.code });
            }
          });
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      finish({ ok: false, ms: ms(), error: e.message || "Worker failed", stack: "", timedOut: false }, false);
    };
    worker.postMessage({ type: o.checkOnly ? "check" : "run", code: o.code, event: o.event });
  });
}

/** Runs (or only compiles) `code` in a fresh sandboxed worker, terminated afterwards. Never throws. */
export function runInSandbox(o: SandboxOptions): Promise<SandboxResult> {
  return execIn(newWorker(), o, (w) => w.terminate());
}

/**
 * Keeps sandboxed workers warm between calls of the same code, so a call costs a message rather than a
 * worker start. A worker runs one call at a time; one that timed out or crashed is terminated, never
 * reused. Calls of the same function on the same worker share its module state (globals), as calls of a
 * module do; different functions never share a worker.
 */
export class SandboxPool {
  #idle = new Map<string, Worker[]>();
  #count = 0;
  constructor(readonly maxIdle = 32) {}

  /** Runs `o` on a warm worker for its code, or a new one. Never throws. */
  run(o: SandboxOptions): Promise<SandboxResult> {
    const list = this.#idle.get(o.code);
    const w = list?.pop();
    if (w) this.#count--;
    if (list && !list.length) this.#idle.delete(o.code);
    return execIn(w ?? newWorker(), o, (worker, reusable) => {
      if (!reusable || this.#count >= this.maxIdle) return worker.terminate();
      const l = this.#idle.get(o.code) ?? [];
      l.push(worker);
      this.#idle.set(o.code, l);
      this.#count++;
    });
  }

  /** Terminates every idle worker. */
  close(): void {
    for (const l of this.#idle.values()) for (const w of l) w.terminate();
    this.#idle.clear();
    this.#count = 0;
  }
}
