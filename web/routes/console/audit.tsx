import { z } from "zod";
import { stamp } from "../../components/format.ts";
import type { ConsolePage } from "./page.ts";

interface AuditRow {
  id: string;
  at: Date;
  admin: string;
  via: string;
  action: string;
  target: string | null;
  status: number | null;
  details: Record<string, unknown>;
}

/** The audit log: every change an operator made, newest first; read-only. */
export const auditPage: ConsolePage = {
  href: "/console/audit",
  title: "Audit log",
  routes(r, kit) {
    r.get("/audit", async (c) => {
      const sql = kit.sql();
      const q = z.object({
        admin: z.string().max(64).optional().catch(undefined).transform((v) => v || undefined),
        before: z.coerce.number().int().positive().optional().catch(undefined),
      }).parse(c.req.query());
      const rows = await sql<AuditRow[]>`
        select id::text, at, admin, via, action, target, status, details from control.console_audit
         where true ${q.admin ? sql`and admin = ${q.admin}` : sql``}
                    ${q.before ? sql`and id < ${q.before}` : sql``}
         order by id desc limit 200`;
      return kit.render(c, {
        title: "Audit log",
        active: "/console/audit",
        body: (
          <>
            <h1>Audit log</h1>
            <form class="filters card" method="get" action="/console/audit">
              <label class="field">
                <span>Admin</span>
                <input name="admin" value={q.admin ?? ""} placeholder="name or api-token" />
              </label>
              <div class="actions">
                <button type="submit">Filter</button>
                <a href="/console/audit">Clear</a>
              </div>
            </form>
            <section class="card">
              {rows.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="audit">
                      <thead>
                        <tr>
                          <th>When (UTC)</th>
                          <th>Who</th>
                          <th>Via</th>
                          <th>What</th>
                          <th>Status</th>
                          <th>Details</th>
                        </tr>
                      </thead>
                      <tbody>
                        {rows.map((a) => (
                          <tr data-action={a.action}>
                            <td data-label="When">{stamp(a.at)}</td>
                            <td data-label="Who">{a.admin}</td>
                            <td data-label="Via">{a.via}</td>
                            <td data-label="What">
                              <code>{a.action}</code>
                              {a.target && <span class="muted small target">{a.target}</span>}
                            </td>
                            <td data-label="Status" class={a.status && a.status >= 400 ? "bad" : ""}>
                              {a.status}
                            </td>
                            <td data-label="Details" class="small">
                              {Object.keys(a.details).length
                                ? (
                                  <details>
                                    <summary>body</summary>
                                    <pre>{JSON.stringify(a.details, null, 2)}</pre>
                                  </details>
                                )
                                : ""}
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : (
                  <p class="empty">
                    Nothing recorded yet: every change made through the console or the admin API shows here.
                  </p>
                )}
              {rows.length === 200 && <a href={`/console/audit?before=${rows.at(-1)!.id}`}>Older</a>}
            </section>
          </>
        ),
      });
    });
  },
};
