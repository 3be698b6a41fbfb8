/**
 * The inside of the sandbox: a Web Worker started with every permission denied. It imports the function's
 * code from a `data:` URL, calls its default export with the event and a database handle, and reports the
 * outcome. The handle has no socket of its own: each query is posted to the node, which runs it on the
 * function pool, so the function reaches the database and nothing else.
 */
/// <reference lib="deno.worker" />

interface Pending {
  resolve: (rows: unknown[]) => void;
  reject: (e: Error) => void;
}

const pending = new Map<number, Pending>();
let nextId = 1;

function query(readonly: boolean, text: string, params: unknown[] = []): Promise<unknown[]> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    self.postMessage({ type: "query", id, text, params, readonly });
  });
}

function tagged(readonly: boolean) {
  return (strings: TemplateStringsArray, ...values: unknown[]) => {
    let text = strings[0];
    for (let i = 0; i < values.length; i++) text += `$${i + 1}` + strings[i + 1];
    return query(readonly, text, values);
  };
}

const db = {
  query: (text: string, params?: unknown[]) => query(false, text, params),
  sql: tagged(false),
  readonly: {
    query: (text: string, params?: unknown[]) => query(true, text, params),
    sql: tagged(true),
  },
};

/** The imported module, kept so a reused worker does not import the same code again. */
let loaded: { code: string; mod: { default?: unknown } & Record<string, unknown> } | undefined;

async function load(code: string) {
  if (!loaded || loaded.code !== code) {
    const bytes = new TextEncoder().encode(code);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    loaded = { code, mod: await import("data:application/typescript;base64," + btoa(bin)) };
  }
  const mod = loaded.mod;
  if (typeof mod.default !== "function") throw new TypeError("The code must export a default function");
  return mod.default as (e: unknown, d: typeof db) => unknown;
}

function describe(err: unknown) {
  const e = err instanceof Error ? err : new Error(String(err));
  return { message: e.message || e.name, stack: e.stack ?? "" };
}

/** Defines `key` on `target` as `text` parsed as JSON on first read (null stays null). */
function lazyJson(target: Record<string, unknown>, key: string, text: string) {
  const settle = (value: unknown) =>
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  Object.defineProperty(target, key, {
    enumerable: true,
    configurable: true,
    get() {
      const value = JSON.parse(text);
      settle(value);
      return value;
    },
    set: settle,
  });
}

/**
 * Rows up to this length (JSON text) are parsed when the event is built: cheaper than deferring (an
 * accessor turns the event into a slow object and costs more than parsing a short row). Longer ones are
 * parsed on first read, so a function that never reads a wide row does not pay for it.
 */
const EAGER_JSON = 2048;

/** Events of a batch as posted (`packEvents` in sandbox.ts): one array per field. */
interface PackedEvents {
  id: string[];
  function: string[];
  source: string[];
  table: (string | null)[];
  op: (string | null)[];
  row_id: (string | null)[];
  new_json: (string | null)[];
  old_json: (string | null)[];
  attempt: number[];
}

/** Event `i` of a batch as a function receives it (rows as JSON text: parsed now or on first read). */
function eventAt(p: PackedEvents, i: number): Record<string, unknown> {
  const nj = p.new_json[i];
  const oj = p.old_json[i];
  const event: Record<string, unknown> = {
    id: p.id[i],
    function: p.function[i],
    source: p.source[i],
    table: p.table[i],
    op: p.op[i],
    row_id: p.row_id[i],
    attempt: p.attempt[i],
    new: nj === null ? null : nj.length <= EAGER_JSON ? JSON.parse(nj) : undefined,
    old: oj === null ? null : oj.length <= EAGER_JSON ? JSON.parse(oj) : undefined,
  };
  if (nj !== null && nj.length > EAGER_JSON) lazyJson(event, "new", nj);
  if (oj !== null && oj.length > EAGER_JSON) lazyJson(event, "old", oj);
  return event;
}

/**
 * Runs a batch of events one after another and answers once. Progress goes to a shared buffer the node
 * reads to enforce each event's timeout without a message per event: `[0]` the index of the event
 * running (the batch length when all finished), `[1 + i]` when event i started, `[1 + n + i]` its state (1
 * returned, 2 threw), `[1 + 2n]` set to 1 by the node to stop before the next event, `[2 + 2n]` when the
 * batch ended (with the start times it gives each event's duration, a lone one's too), `[3 + 2n]` when the
 * batch arrived. Times are this worker's `performance.now()`, which the node maps onto its own clock (never
 * `timeOrigin + now()`: the wall clock at this worker's start, off by any step of the clock since the node
 * started). A throw is also posted at once, so its message survives a later timeout of the same batch.
 */
async function runBatch(code: string, events: PackedEvents, progress: Float64Array) {
  const n = events.id.length;
  progress[3 + 2 * n] = performance.now();
  const errors: { index: number; message: string; stack: string }[] = [];
  let fn: ((e: unknown, d: typeof db) => unknown) | undefined;
  let loadError: { message: string; stack: string } | undefined;
  try {
    fn = await load(code);
  } catch (err) {
    loadError = describe(err);
  }
  for (let i = 0; i < n; i++) {
    // The node is stopping: leave the rest unstarted, to be handed back.
    if (progress[1 + 2 * n] === 1) break;
    progress[1 + i] = performance.now();
    progress[0] = i;
    try {
      if (loadError) throw Object.assign(new Error(loadError.message), { stack: loadError.stack });
      await fn!(eventAt(events, i), db);
      progress[1 + n + i] = 1;
    } catch (err) {
      const d = describe(err);
      progress[1 + n + i] = 2;
      errors.push({ index: i, ...d });
      self.postMessage({ type: "batch-error", index: i, ...d });
    }
  }
  progress[2 + 2 * n] = performance.now();
  progress[0] = n;
  self.postMessage({ type: "batch-done", errors });
}

self.onmessage = async (e: MessageEvent) => {
  const msg = e.data;
  if (msg.type === "result") {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (!p) return;
    if (msg.error) p.reject(Object.assign(new Error(msg.error), { code: msg.code }));
    else p.resolve(msg.rows);
    return;
  }
  if (msg.type === "batch") return await runBatch(msg.code, msg.events, new Float64Array(msg.progress));
  if (msg.type !== "run" && msg.type !== "check") return;
  try {
    const fn = await load(msg.code);
    if (msg.type === "run") await fn(msg.event, db);
    self.postMessage({ type: "done" });
  } catch (err) {
    self.postMessage({ type: "error", ...describe(err) });
  }
};
