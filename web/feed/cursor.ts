/**
 * Opaque page cursors: base64url of `f:<id>`. A keyset on the feed id (newest first) rather than an
 * offset, so a page boundary does not shift when feeds are added or deleted meanwhile.
 */
import { WharfError } from "../../shared/errors.ts";

/** The cursor that continues after feed `id`. */
export function encodeCursor(id: string): string {
  return btoa(`f:${id}`).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The feed id inside `cursor`; a cursor not made by {@linkcode encodeCursor} is a 400. */
export function decodeCursor(cursor: string): string {
  let text = "";
  try {
    text = atob(cursor.replace(/-/g, "+").replace(/_/g, "/"));
  } catch { /* falls through to the error below */ }
  const m = /^f:(\d{1,18})$/.exec(text);
  if (!m) {
    throw new WharfError(400, "Cannot read the cursor: pass next_cursor back unchanged", {
      code: "invalid_cursor",
    });
  }
  return m[1];
}
