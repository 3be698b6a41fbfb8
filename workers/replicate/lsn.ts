/**
 * Log sequence numbers as `bigint`, so that positions compare with `<` and subtract into byte counts.
 * Postgres prints them as two hex halves (`16/B374D848`).
 */

/** Parses `X/Y` into a bigint. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new RangeError(`Cannot parse LSN: ${JSON.stringify(text)} is not of the form X/Y`);
  return (BigInt("0x" + m[1]) << 32n) | BigInt("0x" + m[2]);
}

/** Formats a bigint as `X/Y` (upper-case hex, like Postgres). */
export function formatLsn(lsn: bigint): string {
  if (lsn < 0n) throw new RangeError("Cannot format a negative LSN");
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
