/**
 * A small five-field cron parser (minute hour day-of-month month day-of-week, UTC) so that schedules
 * need no dependency. Supports `*`, lists `a,b`, ranges `a-b`, steps `*\/n` and `a-b/n`, and 0 or 7 for
 * Sunday. Day-of-month and day-of-week follow Vixie cron: when both are restricted, either may match.
 */
import { WharfError } from "../../shared/errors.ts";

/** A parsed cron expression. */
export interface Cron {
  minutes: Set<number>;
  hours: Set<number>;
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  daysRestricted: boolean;
  weekdaysRestricted: boolean;
}

const FIELDS: [string, number, number][] = [
  ["minute", 0, 59],
  ["hour", 0, 23],
  ["day of month", 1, 31],
  ["month", 1, 12],
  ["day of week", 0, 7],
];

function parseField(text: string, name: string, min: number, max: number): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new WharfError(400, `Cannot parse cron ${name} as it is not valid: ${part}`);
    let lo = min, hi = max;
    if (m[1] !== "*") {
      lo = Number(m[2]);
      hi = m[3] !== undefined ? Number(m[3]) : (m[4] !== undefined ? max : lo);
    }
    const step = m[4] !== undefined ? Number(m[4]) : 1;
    if (lo < min || hi > max || lo > hi || step < 1) {
      throw new WharfError(400, `Cannot parse cron ${name} as it is out of range: ${part}`);
    }
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** Parses a five-field expression; throws a 400 {@linkcode WharfError} naming the bad field. */
export function parseCron(expr: string): Cron {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) throw new WharfError(400, "Cannot parse cron as it needs five fields");
  const [minutes, hours, days, months, weekdaysRaw] = parts.map((p, i) =>
    parseField(p, FIELDS[i][0], FIELDS[i][1], FIELDS[i][2])
  );
  const weekdays = new Set([...weekdaysRaw].map((d) => d % 7));
  return {
    minutes,
    hours,
    days,
    months,
    weekdays,
    daysRestricted: parts[2] !== "*",
    weekdaysRestricted: parts[4] !== "*",
  };
}

function dayMatches(c: Cron, d: Date): boolean {
  const dom = c.days.has(d.getUTCDate());
  const dow = c.weekdays.has(d.getUTCDay());
  if (c.daysRestricted && c.weekdaysRestricted) return dom || dow;
  return dom && dow;
}

/** The first minute strictly after `after` that matches (UTC), or undefined within five years. */
export function nextRun(c: Cron, after: Date): Date | undefined {
  const d = new Date(after.getTime());
  d.setUTCSeconds(0, 0);
  d.setUTCMinutes(d.getUTCMinutes() + 1);
  const limit = after.getTime() + 5 * 366 * 86_400_000;
  while (d.getTime() <= limit) {
    if (!c.months.has(d.getUTCMonth() + 1)) {
      d.setUTCMonth(d.getUTCMonth() + 1, 1);
      d.setUTCHours(0, 0);
      continue;
    }
    if (!dayMatches(c, d)) {
      d.setUTCDate(d.getUTCDate() + 1);
      d.setUTCHours(0, 0);
      continue;
    }
    if (!c.hours.has(d.getUTCHours())) {
      d.setUTCHours(d.getUTCHours() + 1, 0);
      continue;
    }
    if (!c.minutes.has(d.getUTCMinutes())) {
      d.setUTCMinutes(d.getUTCMinutes() + 1);
      continue;
    }
    return d;
  }
  return undefined;
}
