/**
 * The benchmark contract: every bench prints a readable table and, as its very last line, one JSON
 * object `{"bench": name, "ratio": ours ÷ peer (higher is better), ...figures}`.
 */
import { join } from "node:path";
import { startPostgres } from "../shared/stack/postgres.ts";
import { freePort } from "../shared/stack/process.ts";

/** One row of a bench table: a label and its figures. */
export type Row = Record<string, string | number>;

function cell(v: string | number): string {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return Math.abs(v) >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(2);
  }
  return v;
}

/** Formats rows as an aligned text table (columns from the first row's keys). */
export function formatTable(rows: Row[]): string {
  if (!rows.length) return "(no rows)";
  const cols = Object.keys(rows[0]);
  const cells = rows.map((r) => cols.map((c) => cell(r[c] ?? "")));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  return [line(cols), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n");
}

/** Prints the table, then the JSON result line last. */
export function report(
  bench: string,
  rows: Row[],
  result: { ratio: number } & Record<string, unknown>,
): void {
  console.log(formatTable(rows));
  console.log(JSON.stringify({ bench, ...result }));
}

/** The p-th percentile (0–100) of `values`, by nearest rank. */
export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Peak resident set size of a process in MiB, from /proc (Linux), or NaN when it cannot be read. */
export function peakRssMiB(pid: number | "self" = "self"): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * The parent and CPU times (user + system, ms) of process `pid` from /proc/<pid>/stat (Linux): its own
 * (`ms`) and that of its children it has reaped (`reapedMs`); undefined for a process that is gone.
 */
export function procStat(pid: number | string): { ppid: number; ms: number; reapedMs: number } | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return {
      ppid: Number(f[1]),
      ms: (Number(f[11]) + Number(f[12])) * 10,
      reapedMs: (Number(f[13]) + Number(f[14])) * 10,
    };
  } catch {
    return undefined;
  }
}

/**
 * CPU time (user + system, ms) used so far by process `pid` and, with `children`, by its child processes,
 * live or exited and reaped (a Postgres server's backends, say); 0 for a process that is gone.
 */
export function cpuMsOf(pid: number, children = false): number {
  const own = procStat(pid);
  let ms = (own?.ms ?? 0) + (children ? own?.reapedMs ?? 0 : 0);
  if (children) {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const st = procStat(e.name);
      if (st?.ppid === pid) ms += st.ms;
    }
  }
  return ms;
}

/**
 * Runs `a` then `b` in even rounds and `b` then `a` in odd ones, so that neither side of a comparison always
 * runs first.
 */
export async function alternate(
  round: number,
  a: () => Promise<void>,
  b: () => Promise<void>,
): Promise<void> {
  for (const f of round % 2 === 0 ? [a, b] : [b, a]) await f();
}

/** The round with the median ratio (the lower of the two middle ones for an even count). */
export function medianRound<T extends { ratio: number }>(rounds: T[]): T {
  return [...rounds].sort((a, b) => a.ratio - b.ratio)[Math.floor((rounds.length - 1) / 2)];
}

/** `row` named with its round (1-based) when there is more than one round. */
export function roundRow(row: Row, round: number, rounds: number): Row {
  return rounds > 1 ? { ...row, system: `${row.system} (round ${round + 1})` } : row;
}

/**
 * A throwaway Postgres for a bench: its own temporary directory (removed by the caller, `dir`), a free
 * loopback port, a random password, durability off (`ephemeral`).
 */
export async function benchPostgres(name: string, settings?: Record<string, string | number>) {
  const dir = await Deno.makeTempDir({ prefix: `wharf-bench-${name}-` });
  const pg = await startPostgres({
    dir: join(dir, "pg"),
    port: freePort(),
    user: "bench",
    password: crypto.randomUUID(),
    ephemeral: true,
    settings,
  });
  return { dir, pg };
}
