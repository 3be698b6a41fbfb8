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
 * - a property of a local alias of an env record: `const e = env ?? {}; e.X`.
 *
 * Only code the process can reach counts. A module of another part (a web route importing one helper of
 * a worker's config module) must not charge the process with that worker's whole config schema, so
 * each file is split into its top-level statements and only the live ones are scanned: top-level code
 * (it runs at import), the declarations the entry and embedded modules make (all of them), and
 * declarations another live statement refers to, by name in the same file or through an import
 * (followed to a fixed point). Reads in a `const` initialiser count whether it is live or not (an
 * initialiser runs at import); a schema's keys count only when its declaration is live; type
 * declarations are never scanned.
 *
 * A name built at run time (`Deno.env.get(prefix + "_URL")`) cannot be seen: write names out.
 */
import { join, relative } from "node:path";
import { fileURLToPath as fromFileUrl, pathToFileURL } from "node:url";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/**
 * The text of `source` with comments blanked out, string contents kept (names live in strings) and the
 * bodies of regular-expression literals blanked (their slashes, quotes and brackets are not code).
 */
export function stripComments(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i], n = source[i + 1];
    if (
      c === "/" && n !== "/" && n !== "*" &&
      /(?:^|[(,=:[!&|?{};+\-*%<>~^]|\breturn|\btypeof)\s*$/.test(out.slice(-12))
    ) {
      // A regular-expression literal: up to the closing slash outside a character class, on this line.
      let j = i + 1, inClass = false;
      while (j < source.length && source[j] !== "\n") {
        if (source[j] === "\\") j++;
        else if (source[j] === "[") inClass = true;
        else if (source[j] === "]") inClass = false;
        else if (source[j] === "/" && !inClass) break;
        j++;
      }
      if (source[j] !== "/") {
        out += c;
        i++;
        continue;
      }
      out += "/" + " ".repeat(j - i - 1) + "/";
      i = j + 1;
    } else if (c === "/" && n === "/") {
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
  return namesIn(stripComments(source), true);
}

const ALIAS = new RegExp(
  String.raw`\b(?:const|let)\s+(${NAME})\s*=\s*(?:[\w$]+\??\.)*env\s*(?:\?\?\s*\{\s*\})?\s*;`,
  "g",
);

/** The names read in comment-free `text`; schema keys only when `schemas` (the declaration is live). */
function namesIn(text: string, schemas: boolean): Set<string> {
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
  for (const a of text.matchAll(ALIAS)) {
    for (const m of text.matchAll(new RegExp(String.raw`\b${a[1]}\??\.(${NAME})\b(?!\s*\()`, "g"))) {
      if (!NOT_NAMES.has(m[1])) names.add(m[1]);
    }
  }
  if (!schemas) return names;
  for (const m of text.matchAll(/(?:\bz\.object|\.extend)\(\s*\{/g)) {
    const keys = topLevelKeys(text, m.index! + m[0].length - 1);
    if (keys.some((k) => UPPER.test(k))) { for (const k of keys) names.add(k); }
  }
  return names;
}

/** One top-level statement of a module. */
export interface Statement {
  /**
   * `code` runs at import; `value` is a const/let/var declaration (its initialiser runs at import);
   * `callable` a function, class or enum (its body runs when used); `type` a type or interface;
   * `import` an import or a re-export.
   */
  kind: "code" | "value" | "callable" | "type" | "import";
  /** The declared name (declarations only). */
  name?: string;
  text: string;
}

const DECLARATION =
  /^(?:export\s+)?(?:declare\s+)?(?:async\s+)?(function\*?|class|const|let|var|type|interface|enum)\s+([A-Za-z_$][\w$]*)/;

/**
 * The top-level statements of comment-free module text. A statement starts on a line that begins in
 * column 0 outside any bracket (the layout `deno fmt` gives); strings are skipped so their brackets do
 * not count (a quote only runs to the end of its line, so a quote inside a regular expression cannot
 * swallow the file).
 */
export function statementsOf(text: string): Statement[] {
  const starts: number[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if ((i === 0 || text[i - 1] === "\n") && depth <= 0 && /[^\s)\]}]/.test(c)) {
      depth = 0;
      starts.push(i);
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < text.length && text[j] !== c && text[j] !== "\n") j += text[j] === "\\" ? 2 : 1;
      i = text[j] === "\n" ? j - 1 : j;
    } else if (c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      i = j;
    } else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
  }
  return starts.map((start, k) => {
    const stmt = text.slice(start, starts[k + 1] ?? text.length);
    if (/^(?:import\b|export\s+(?:type\s+)?(?:\*|\{[^}]*\})\s*(?:as\s+\w+\s*)?from\b)/.test(stmt)) {
      return { kind: "import", text: stmt };
    }
    const d = DECLARATION.exec(stmt);
    if (!d) return { kind: "code", text: stmt };
    const kind = /^(?:type|interface)$/.test(d[1])
      ? "type"
      : /^(?:const|let|var)$/.test(d[1])
      ? "value"
      : "callable";
    return { kind, name: d[2], text: stmt };
  });
}

