/**
 * Which environment variables a process reads, found in its source rather than kept by hand, so that a
 * variable added to a worker shows up in the deploy checks the day it is added.
 *
 * The files scanned are the process's own module graph (`deno info --json <entry>`, local files only:
 * the entry, its folder's modules and the `shared/` modules it imports) plus any extra modules it
 * embeds. In each file, comments and strings aside, a variable counts as read when it appears as:
 *
 * - the argument of an env getter: `Deno.env.get("X")`, `env.get("X")`, `envGet("X")`, `getEnv("X")`;
 * - a string in an array literal passed to such a function: `databaseUrlFromEnv(env, ["pcred", "PCRED"])`;
 * - a property of an env record: `env.X`, `env?.X`, `env["X"]`, `processEnv().X`;
 * - a key of a zod config schema: a `z.object({…})` or `.extend({…})` whose keys include at least one
 *   UPPER_SNAKE name is taken as an env schema, and all its keys count (so merflow's lower-case `pcred`
 *   counts when it sits beside `REDIS_URL`; a request-body schema with only lower-case keys does not).
 *
 * A name built at run time (`Deno.env.get(prefix + "_URL")`) cannot be seen: write names out.
 */
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/** The text of `source` with comments blanked out and string contents kept (names live in strings). */
export function stripComments(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i], n = source[i + 1];
    if (c === "/" && n === "/") {
      while (i < source.length && source[i] !== "\n") i++;
    } else if (c === "/" && n === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end < 0 ? source.length : end + 2;
      out += source.slice(i, stop).replace(/[^\n]/g, " ");
      i = stop;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < source.length && source[j] !== c) j += source[j] === "\\" ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const NAME = "[A-Za-z_][A-Za-z0-9_]*";
const UPPER = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^[A-Z][A-Z0-9]{2,}$/;
const GETTER = new RegExp(
  String
    .raw`(?:Deno\.env\.(?:get|has)|\benv\??\.(?:get|has)|\b[\w$]*[eE]nv[\w$]*)\(\s*["'\x60](${NAME})["'\x60]\s*[,)]`,
  "g",
);
const PROPERTY = new RegExp(
  String.raw`(?:\benv|processEnv\(\)|Deno\.env\.toObject\(\))\??\.(${NAME})\b(?!\s*\()`,
  "g",
);
const INDEX = new RegExp(String.raw`\benv\??\.?\[\s*["'](${NAME})["']\s*\]`, "g");
const NOT_NAMES = new Set(["get", "set", "has", "delete", "toObject", "length"]);

/** The keys at the top level of the object literal starting at `open` (the index of its `{`). */
function topLevelKeys(text: string, open: number): string[] {
  let depth = 0;
  let flat = "";
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      if (depth === 1) flat += text.slice(i, j + 1);
      i = j;
      continue;
    }
    if (c === "{" || c === "(" || c === "[") {
      depth++;
      if (depth === 1) flat += "{";
      continue;
    }
    if (c === "}" || c === ")" || c === "]") {
      depth--;
      if (depth === 0) break;
      continue;
    }
    if (depth === 1) flat += c;
  }
  const keys: string[] = [];
  const re = new RegExp(String.raw`(?:^|[{,])\s*["']?(${NAME})["']?\s*:`, "g");
  for (const m of flat.matchAll(re)) keys.push(m[1]);
  return keys;
}

/** The text between the bracket at `open` and its match (strings skipped whole). */
function balanced(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      i = j;
    } else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") {
      depth--;
      if (depth === 0) return text.slice(open + 1, i);
    }
  }
  return text.slice(open + 1);
}

/** The env variable names read in one file's text (see the module doc for what counts). */
export function envNamesIn(source: string): Set<string> {
  const text = stripComments(source);
  const names = new Set<string>();
  for (const m of text.matchAll(GETTER)) names.add(m[1]);
  for (const m of text.matchAll(/\b[\w$]*[eE]nv[\w$]*\(/g)) {
    const args = balanced(text, m.index! + m[0].length - 1);
    for (const arr of args.matchAll(/\[([^\[\]]*)\]/g)) {
      for (const lit of arr[1].matchAll(new RegExp(String.raw`["'](${NAME})["']`, "g"))) names.add(lit[1]);
    }
  }
  for (const m of text.matchAll(PROPERTY)) if (!NOT_NAMES.has(m[1])) names.add(m[1]);
  for (const m of text.matchAll(INDEX)) names.add(m[1]);
  for (const m of text.matchAll(/(?:\bz\.object|\.extend)\(\s*\{/g)) {
    const keys = topLevelKeys(text, m.index! + m[0].length - 1);
    if (keys.some((k) => UPPER.test(k))) { for (const k of keys) names.add(k); }
  }
  return names;
}

/** The local files of a module graph (`deno info --json`), test files left out. */
export async function localModules(entry: string, root = ROOT): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `Cannot read the module graph of ${entry}: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string; local?: string }[];
  };
  const files: string[] = [];
  for (const m of info.modules) {
    if (!m.specifier.startsWith("file://")) continue;
    const path = fromFileUrl(m.specifier);
    if (path.includes("/node_modules/") || /_test\.tsx?$/.test(path)) continue;
    if (/\.(ts|tsx|js|mjs)$/.test(path)) files.push(path);
  }
  return files.sort();
}

/**
 * The variables a process reads: the names found in every local module of its graph from `entry`,
 * plus those in `extraModules` (modules embedded with `--include`). Paths are relative to `root`.
 */
export async function envReads(
  entry: string,
  extraModules: string[] = [],
  root = ROOT,
): Promise<Set<string>> {
  const files = new Set(await localModules(entry, root));
  for (const extra of extraModules) {
    if (/\.(ts|tsx|js)$/.test(extra)) files.add(join(root, extra));
  }
  const names = new Set<string>();
  for (const f of files) for (const n of envNamesIn(await Deno.readTextFile(f))) names.add(n);
  return names;
}
