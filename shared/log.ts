/**
 * Structured JSON logging with secret redaction.
 *
 * Every line is one JSON object on stderr (stdout stays free for a program's own output, such as a
 * bench table). Redaction happens here, once, so that no caller has to remember it: fields whose name
 * looks like a credential are replaced, and credentials embedded in connection URLs are masked wherever
 * they appear in a string.
 */

/** Log levels in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Field names whose values are never written, whatever their content. */
const SECRET_KEY =
  /pass(word)?|secret|token|api[_-]?key|private[_-]?key|authorization|cookie|credential|passphrase|^pcred$|signature/i;

/** `scheme://user:password@host` → `scheme://user:***@host`. */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):[^@\s/]*@/gi;

/** The placeholder written in place of a secret. */
export const REDACTED = "[redacted]";

/** Masks the password part of every URL inside `text`. */
export function redactString(text: string): string {
  return text.replace(URL_CREDENTIALS, "$1:***@");
}

/**
 * Returns a copy of `value` that is safe to log: secret-named fields replaced, URLs masked, errors turned
 * into plain objects (message, name, code, stack), cycles cut.
 */
export function redact(value: unknown, seen: WeakSet<object> = new WeakSet()): unknown {
  if (typeof value === "string") return redactString(value);
  if (value === null || typeof value !== "object") {
    return typeof value === "bigint" ? value.toString() : value;
  }
  if (seen.has(value)) return "[circular]";
  seen.add(value);
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: redactString(value.message) };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.stack) out.stack = redactString(value.stack);
    if (value.cause !== undefined) out.cause = redact(value.cause, seen);
    return out;
  }
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map((v) => redact(v, seen));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) && v !== undefined && v !== null && v !== "" ? REDACTED : redact(v, seen);
  }
  return out;
}

/** A logger bound to a component name and a set of context fields. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger whose lines also carry `fields` (a worker id, a queue name, a request id). */
  child(fields: Record<string, unknown>): Logger;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written; defaults to `WHARF_LOG_LEVEL` or `info`. */
  level?: LogLevel;
  /** Where lines go; defaults to stderr. Tests pass a collector. */
  write?: (line: string) => void;
  /** Fields added to every line. */
  fields?: Record<string, unknown>;
}

function envLevel(): LogLevel {
  try {
    const v = Deno.env.get("WHARF_LOG_LEVEL");
    if (v && v in LEVELS) return v as LogLevel;
  } catch {
    // No env permission: fall back to the default.
  }
  return "info";
}

const encoder = new TextEncoder();
function writeStderr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** Creates a logger for the component `name` (`hydrate`, `web`, `dispatch`…). */
export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? envLevel()];
  const write = options.write ?? writeStderr;
  const base = options.fields ?? {};
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return;
    const line = redact({ ts: new Date().toISOString(), level, component: name, msg, ...base, ...fields });
    write(JSON.stringify(line));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) =>
      createLogger(name, { ...options, level: options.level, write, fields: { ...base, ...fields } }),
  };
}
