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
/**
 * How long a new sandbox worker may take to start before its first event's timeout begins: about 25 ms
 * here, seconds when its module is compiled afresh (a first run after an upgrade, or checked under
 * `deno test` on a busy machine: more than 10 s seen).
 */
const WORKER_START_MS = 60_000;

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

/**
 * An event as it is posted into the sandbox for a batch: its rows as the JSON text the database sent,
 * parsed inside the sandbox only when the function reads `event.new` or `event.old`. A function that
 * never looks at the rows costs no parsing, and a string crosses the thread boundary as one copy where an
 * object is walked twice (serialised and rebuilt).
 */
export type WireEvent = Omit<DispatchEvent, "new" | "old"> & {
  new_json: string | null;
  old_json: string | null;
};

function toWire(e: DispatchEvent | WireEvent): WireEvent {
  if ("new_json" in e) return e;
  const { new: n, old, ...rest } = e;
  return {
    ...rest,
    new_json: n === undefined ? null : JSON.stringify(n),
    old_json: old === undefined ? null : JSON.stringify(old),
  };
}

/**
 * A batch's events as posted to the worker: one array per field rather than an object per event, which a
 * structured clone writes and rebuilds field name by field name (measured: about half the cost of the
 * message pair per event).
 */
function packEvents(events: (DispatchEvent | WireEvent)[]) {
  const n = events.length;
  const p = {
    id: new Array<string>(n),
    function: new Array<string>(n),
    source: new Array<string>(n),
    table: new Array<string | null>(n),
    op: new Array<string | null>(n),
    row_id: new Array<string | null>(n),
    new_json: new Array<string | null>(n),
    old_json: new Array<string | null>(n),
    attempt: new Array<number>(n),
  };
  for (let i = 0; i < n; i++) {
    const e = toWire(events[i]);
    p.id[i] = e.id;
    p.function[i] = e.function;
    p.source[i] = e.source;
    p.table[i] = e.table;
    p.op[i] = e.op;
    p.row_id[i] = e.row_id;
    p.new_json[i] = e.new_json;
    p.old_json[i] = e.old_json;
    p.attempt[i] = e.attempt;
  }
  return p;
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

async function runQuery(
  o: Pick<SandboxOptions, "sql" | "readonlySql">,
  readonly: boolean,
  text: string,
  params: unknown[],
) {
  if (!o.sql) throw new Error("No database is available here");
  if (readonly && o.readonlySql) return await o.readonlySql.unsafe(text, params as never[]);
  if (readonly) {
    return await o.sql.begin("read only", (tx) => tx.unsafe(text, params as never[]));
  }
  return await o.sql.unsafe(text, params as never[]);
}

/** Runs a query a function posted and posts the rows (or the error) back, unless the call ended. */
function answerQuery(
  worker: Worker,
  o: Pick<SandboxOptions, "sql" | "readonlySql">,
  m: { id: number; readonly?: boolean; text: unknown; params: unknown },
  ended: () => boolean,
) {
  runQuery(o, Boolean(m.readonly), String(m.text), Array.isArray(m.params) ? m.params : [])
    .then((rows) => {
      if (!ended()) worker.postMessage({ type: "result", id: m.id, rows: [...rows] });
    })
    .catch((err: Error & { code?: string }) => {
      if (!ended()) worker.postMessage({ type: "result", id: m.id, error: err.message, code: err.code });
    });
}

/**
 * How a sandbox worker's clock reads on the node's. Each thread's `performance.now()` counts from its own
 * start, and its `performance.timeOrigin` is the wall clock at that start, so `timeOrigin + now()` of two
 * threads agree only while the wall clock never steps (an NTP correction, a virtual machine paused and
 * resumed). Seen once in the bench: the workers started after such a step read 23 s ahead of the node,
 * which recorded every start 23 s late; stepped the other way, every function would time out at once.
 * Both `now()` are monotonic, so the offset between them is a constant, bounded by each batch: the worker
 * got the batch after it was sent (offset ≥ sent − received) and ended it before its answer arrived
 * (offset ≤ arrived − ended). The middle of the tightest bounds is used: within half a message's way.
 */
class WorkerClock {
  #lo = -Infinity;
  #hi = Infinity;
  /** The worker's clock read `workerAt` no earlier than this thread's `hereAt`. */
  notBefore(hereAt: number, workerAt: number): void {
    if (workerAt) this.#lo = Math.max(this.#lo, hereAt - workerAt);
  }
  /** The worker's clock read `workerAt` no later than this thread's `hereAt`. */
  notAfter(hereAt: number, workerAt: number): void {
    if (workerAt) this.#hi = Math.min(this.#hi, hereAt - workerAt);
  }
  /**
   * `workerAt` on this thread's clock at the latest it can have been (a deadline counted from there is never
   * early); this thread's clock when no upper bound is known.
   */
  latest(workerAt: number): number {
    return this.#hi === Infinity ? performance.now() : workerAt + this.#hi;
  }
  /** `workerAt` on this thread's clock (`performance.now()`). */
  toHere(workerAt: number): number {
    const lo = this.#lo, hi = this.#hi;
    if (lo === -Infinity) return workerAt + (hi === Infinity ? 0 : hi);
    return workerAt + (hi === Infinity || hi < lo ? lo : (lo + hi) / 2);
  }
}

const clocks = new WeakMap<Worker, WorkerClock>();

function clockOf(worker: Worker): WorkerClock {
  let c = clocks.get(worker);
  if (!c) clocks.set(worker, c = new WorkerClock());
  return c;
}

function newWorker(url = WORKER_URL): Worker {
  // `deno.permissions` is an unstable option missing from the stable WorkerOptions type.
  const options = { type: "module", deno: { permissions: "none" } } as WorkerOptions;
  return new Worker(url, options);
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
      } else if (m.type === "query") answerQuery(worker, o, m, () => settled);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      finish({ ok: false, ms: ms(), error: e.message || "Worker failed", stack: "", timedOut: false }, false);
    };
    worker.postMessage({ type: o.checkOnly ? "check" : "run", code: o.code, event: o.event });
  });
}

