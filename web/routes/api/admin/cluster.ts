/**
 * Admin API for discovered clusters, mounted at `/api/admin`: `GET /cluster` (members and recent
 * history, from the control tables the discovery workers write), `GET /cluster/history`, and
 * `POST /cluster/switchover`, which asks the leader's Patroni REST API for a switchover with the
 * cluster's REST credentials and records who asked.
 *
 * The web process reads the REST credentials from `PATRONI_API_USER` / `PATRONI_API_PASSWORD`, or derives
 * the password from `POSTGRES_SUPERUSER_PASSWORD` the same way the workers do; `PATRONI_API_CA_FILE` names
 * the cluster's CA certificate when the REST API is on TLS (`SSL_ENABLED`).
 */
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv, AppOptions } from "../../../app.tsx";
import type { Sql } from "../../../../shared/db.ts";
import { WharfError } from "../../../../shared/errors.ts";
import { restApiPassword } from "../../../../workers/discovery/config.ts";
import { type ApiAuth, postPatroni } from "../../../../workers/discovery/patroni_api.ts";
import { recordHistory } from "../../../../workers/discovery/status.ts";

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, "must be letters, digits, _ . -");

const ClusterQuery = z.object({
  scope: Name.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
});

const HistoryQuery = ClusterQuery.extend({ before: z.coerce.number().int().optional() });

const SwitchoverBody = z.object({
  scope: Name,
  /** The member to promote; Patroni picks the healthiest replica when omitted. */
  candidate: Name.optional(),
});

function needSql(o: AppOptions): Sql {
  if (!o.sql) throw new WharfError(503, "Cannot serve cluster status as no database is configured");
  return o.sql;
}

async function restAuth(env: Record<string, string> | undefined): Promise<ApiAuth | undefined> {
  const e = env ?? {};
  if (!e.PATRONI_API_PASSWORD && !e.POSTGRES_SUPERUSER_PASSWORD) return undefined;
  return {
    username: e.PATRONI_API_USER || "patroni",
    password: await restApiPassword({
      PATRONI_API_PASSWORD: e.PATRONI_API_PASSWORD || undefined,
      POSTGRES_SUPERUSER_PASSWORD: e.POSTGRES_SUPERUSER_PASSWORD ?? "",
    }),
  };
}

/** Builds the cluster admin routes. */
export function clusterAdminRoutes(options: AppOptions): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/cluster", async (c) => {
    const sql = needSql(options);
    const q = ClusterQuery.parse(c.req.query());
    const members = await sql`
      select scope, name, host, port, role, state, timeline, lag_bytes, lsn, seen_at
        from control.cluster_members
       where ${q.scope ? sql`scope = ${q.scope}` : sql`true`}
       order by scope, (role = 'leader') desc, name`;
    const state = await sql`
      select scope, leader, timeline, updated_at from control.cluster_state
       where ${q.scope ? sql`scope = ${q.scope}` : sql`true`} order by scope`;
    const history = await sql`
      select id, scope, kind, member, detail, actor, at from control.cluster_history
       where ${q.scope ? sql`scope = ${q.scope}` : sql`true`}
       order by id desc limit ${q.limit}`;
    return c.json({ members, clusters: state, history });
  });

  r.get("/cluster/history", async (c) => {
    const sql = needSql(options);
    const q = HistoryQuery.parse(c.req.query());
    return c.json(
      await sql`
        select id, scope, kind, member, detail, actor, at from control.cluster_history
         where ${q.scope ? sql`scope = ${q.scope}` : sql`true`}
           ${q.before ? sql`and id < ${q.before}` : sql``}
         order by id desc limit ${q.limit}`,
    );
  });

  r.post("/cluster/switchover", async (c) => {
    const sql = needSql(options);
    const b = SwitchoverBody.parse(await c.req.json().catch(() => ({})));
    const auth = await restAuth(options.env);
    if (!auth) {
      throw new WharfError(
        503,
        "Cannot request a switchover as no Patroni REST API credentials are configured",
      );
    }
    const [leader] = await sql`
      select name, api_url from control.cluster_members
       where scope = ${b.scope} and role = 'leader' and api_url is not null
       order by seen_at desc limit 1`;
    if (!leader) throw new WharfError(404, "Cannot request a switchover as the cluster has no known leader");
    if (b.candidate) {
      const [cand] = await sql`select role from control.cluster_members
                                where scope = ${b.scope} and name = ${b.candidate}`;
      if (!cand) throw new WharfError(400, "Cannot switch over to a member the cluster does not have");
      if (cand.role === "leader") {
        throw new WharfError(409, "Cannot switch over to the member that already leads");
      }
    }
    let base: string;
    try {
      base = new URL(leader.api_url as string).origin;
    } catch {
      throw new WharfError(502, "Cannot reach the leader as its REST API address is not a URL");
    }
    // Recorded before asking, so that the workers, which may see the new leader before Patroni answers,
    // know the leader change was planned; Patroni's answer is added to the same row afterwards.
    const actor = c.get("admin") ?? "unknown";
    const id = await recordHistory(sql, {
      scope: b.scope,
      kind: "switchover_requested",
      member: b.candidate,
      detail: { leader: leader.name, candidate: b.candidate ?? null },
      actor,
    });
    const answered = async (detail: { status: number; answer: string }) => {
      await sql`update control.cluster_history set detail = detail || ${sql.json(detail)} where id = ${id}`;
    };
    let answer: { status: number; text: string };
    const caFile = options.env?.PATRONI_API_CA_FILE;
    const client = caFile ? Deno.createHttpClient({ caCerts: [await Deno.readTextFile(caFile)] }) : undefined;
    try {
      answer = await postPatroni(base, "/switchover", auth, {
        leader: leader.name,
        ...(b.candidate ? { candidate: b.candidate } : {}),
      }, { client });
    } catch (e) {
      await answered({ status: 0, answer: (e as Error).name });
      throw new WharfError(502, `Cannot reach the leader's REST API: ${(e as Error).name}`);
    } finally {
      client?.close();
    }
    await answered({ status: answer.status, answer: answer.text });
    if (answer.status >= 200 && answer.status < 300) {
      return c.json({ ok: true, leader: leader.name, candidate: b.candidate ?? null, message: answer.text });
    }
    if (answer.status === 401 || answer.status === 403) {
      throw new WharfError(502, "Cannot switch over: the leader refused the REST API credentials");
    }
    throw new WharfError(
      answer.status === 412 || answer.status === 400 ? 409 : 502,
      `Cannot switch over: ${answer.text}`,
    );
  });

  return r;
}
