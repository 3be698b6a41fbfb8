/**
 * Formatting shared by server pages and islands, so a live update renders exactly what the server did.
 */

/** "12 s ago", "3 min ago", "2 h ago"; "in 40 s" for the future; "never" for null. */
export function ago(at: string | Date | null | undefined, now = Date.now()): string {
  if (!at) return "never";
  const s = Math.round((now - new Date(at).getTime()) / 1000);
  const a = Math.abs(s);
  const text = a < 90
    ? `${a} s`
    : a < 90 * 60
    ? `${Math.round(a / 60)} min`
    : a < 36 * 3600
    ? `${Math.round(a / 3600)} h`
    : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** A timestamp as `YYYY-MM-DD HH:MM:SS` UTC; empty for null. */
export function stamp(at: string | Date | null | undefined): string {
  if (!at) return "";
  return new Date(at).toISOString().replace("T", " ").slice(0, 19);
}

/** Milliseconds between two timestamps, as "120 ms" or "3.2 s"; empty when one is missing. */
export function duration(
  from: string | Date | null | undefined,
  to: string | Date | null | undefined,
): string {
  if (!from || !to) return "";
  const ms = new Date(to).getTime() - new Date(from).getTime();
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** A whole number with thin-space thousands. */
export function count(n: number | null | undefined): string {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
}
