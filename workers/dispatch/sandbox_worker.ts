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
  if (msg.type !== "run" && msg.type !== "check") return;
  try {
    if (!loaded || loaded.code !== msg.code) {
      const bytes = new TextEncoder().encode(msg.code);
      let bin = "";
      for (const b of bytes) bin += String.fromCharCode(b);
      loaded = { code: msg.code, mod: await import("data:application/typescript;base64," + btoa(bin)) };
    }
    const mod = loaded.mod;
    if (typeof mod.default !== "function") throw new TypeError("The code must export a default function");
    if (msg.type === "run") await (mod.default as (e: unknown, d: typeof db) => unknown)(msg.event, db);
    self.postMessage({ type: "done" });
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    self.postMessage({ type: "error", message: e.message || e.name, stack: e.stack ?? "" });
  }
};