/** What one import statement binds: local name → exported name (`*` for a namespace or `export *`). */
function importBindings(stmt: string): { spec: string; bindings: Map<string, string>; typeOnly: boolean } {
  const spec = /from\s*["']([^"']+)["']/.exec(stmt)?.[1] ?? /^import\s*["']([^"']+)["']/.exec(stmt)?.[1] ??
    "";
  const typeOnly = /^(?:import|export)\s+type\b/.test(stmt);
  const bindings = new Map<string, string>();
  const clause = stmt.replace(/\s*from\s*["'][^"']+["'][\s\S]*$/, "").replace(
    /^(?:import|export)\s+(?:type\s+)?/,
    "",
  );
  const ns = /\*\s*(?:as\s+([A-Za-z_$][\w$]*))?/.exec(clause);
  if (ns) bindings.set(ns[1] ?? "*", "*");
  const braces = /\{([^}]*)\}/.exec(clause);
  for (const part of braces?.[1].split(",") ?? []) {
    const m = /^\s*(type\s+)?([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*))?\s*$/.exec(part);
    if (m && !m[1]) bindings.set(m[3] ?? m[2], m[2]);
  }
  const def = /^([A-Za-z_$][\w$]*)\s*(?:,|$)/.exec(clause.trim());
  if (def && stmt.startsWith("import")) bindings.set(def[1], "default");
  return { spec, bindings, typeOnly };
}

/**
 * The names read by the reachable code of a module graph: `files` are its modules, `roots` those whose
 * every declaration counts (the entry, embedded modules). See the module doc.
 */
export async function liveEnvNames(files: string[], roots: string[]): Promise<Set<string>> {
  const stmts = new Map<string, Statement[]>();
  for (const f of files) stmts.set(f, statementsOf(stripComments(await Deno.readTextFile(f))));
  /** Per file: local name → [file, exported name] for imports and re-exports into the graph. */
  const links = new Map<string, Map<string, [string, string]>>();
  /** Per file: `export * from` targets. */
  const starExports = new Map<string, string[]>();
  const live = new Map<string, Set<string> | "all">();
  for (const f of files) live.set(f, new Set());
  for (const r of roots) live.set(r, "all");
  let changed = true;
  const mark = (file: string, name: string) => {
    const cur = live.get(file);
    if (cur === undefined || cur === "all") return;
    if (name === "*" || name === "default") {
      live.set(file, "all");
      changed = true;
    } else if (!cur.has(name)) {
      cur.add(name);
      changed = true;
    }
  };
  for (const f of files) {
    const map = new Map<string, [string, string]>();
    const stars: string[] = [];
    for (const s of stmts.get(f)!) {
      for (const m of s.text.matchAll(/\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) {
        const target = fromFileUrl(new URL(m[1], pathToFileURL(f)));
        if (live.has(target)) live.set(target, "all");
      }
      if (s.kind !== "import") continue;
      const { spec, bindings, typeOnly } = importBindings(s.text);
      if (typeOnly || !spec.startsWith(".")) continue;
      const target = fromFileUrl(new URL(spec, pathToFileURL(f)));
      if (!live.has(target)) continue;
      if (s.text.startsWith("export") && bindings.get("*") === "*" && bindings.size === 1) stars.push(target);
      for (const [local, exported] of bindings) map.set(local, [target, exported]);
    }
    links.set(f, map);
    starExports.set(f, stars);
  }
  const isLive = (f: string, s: Statement) => {
    const l = live.get(f)!;
    return s.kind === "code" || (s.kind !== "type" && s.kind !== "import" && (l === "all" || l.has(s.name!)));
  };
  while (changed) {
    changed = false;
    for (const f of files) {
      const declared = new Set(stmts.get(f)!.filter((s) => s.name && s.kind !== "type").map((s) => s.name!));
      const map = links.get(f)!;
      const l = live.get(f)!;
      for (const s of stmts.get(f)!) {
        if (s.kind === "import") {
          // A re-export is live when its exported name is.
          const { bindings } = importBindings(s.text);
          if (!s.text.startsWith("export")) continue;
          for (const [local] of bindings) {
            if (l === "all" || (l as Set<string>).has(local)) {
              const link = map.get(local);
              if (link) mark(link[0], link[1]);
            }
          }
          continue;
        }
        if (!isLive(f, s)) continue;
        for (const m of s.text.matchAll(/[A-Za-z_$][\w$]*/g)) {
          const id = m[0];
          if (id === s.name) continue;
          if (declared.has(id)) mark(f, id);
          const link = map.get(id);
          if (link) mark(link[0], link[1]);
        }
      }
      // `export * from`: a name asked of this file may be one of the target's.
      if (l === "all" || l.size) { for (const t of starExports.get(f)!) mark(t, "*"); }
    }
  }
  const names = new Set<string>();
  for (const f of files) {
    for (const s of stmts.get(f)!) {
      if (s.kind === "type" || s.kind === "import") continue;
      const reachable = isLive(f, s);
      if (!reachable && s.kind !== "value") continue;
      for (const n of namesIn(s.text, reachable)) names.add(n);
    }
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
    // Third-party code, from npm or vendored (vendor/), is not wharf's configuration surface.
    const vendored = relative(root, path).split(/[\\/]/)[0] === "vendor";
    if (path.includes("/node_modules/") || vendored || /_test\.tsx?$/.test(path)) continue;
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
  const roots = [join(root, entry)];
  for (const extra of extraModules) {
    if (/\.(ts|tsx|js)$/.test(extra)) {
      files.add(join(root, extra));
      roots.push(join(root, extra));
    }
  }
  return await liveEnvNames([...files], roots);
}
