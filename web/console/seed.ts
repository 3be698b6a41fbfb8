/**
 * Dev seed: the console admin whose login `deno task dev` prints (`WHARF_ADMIN_USER` /
 * `WHARF_ADMIN_PASSWORD`). Idempotent: an existing admin keeps its row and gets the current password.
 */
import type { SeedStep } from "../../shared/stack/seed.ts";
import { upsertAdmin } from "./auth.ts";

/** The seed step. */
export const consoleSeed: SeedStep = {
  name: "console admin",
  async run({ sql, env }) {
    const password = env.WHARF_ADMIN_PASSWORD;
    if (!password) throw new Error("Cannot seed the console admin as WHARF_ADMIN_PASSWORD is not set");
    await upsertAdmin(sql, env.WHARF_ADMIN_USER || "admin", password);
  },
};
