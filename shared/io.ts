/** Small I/O helpers shared by the workers and the clients. */

/** Writes all of `data` to `w` (a socket or a file: one `write` may take only part of it). */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}
