/**
 * Finds the programs the stack needs and, on a Debian machine where we are root, installs the missing
 * ones with apt. Elsewhere it prints exactly what to install and stops.
 */
import { run } from "./process.ts";

/** A program the stack needs and the Debian package that provides it. */
export interface Requirement {
  /** Shown to the user. */
  label: string;
  /** Debian package name. */
  pkg: string;
  /** Returns true when the program is already there. */
  present(): boolean;
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The first directory on PATH holding `name`, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && fileExists(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (fileExists(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

/**
 * The PostgreSQL server's bin folder: `WHARF_PG_BIN`, else Debian's `/usr/lib/postgresql/15/bin`, else the
 * newest `/usr/lib/postgresql/N/bin`, else the folder of `postgres` on PATH.
 */
export function postgresBinDir(): string | undefined {
  const fromEnv = Deno.env.get("WHARF_PG_BIN");
  if (fromEnv) return fromEnv;
  if (fileExists("/usr/lib/postgresql/15/bin/postgres")) return "/usr/lib/postgresql/15/bin";
  try {
    const versions = [...Deno.readDirSync("/usr/lib/postgresql")]
      .map((e) => Number(e.name))
      .filter((n) => Number.isFinite(n))
      .sort((a, b) => b - a);
    for (const v of versions) {
      if (fileExists(`/usr/lib/postgresql/${v}/bin/postgres`)) return `/usr/lib/postgresql/${v}/bin`;
    }
  } catch { /* no Debian layout */ }
  const p = which("postgres");
  return p ? p.slice(0, p.lastIndexOf("/")) : undefined;
}

/** The base requirements: Postgres and Redis. Parts of wharf add their own (etcd, patroni, chromium). */
export const BASE_REQUIREMENTS: Requirement[] = [
  { label: "PostgreSQL server", pkg: "postgresql", present: () => postgresBinDir() !== undefined },
  { label: "Redis server", pkg: "redis-server", present: () => which("redis-server") !== undefined },
];

/** Requirements of the browser tests. */
export const BROWSER_REQUIREMENT: Requirement = {
  label: "Chromium",
  pkg: "chromium",
  present: () => fileExists("/usr/bin/chromium"),
};

/**
 * Makes sure every requirement is present: installs the missing ones with apt when running as root on
 * a machine with apt-get, otherwise throws with the exact command to run.
 */
export async function ensurePackages(reqs: Requirement[], say: (line: string) => void = console.log) {
  const missing = reqs.filter((r) => !r.present());
  if (!missing.length) return;
  const pkgs = [...new Set(missing.map((r) => r.pkg))];
  const canApt = Deno.uid() === 0 && which("apt-get") !== undefined;
  if (!canApt) {
    throw new Error(
      `Cannot start: missing ${missing.map((r) => r.label).join(", ")}. ` +
        `Install them with: sudo apt-get install -y ${pkgs.join(" ")}`,
    );
  }
  say(`installing ${pkgs.join(", ")} with apt-get (once)…`);
  const env = { ...Deno.env.toObject(), DEBIAN_FRONTEND: "noninteractive" };
  try {
    await run("apt-get", ["install", "-y", "--no-install-recommends", ...pkgs], { env });
  } catch {
    // The package lists of a fresh machine may be empty or stale: refresh them once and retry.
    await run("apt-get", ["update"], { env });
    await run("apt-get", ["install", "-y", "--no-install-recommends", ...pkgs], { env });
  }
  const still = reqs.filter((r) => !r.present());
  if (still.length) {
    throw new Error(
      `Cannot start: ${still.map((r) => r.label).join(", ")} still missing after apt-get install`,
    );
  }
}