/** Several events of one function, run one after another on one worker. */
export interface BatchOptions {
  code: string;
  items: { event: DispatchEvent | WireEvent; timeoutMs: number }[];
  sql?: Sql;
  readonlySql?: Sql;
  /** When it aborts, events not started yet are left unstarted (the running one finishes). */
  signal?: AbortSignal;
}

/** The outcome of one event of a batch: a result with when it started, or not started at all. */
export type BatchItemResult =
  | (SandboxResult & { started: true; startedAt: number })
  | { started: false };

/**
 * Runs a batch on `worker` with one message each way instead of two per event. Each event keeps its own
 * timeout: the worker records progress in a shared buffer, and a timer armed for the running event's
 * deadline checks it. On a timeout or a crash the worker is terminated; events after the one that was
 * running never started and are reported so (`started: false`), for the caller to run elsewhere.
 */
function execBatch(
  worker: Worker,
  o: BatchOptions,
  release: (w: Worker, reusable: boolean) => void,
): Promise<BatchItemResult[]> {
  const n = o.items.length;
  const progress = new Float64Array(new SharedArrayBuffer(8 * (4 + 2 * n)));
  const stop = () => progress[1 + 2 * n] = 1;
  if (o.signal?.aborted) stop();
  o.signal?.addEventListener("abort", stop, { once: true });
  const sentAt = performance.now();
  const clock = clockOf(worker);
  const errors = new Map<number, { message: string; stack: string }>();
  return new Promise((resolve) => {
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (results: BatchItemResult[], reusable: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", stop);
      worker.onmessage = null;
      worker.onerror = null;
      release(worker, reusable);
      resolve(results);
    };
    // When event i started, on this thread's clock (the send time if it has not started yet).
    const startedAt = (i: number) => {
      if (!progress[1 + i]) return sentAt;
      clock.notBefore(sentAt, progress[3 + 2 * n]);
      return clock.toHere(progress[1 + i]);
    };
    // How long event i ran: until the next one started or the batch ended (now, if neither happened).
    const msOf = (i: number) => {
      const end = progress[2 + i] && i + 1 < n ? progress[2 + i] : progress[2 + 2 * n];
      if (end && progress[1 + i]) return end - progress[1 + i];
      return (end ? clock.toHere(end) : performance.now()) - startedAt(i);
    };
    const resultOf = (i: number, fallback?: { error: string; timedOut: boolean }): BatchItemResult => {
      const state = progress[1 + n + i];
      const at = startedAt(i);
      if (state === 1) return { ok: true, ms: msOf(i), started: true, startedAt: at };
      const e = errors.get(i);
      if (state === 2 || !fallback) {
        return {
          ok: false,
          ms: msOf(i),
          error: e?.message ?? "Function failed",
          stack: e?.stack ?? "",
          timedOut: false,
          started: true,
          startedAt: at,
        };
      }
      return {
        ok: false,
        ms: msOf(i),
        error: fallback.error,
        stack: "",
        timedOut: fallback.timedOut,
        started: true,
        startedAt: at,
      };
    };
    /** Ends the batch early: event `j` failed with `why`, those before it finished, those after never started. */
    const abort = (j: number, why: { error: string; timedOut: boolean }) => {
      const results: BatchItemResult[] = [];
      for (let i = 0; i < n; i++) {
        if (i < j) results.push(resultOf(i, { error: "Function failed", timedOut: false }));
        else if (i === j) results.push(resultOf(i, why));
        else results.push({ started: false });
      }
      finish(results, false);
    };
    const check = () => {
      const j = progress[0];
      if (j >= n) {
        // Finished: the answer is on its way.
        timer = setTimeout(check, 5);
        return;
      }
      // What the worker wrote is read before the time is taken: it wrote it no later than `now`.
      const received = progress[3 + 2 * n];
      const started = progress[1 + j];
      const now = performance.now();
      clock.notBefore(sentAt, received);
      clock.notAfter(now, received);
      clock.notAfter(now, started);
      // Before the first event starts, its time counts from when the worker got the batch (the loading of
      // the function's code is the function's), and a worker not started yet gets WORKER_START_MS first.
      // The worker's times are placed as late as they can have been: before a worker's first answer the
      // clock's bounds are as far apart as the worker was slow to start, and its start must not be taken
      // from the function's time.
      const from = started
        ? clock.latest(started)
        : received
        ? clock.latest(received)
        : sentAt + WORKER_START_MS;
      const deadline = from + o.items[j].timeoutMs;
      if (now >= deadline) {
        const error = started || received
          ? `Function timed out after ${o.items[j].timeoutMs} ms`
          : `The sandbox worker did not start within ${WORKER_START_MS} ms`;
        return abort(j, { error, timedOut: true });
      }
      // Wake at the running event's deadline, or sooner if a later event (not started yet, so its
      // deadline is at least its timeout from now) could time out first.
      let next = deadline - now;
      for (let i = j + 1; i < n; i++) next = Math.min(next, o.items[i].timeoutMs);
      // Until the worker got the batch, look again soon: its deadline moves then.
      if (!received) next = Math.min(next, 20);
      timer = setTimeout(check, Math.max(1, next));
    };
    timer = setTimeout(check, Math.min(...o.items.map((i) => i.timeoutMs)));
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data;
      if (m.type === "batch-error") {
        errors.set(m.index, { message: String(m.message), stack: String(m.stack) });
      } else if (m.type === "query") answerQuery(worker, o, m, () => settled);
      else if (m.type === "batch-done") {
        clock.notAfter(performance.now(), progress[2 + 2 * n]);
        for (const err of m.errors as { index: number; message: string; stack: string }[]) {
          errors.set(err.index, { message: String(err.message), stack: String(err.stack) });
        }
        finish(o.items.map((_, i) => progress[1 + i] ? resultOf(i) : { started: false }), true);
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      abort(Math.min(progress[0], n - 1), { error: e.message || "Worker failed", timedOut: false });
    };
    worker.postMessage({
      type: "batch",
      code: o.code,
      events: packEvents(o.items.map((i) => i.event)),
      progress: progress.buffer,
    });
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
  /** Idle workers per code, the most recently used last. */
  #idle = new Map<string, { worker: Worker; at: number }[]>();
  #count = 0;
  #started = 0;
  #reaper: ReturnType<typeof setTimeout> | undefined;

  /**
   * `maxIdle`: idle workers kept at most. A burst leaves several warm workers behind; those beyond the most
   * recently used one of each function are terminated once idle for `idleMs`, and that one after ten times
   * as long (so a function called every few minutes stays warm, and the code of a function since changed
   * or deleted does not hold a worker for ever). `workerUrl`: the sandbox's module (tests use one whose
   * clock is skewed).
   */
  constructor(readonly maxIdle = 32, readonly idleMs = 60_000, readonly workerUrl: URL = WORKER_URL) {}

  /** Runs `o` on a warm worker for its code, or a new one. Never throws. */
  run(o: SandboxOptions): Promise<SandboxResult> {
    return execIn(this.#take(o.code), o, (worker, reusable) => this.#give(o.code, worker, reusable));
  }

  /** Runs a batch of events of one function on a warm worker for its code, or a new one. Never throws. */
  runBatch(o: BatchOptions): Promise<BatchItemResult[]> {
    return execBatch(this.#take(o.code), o, (worker, reusable) => this.#give(o.code, worker, reusable));
  }

  /** Idle workers now. */
  get idle(): number {
    return this.#count;
  }

  /** Workers started so far. */
  get started(): number {
    return this.#started;
  }

  #take(code: string): Worker {
    const list = this.#idle.get(code);
    const w = list?.pop();
    if (w) this.#count--;
    if (list && !list.length) this.#idle.delete(code);
    if (w) return w.worker;
    this.#started++;
    return newWorker(this.workerUrl);
  }

  #give(code: string, worker: Worker, reusable: boolean): void {
    if (!reusable || this.#count >= this.maxIdle) return worker.terminate();
    const l = this.#idle.get(code) ?? [];
    l.push({ worker, at: performance.now() });
    this.#idle.set(code, l);
    this.#count++;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#reaper !== undefined || !this.#count) return;
    const timer = setTimeout(() => {
      this.#reaper = undefined;
      this.reap();
      this.#schedule();
    }, this.idleMs);
    // Idle workers never keep the process alive on their own.
    Deno.unrefTimer(timer);
    this.#reaper = timer;
  }

  /** Terminates the workers idle for too long as of `now` (the pool's own timer calls it). */
  reap(now = performance.now()): void {
    for (const [code, list] of this.#idle) {
      const keep = list.filter((e, i) => {
        const limit = i === list.length - 1 ? this.idleMs * 10 : this.idleMs;
        if (now - e.at < limit) return true;
        e.worker.terminate();
        this.#count--;
        return false;
      });
      if (keep.length) this.#idle.set(code, keep);
      else this.#idle.delete(code);
    }
  }

  /** Terminates every idle worker. */
  close(): void {
    clearTimeout(this.#reaper);
    this.#reaper = undefined;
    for (const l of this.#idle.values()) for (const e of l) e.worker.terminate();
    this.#idle.clear();
    this.#count = 0;
  }
}
