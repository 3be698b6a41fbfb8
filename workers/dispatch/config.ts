/**
 * Where a dispatch node finds its database, schema and bind address. Four sources, highest first:
 * environment (`DISPATCH_SCHEMA`, `DATABASE_URL`, `DISPATCH_BIND`, `PGUSER`, `PGPASSWORD`), arguments in
 * any order (a `postgres://` URL, a `host:port` bind, anything else is the schema), a file
 * (`DISPATCH_CONFIG`, or `--config=path`; a file or a folder holding `dispatch.conf`, lines like
 * `schema = control`, `url: postgres://…`, `bind=0.0.0.0:8881`, `user`, `password`), then defaults.
 */
import { WharfError } from "../../shared/errors.ts";

/** The resolved settings. */
export interface NodeSettings {
  schema: string;
  url: string;
  bind: string;
  /** Which source each setting came from, for the startup log (never the values). */
  sources: Record<"schema" | "url" | "bind" | "user" | "password", "env" | "args" | "file" | "default">;
}

type Partial5 = { schema?: string; url?: string; bind?: string; user?: string; password?: string };

/** Defaults: the `control` schema, a local database, `localhost:8881`. */
export const DEFAULTS = {
  schema: "control",
  url: "postgres://localhost:5432/postgres",
  bind: "localhost:8881",
};

/** Reads `key = value` / `key: value` lines (any other line is ignored), or a JSON object. */
export function parseConfigText(text: string): Partial5 {
  const out: Partial5 = {};
  const keys = ["schema", "url", "bind", "user", "password"] as const;
  try {
    const j = JSON.parse(text);
    if (j && typeof j === "object") {
      for (const k of keys) if (typeof j[k] === "string") out[k] = j[k];
      return out;
    }
  } catch { /* not JSON */ }
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(schema|url|bind|user|password)\s*[:=]\s*["']?([^"'\s]+)["']?\s*$/i.exec(line);
    if (m) out[m[1].toLowerCase() as keyof Partial5] = m[2];
  }
  return out;
}

/** Sorts free arguments: a postgres URL, a host:port bind, else the schema. */
export function parseArgs(args: string[]): Partial5 & { config?: string } {
  const out: Partial5 & { config?: string } = {};
  for (const a of args) {
    if (a.startsWith("--config=")) out.config = a.slice("--config=".length);
    else if (/^postgres(ql)?:\/\//.test(a)) out.url = a;
    else if (/^[^\s:/]*:\d{1,5}$/.test(a)) out.bind = a;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(a)) out.schema = a;
    else throw new WharfError(400, "Cannot read argument as it is not a schema, postgres URL or host:port");
  }
  return out;
}

function readFileConfig(path: string | undefined): Partial5 {
  if (!path) return {};
  let p = path;
  try {
    if (Deno.statSync(p).isDirectory) p = `${p.replace(/\/$/, "")}/dispatch.conf`;
    return parseConfigText(Deno.readTextFileSync(p));
  } catch (e) {
    throw new WharfError(400, "Cannot read the dispatch config file", { cause: e });
  }
}

/** Merges env > args > file > default; user and password are applied to the URL. */
export function resolveSettings(env: Record<string, string | undefined>, args: string[]): NodeSettings {
  const a = parseArgs(args);
  const f = readFileConfig(env.DISPATCH_CONFIG ?? a.config);
  const e: Partial5 = {
    schema: env.DISPATCH_SCHEMA || undefined,
    url: env.DATABASE_URL || undefined,
    bind: env.DISPATCH_BIND || undefined,
    user: env.PGUSER || undefined,
    password: env.PGPASSWORD || undefined,
  };
  const sources = {} as NodeSettings["sources"];
  const pick = (k: keyof Partial5): string | undefined => {
    for (const [name, src] of [["env", e], ["args", a], ["file", f]] as const) {
      if (src[k] !== undefined) {
        sources[k] = name;
        return src[k];
      }
    }
    sources[k] = "default";
    return (DEFAULTS as Record<string, string>)[k];
  };
  const schema = pick("schema")!;
  const url = new URL(pick("url")!);
  const bind = pick("bind")!;
  const user = pick("user");
  const password = pick("password");
  if (user) url.username = encodeURIComponent(user);
  if (password) url.password = encodeURIComponent(password);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(schema)) {
    throw new WharfError(400, "Cannot use the schema as it is not a plain identifier");
  }
  return { schema, url: url.toString(), bind, sources };
}
