/**
 * `deno task console:admin NAME`: creates a console admin or sets its password; `--disable` locks it
 * out (its sessions stop working at once). The password comes from `WHARF_ADMIN_PASSWORD` or the first
 * line of standard input, never from the command line, where `ps` and shell history would keep it.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { loadConfig, urlVar } from "../../shared/config.ts";
import { connectPostgres } from "../../shared/db.ts";
import { upsertAdmin } from "./auth.ts";

async function readLine(): Promise<string> {
  const dec = new TextDecoder();
  let text = "";
  for await (const chunk of Deno.stdin.readable) {
    text += dec.decode(chunk, { stream: true });
    if (text.includes("\n")) break;
  }
  return text.split("\n")[0].replace(/\r$/, "");
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { disable: { type: "boolean" } },
    allowPositionals: true,
  });
  const name = positionals[0];
  if (!name || !/^[A-Za-z0-9_.@-]{1,64}$/.test(name)) {
    console.error(
      "Usage: deno task console:admin NAME [--disable]  (password in WHARF_ADMIN_PASSWORD or stdin)",
    );
    Deno.exit(2);
  }
  const { DATABASE_URL } = loadConfig(z.object({ DATABASE_URL: urlVar(["postgres:", "postgresql:"]) }));
  const sql = connectPostgres(DATABASE_URL, { max: 1, applicationName: "wharf-console-admin" });
  try {
    if (values.disable) {
      const rows = await sql`update control.console_admins set disabled = true, updated_at = now()
                              where name = ${name} returning id`;
      await sql`delete from control.console_sessions where admin_id = ${rows[0]?.id ?? 0}`;
      console.log(rows.length ? `disabled ${name}` : `no admin named ${name}`);
      if (!rows.length) Deno.exit(1);
    } else {
      const password = Deno.env.get("WHARF_ADMIN_PASSWORD") ?? await readLine();
      await upsertAdmin(sql, name, password);
      console.log(`admin ${name} is ready`);
    }
  } catch (e) {
    console.error((e as Error).message);
    Deno.exitCode = 1;
  } finally {
    await sql.end();
  }
}
