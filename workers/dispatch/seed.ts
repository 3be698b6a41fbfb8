/**
 * Demo for `deno task dev`: a `public.dispatch_demo` table whose changes run `demo_log`, which writes a
 * line to `public.dispatch_demo_log`; a schedule inserts a demo row every minute so the two dev nodes
 * always have something to do. Idempotent.
 */
import type { SeedStep } from "../../shared/stack/seed.ts";

/** The demo function's code. */
export const DEMO_CODE = `export default async (event, db) => {
  await db.sql\`insert into public.dispatch_demo_log (event_id, op, row_id, message)
                values (\${event.id}, \${event.op ?? event.source}, \${event.row_id}, \${event.new?.message ?? null})\`;
  if (event.source === "schedule") {
    await db.sql\`insert into public.dispatch_demo (message) values (\${"tick " + new Date().toISOString()})\`;
  }
};
`;

/** The seed step. */
export const dispatchSeed: SeedStep = {
  name: "dispatch demo table, function, trigger and schedule",
  async run({ sql }) {
    await sql.begin(async (tx) => {
      await tx`create table if not exists public.dispatch_demo (
        id bigserial primary key, message text not null, created_at timestamptz not null default now())`;
      await tx`create table if not exists public.dispatch_demo_log (
        event_id bigint primary key, op text, row_id text, message text, at timestamptz not null default now())`;
      await tx`
        insert into control.dispatch_functions (name, code) values ('demo_log', ${DEMO_CODE})
        on conflict (name) do update set code = excluded.code, updated_at = now()`;
      await tx`
        insert into control.dispatch_triggers (table_schema, table_name, function_name)
        values ('public', 'dispatch_demo', 'demo_log') on conflict do nothing`;
      await tx`select control.dispatch_install('public', 'dispatch_demo')`;
      await tx`
        insert into control.dispatch_schedules (function_name, cron)
        select 'demo_log', '* * * * *'
         where not exists (select 1 from control.dispatch_schedules where function_name = 'demo_log')`;
    });
  },
};
