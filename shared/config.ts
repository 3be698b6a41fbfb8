/**
 * Configuration from the environment, validated with zod.
 *
 * Workers and web describe their settings as a zod object whose keys are environment variable names;
 * {@linkcode loadConfig} reads them, applies defaults and coercions, and on failure throws one
 * {@linkcode ConfigError} that names every bad variable and why, without ever echoing a value (a value
 * may be a password).
 */
import { z } from "zod";

/** Thrown when the environment does not satisfy a config schema. */
export class ConfigError extends Error {
  readonly problems: { variable: string; message: string }[];
  constructor(problems: { variable: string; message: string }[]) {
    super(
      "Cannot start with this configuration: " +
        problems.map((p) => `${p.variable}: ${p.message}`).join("; "),
    );
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** The process environment as a plain object (empty strings count as unset). */
export function processEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) if (v !== "") out[k] = v;
  return out;
}

/**
 * Validates `env` against `schema`. Keys of the schema are environment variable names.
 *
 * Messages never include the offending value: zod's default messages describe the expected type only,
 * and custom messages in wharf's schemas follow the same rule.
 */
export function loadConfig<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined> = processEnv(),
): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") cleaned[k] = v;
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((i) => ({
      variable: i.path.length ? i.path.map(String).join(".") : "(environment)",
      message: i.message,
    })),
  );
}

/** A TCP port from a string, 0 to 65535 (0 asks the OS for a free one). */
export const portVar = z.coerce.number().int("must be a whole number").min(0).max(65535);

/** A boolean from the usual spellings (`true/false`, `1/0`, `yes/no`, `on/off`). */
export const boolVar = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ["true", "false", "1", "0", "yes", "no", "on", "off"].includes(v), {
    message: "must be true or false",
  })
  .transform((v) => ["true", "1", "yes", "on"].includes(v));

/** A URL whose scheme is one of `schemes` (`postgres:`, `redis:`…). The message never shows the URL. */
export function urlVar(schemes: string[]) {
  return z.string().refine((v) => {
    try {
      return schemes.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, { message: `must be a URL starting with ${schemes.map((s) => s + "//").join(" or ")}` });
}

/** A `host:port` listen address. */
export const listenVar = z.string().regex(/^[^\s:]*:\d{1,5}$/, "must look like host:port");
