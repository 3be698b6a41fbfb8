import { Island } from "../../components/Island.tsx";
import { ago, count, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { ApiForm } from "../../islands/ApiForm.tsx";
import { FunctionEditor } from "../../islands/FunctionEditor.tsx";
import { TestRun } from "../../islands/TestRun.tsx";
import { WharfError } from "../../../shared/errors.ts";
import type { ConsolePage } from "./page.ts";

const NEW_CODE = `export default async (event, db) => {
  // event: { id, source, op, table_schema, table_name, row_id, new, old }
  // db.sql\`...\` runs a parameterised query; db.readonly.sql reads from a follower when there is one.
  console.log("changed", event.table_name, event.row_id);
};
`;

interface FunctionRow {
  name: string;
  enabled: boolean;
  updated_at: Date;
  triggers: number;
  schedules: number;
  pending: number;
  dead: number;
  done_1h: number;
}

interface TriggerRow {
  id: string;
  table_schema: string;
  table_name: string;
  ops: string[];
  enabled: boolean;
  created_at: Date;
}

/** Functions: list, create, edit with inline compile errors, triggers, enable/disable, test-run. */
export const functionsPage: ConsolePage = {
  href: "/console/functions",
  title: "Functions",
  routes(r, kit) {
    r.get("/functions", async (c) => {
      const sql = kit.sql();
      const rows = await sql<FunctionRow[]>`
        select f.name, f.enabled, f.updated_at,
               (select count(*)::int from control.dispatch_triggers t where t.function_name = f.name) as triggers,
               (select count(*)::int from control.dispatch_schedules s where s.function_name = f.name) as schedules,
               (select count(*)::int from control.dispatch_events e
                 where e.function_name = f.name and e.state = 'pending') as pending,
               (select count(*)::int from control.dispatch_events e
                 where e.function_name = f.name and e.state = 'dead') as dead,
               (select count(*)::int from control.dispatch_events e
                 where e.function_name = f.name and e.state = 'done'
                   and e.finished_at > now() - interval '1 hour') as done_1h
          from control.dispatch_functions f order by f.name`;
      return kit.render(c, {
        title: "Functions",
        active: "/console/functions",
        body: (
          <>
            <div class="head">
              <h1>Functions</h1>
              <a class="button" href="/console/functions/new" data-testid="new-function">New function</a>
            </div>
            {rows.length
              ? (
                <div class="table-wrap card">
                  <table data-testid="functions">
                    <thead>
                      <tr>
                        <th>Name</th>
                        <th>State</th>
                        <th>Triggers</th>
                        <th>Schedules</th>
                        <th>Done (1 h)</th>
                        <th>Pending</th>
                        <th>Dead</th>
                        <th>Updated</th>
                      </tr>
                    </thead>
                    <tbody>
                      {rows.map((f) => (
                        <tr data-function={f.name}>
                          <td data-label="Name">
                            <a href={`/console/functions/${encodeURIComponent(f.name)}`}>{f.name}</a>
                          </td>
                          <td data-label="State">
                            <span class={`badge ${f.enabled ? "ok" : "stopped"}`}>
                              {f.enabled ? "enabled" : "disabled"}
                            </span>
                          </td>
                          <td data-label="Triggers">{f.triggers}</td>
                          <td data-label="Schedules">{f.schedules}</td>
                          <td data-label="Done (1 h)">{count(f.done_1h)}</td>
                          <td data-label="Pending">{count(f.pending)}</td>
                          <td data-label="Dead" class={f.dead ? "bad" : ""}>
                            {f.dead
                              ? (
                                <a href={`/console/events?state=dead&function=${encodeURIComponent(f.name)}`}>
                                  {count(f.dead)}
                                </a>
                              )
                              : 0}
                          </td>
                          <td data-label="Updated" title={stamp(f.updated_at)}>{ago(f.updated_at)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )
              : (
                <p class="empty card" data-testid="functions-empty">
                  No function yet. A function is TypeScript run in a sandbox when a table it is attached to
                  changes or a schedule is due. <a href="/console/functions/new">Write the first one</a>.
                </p>
              )}
          </>
        ),
      });
    });

    r.get("/functions/new", (c) =>
      kit.render(c, {
        title: "New function",
        active: "/console/functions",
        body: (
          <>
            <p class="crumbs">
              <a href="/console/functions">Functions</a> /
            </p>
            <h1>New function</h1>
            <section class="card">
              <Island
                component={FunctionEditor}
                props={{ code: NEW_CODE, timeout_ms: 5000, max_attempts: 5, backoff_ms: 500, enabled: true }}
              />
            </section>
          </>
        ),
      }));

    r.get("/functions/:name", async (c) => {
      const sql = kit.sql();
      const name = c.req.param("name");
      const [f] = await sql<
        {
          name: string;
          code: string;
          timeout_ms: number;
          max_attempts: number;
          backoff_ms: number;
          enabled: boolean;
        }[]
      >`select name, code, timeout_ms, max_attempts, backoff_ms, enabled from control.dispatch_functions
         where name = ${name}`;
      if (!f) throw new WharfError(404, `There is no function named ${name}`);
      const triggers = await sql<TriggerRow[]>`
        select id::text, table_schema, table_name, ops, enabled, created_at from control.dispatch_triggers
         where function_name = ${name} order by id`;
      const tables = await sql<{ t: string }[]>`
        select table_schema || '.' || table_name as t from information_schema.tables
         where table_type = 'BASE TABLE'
           and table_schema not in ('pg_catalog', 'information_schema', 'control')
         order by table_schema, table_name limit 500`;
      const fnUrl = `/api/admin/functions/${encodeURIComponent(name)}`;
      const sample = JSON.stringify(
        {
          op: "insert",
          table_schema: triggers[0]?.table_schema ?? "public",
          table_name: triggers[0]?.table_name ?? "example",
          row_id: "1",
          new: { id: 1 },
        },
        null,
        2,
      );
      return kit.render(c, {
        title: name,
        active: "/console/functions",
        body: (
          <>
            <p class="crumbs">
              <a href="/console/functions">Functions</a> /
            </p>
            <div class="head">
              <h1>{name}</h1>
              <span class={`badge ${f.enabled ? "ok" : "stopped"}`}>
                {f.enabled ? "enabled" : "disabled"}
              </span>
              <Island
                component={ApiAction}
                props={{
                  label: f.enabled ? "Disable" : "Enable",
                  method: "PATCH",
                  url: fnUrl,
                  body: { enabled: !f.enabled },
                  testid: "toggle-function",
                }}
              />
              <a href={`/console/events?function=${encodeURIComponent(name)}`}>Events</a>
            </div>
            <section class="card">
              <h2>Code</h2>
              <Island
                component={FunctionEditor}
                props={{
                  name,
                  code: f.code,
                  timeout_ms: f.timeout_ms,
                  max_attempts: f.max_attempts,
                  backoff_ms: f.backoff_ms,
                  enabled: f.enabled,
                }}
              />
            </section>
            <section class="card">
              <h2>Triggers</h2>
              {triggers.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="triggers">
                      <thead>
                        <tr>
                          <th>Table</th>
                          <th>Operations</th>
                          <th>State</th>
                          <th></th>
                        </tr>
                      </thead>
                      <tbody>
                        {triggers.map((t) => (
                          <tr data-trigger={`${t.table_schema}.${t.table_name}`}>
                            <td data-label="Table">
                              <code>{t.table_schema}.{t.table_name}</code>
                            </td>
                            <td data-label="Operations">{t.ops.join(", ")}</td>
                            <td data-label="State">
                              <span class={`badge ${t.enabled ? "ok" : "stopped"}`}>
                                {t.enabled ? "enabled" : "disabled"}
                              </span>
                            </td>
                            <td class="actions">
                              <Island
                                component={ApiAction}
                                props={{
                                  label: t.enabled ? "Disable" : "Enable",
                                  method: "PATCH",
                                  url: `/api/admin/triggers/${t.id}`,
                                  body: { enabled: !t.enabled },
                                  variant: "quiet",
                                }}
                              />
                              <Island
                                component={ApiAction}
                                props={{
                                  label: "Detach",
                                  method: "DELETE",
                                  url: `/api/admin/triggers/${t.id}`,
                                  confirm: `Detach ${name} from ${t.table_schema}.${t.table_name}?`,
                                  variant: "danger",
                                }}
                              />
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : <p class="empty">Not attached to any table: it runs only from schedules and test runs.</p>}
              <h3>Attach to a table</h3>
              {tables.length
                ? (
                  <Island
                    component={ApiForm}
                    props={{
                      method: "POST",
                      url: "/api/admin/triggers",
                      submitLabel: "Attach",
                      testid: "attach-form",
                      fields: [
                        {
                          name: "function_name",
                          label: "Function",
                          type: "select",
                          options: [name],
                          value: name,
                        },
                        {
                          name: "table",
                          label: "Table",
                          type: "select",
                          options: tables.map((t) => t.t),
                          splitInto: ["table_schema", "table_name"],
                        },
                        {
                          name: "ops",
                          label: "Operations",
                          type: "checkboxes",
                          options: ["insert", "update", "delete"],
                          value: ["insert", "update", "delete"],
                        },
                      ],
                    }}
                  />
                )
                : <p class="empty">There is no table to attach to yet.</p>}
            </section>
            <section class="card">
              <h2>Test run</h2>
              <Island component={TestRun} props={{ functionName: name, sample }} />
            </section>
            <section class="card danger-zone">
              <h2>Delete</h2>
              <p class="muted">Deleting a function deletes its triggers, schedules and events.</p>
              <Island
                component={ApiAction}
                props={{
                  label: "Delete function",
                  method: "DELETE",
                  url: fnUrl,
                  confirm: `Delete ${name} with its triggers, schedules and events?`,
                  then: "/console/functions",
                  variant: "danger",
                }}
              />
            </section>
          </>
        ),
      });
    });
  },
};
