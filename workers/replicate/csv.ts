/**
 * The batch file format, shared by every target: CSV where every non-null value is quoted and NULL is
 * the unquoted marker `\N`. Quoting everything is what makes an empty string (`""`) differ from NULL
 * (`\N`), and keeps commas, quotes, newlines and backslashes inside a value as they are. Both Postgres
 * (`COPY … (FORMAT csv, NULL '\N')`) and Redshift (`CSV NULL AS '\\N'`) read it.
 *
 * Values arrive as Postgres's text output: `bytea` is hex (`\x00ff…`), so a NUL byte in binary data
 * round-trips; a `text` value can never hold NUL (Postgres refuses it at insert time).
 */

/** The unquoted NULL marker. */
export const NULL_MARKER = "\\N";

/** One CSV field. `null`/`undefined` become the NULL marker. */
export function csvField(value: string | null | undefined): string {
  if (value === null || value === undefined) return NULL_MARKER;
  return '"' + value.replaceAll('"', '""') + '"';
}

/** One CSV line, with its newline. */
export function csvLine(values: (string | null | undefined)[]): string {
  let out = "";
  for (let i = 0; i < values.length; i++) {
    if (i) out += ",";
    out += csvField(values[i]);
  }
  return out + "\n";
}

/**
 * Parses text in the format above back into rows (quoted fields are strings, the bare marker is null).
 * Used by tests and by tools that read a batch file; the loaders hand files to the database instead.
 */
export function parseCsv(text: string): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let row: (string | null)[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === '"') {
      let v = "";
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new SyntaxError("Cannot parse CSV: a quoted field is not closed");
        v += text.slice(i, q);
        if (text[q + 1] === '"') {
          v += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      row.push(v);
    } else {
      let j = i;
      while (j < text.length && text[j] !== "," && text[j] !== "\n") j++;
      const raw = text.slice(i, j);
      if (raw !== NULL_MARKER) {
        throw new SyntaxError(`Cannot parse CSV: unquoted field ${JSON.stringify(raw)}`);
      }
      row.push(null);
      i = j;
    }
    if (text[i] === ",") i++;
    else if (text[i] === "\n" || i >= text.length) {
      rows.push(row);
      row = [];
      i++;
    }
  }
  return rows;
}

/**
 * Drops the first three fields (`_seq, _op, _unchanged`) of every record of a change file, as bytes
 * stream by, so that an inserts-only batch can be copied straight into its table. Records are found by
 * quote parity (a newline inside a quoted value does not end a record).
 */
export class ChangeColumnStripper {
  #skipping = true;
  #commas = 0;
  #inQuotes = false;

  /**
   * Returns the part of `chunk` that belongs to the data columns: in a new array, or with `inPlace` in
   * `chunk` itself (its start is overwritten; the output is never longer than the input).
   */
  push(chunk: Uint8Array, inPlace = false): Uint8Array {
    const n = chunk.length;
    const out = inPlace ? chunk : new Uint8Array(n);
    let w = 0;
    let i = 0;
    let inQuotes = this.#inQuotes;
    let commas = this.#commas;
    let skipping = this.#skipping;
    while (i < n) {
      if (skipping) {
        for (; i < n; i++) {
          const c = chunk[i];
          if (c === 34) inQuotes = !inQuotes;
          else if (c === 44 && !inQuotes && ++commas === 3) {
            i++;
            skipping = false;
            break;
          }
        }
      } else {
        for (; i < n; i++) {
          const c = chunk[i];
          out[w++] = c;
          if (c === 34) inQuotes = !inQuotes;
          else if (c === 10 && !inQuotes) {
            i++;
            skipping = true;
            commas = 0;
            break;
          }
        }
      }
    }
    this.#inQuotes = inQuotes;
    this.#commas = commas;
    this.#skipping = skipping;
    return out.subarray(0, w);
  }
}
