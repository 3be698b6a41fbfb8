/**
 * Admin API for the image feed's moderation, mounted at `/api/admin/feed`: list users and feeds, delete a
 * feed, disable or enable a user. Behind the admin check like every admin route, so each change is in the
 * audit log with the operator who made it.
 *
 * Deleting a feed removes its row first (it leaves every page at once: the feeds' change trigger drops the
 * web processes' page caches), then its image when the feed's S3 client is configured; the object's
 * removal event makes imgproc delete the thumbnail, as when the owner deletes it. Disabling a user sets
 * `disabled_at` (the feed API then refuses its logins, refreshes and access tokens) and revokes its
 * refresh tokens.
 */
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv, AppOptions } from "../../../app.tsx";
import type { Sql } from "../../../../shared/db.ts";
import { WharfError } from "../../../../shared/errors.ts";
import type { FeedDeps } from "../../../feed/deps.ts";

const Id = z.string().regex(/^\d{1,18}$/, "must be a numeric id");

const ListQuery = z.object({
  /** Only users whose name or email contains this (case-insensitive). */
  q: z.string().max(254).optional(),
  user: Id.optional(),
  /** Keyset paging: rows with a smaller id. */
  before: Id.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});

function needSql(o: AppOptions): Sql {
  if (!o.sql) throw new WharfError(503, "Cannot moderate the feed as no database is configured");
  return o.sql;
}

/** One user as the console lists it. */
export interface FeedUserRow {
  id: string;
  username: string;
  email: string;
  created_at: Date;
  disabled_at: Date | null;
  feeds: number;
}

/** One feed as the console lists it. */
export interface FeedRow {
  id: string;
  user_id: string;
  username: string;
  caption: string;
  content_type: string;
  size_bytes: number;
  thumbnail_status: string;
  created_at: Date;
}

/** Users, newest first, with their feed counts. */
export function listFeedUsers(sql: Sql, q: z.output<typeof ListQuery>): Promise<FeedUserRow[]> {
  const like = q.q ? `%${q.q.replace(/[\\%_]/g, (m) => "\\" + m)}%` : undefined;
  return sql<FeedUserRow[]>`
    select u.id::text, u.username, u.email, u.created_at, u.disabled_at,
           (select count(*) from app.feeds f where f.user_id = u.id)::int as feeds
      from app.users u
     where true
       ${like ? sql`and (u.username ilike ${like} or u.email ilike ${like})` : sql``}
       ${q.before ? sql`and u.id < ${q.before}` : sql``}
     order by u.id desc limit ${q.limit}`;
}

/** Feeds, newest first, of everyone or of one user. */
export function listFeeds(sql: Sql, q: z.output<typeof ListQuery>): Promise<FeedRow[]> {
  return sql<FeedRow[]>`
    select f.id::text, f.user_id::text, u.username, f.caption, f.content_type, f.size_bytes::float8 as size_bytes,
           f.thumbnail_status, f.created_at
      from app.feeds f join app.users u on u.id = f.user_id
     where true
       ${q.user ? sql`and f.user_id = ${q.user}` : sql``}
       ${q.before ? sql`and f.id < ${q.before}` : sql``}
     order by f.id desc limit ${q.limit}`;
}

/** Parses `?q=&user=&before=&limit=` (shared with the console's Feed page). */
export function feedListQuery(query: Record<string, string>): z.output<typeof ListQuery> {
  return ListQuery.parse(query);
}

/**
 * Builds the feed moderation routes. `feed` gives the feed API's clients when the web process has them
 * (they are built after the admin routes), so a deleted feed's image is removed from the media bucket.
 */
export function feedAdminRoutes(options: AppOptions, feed: () => FeedDeps | undefined = () => undefined) {
  const r = new Hono<AppEnv>();

  r.get("/users", async (c) => c.json(await listFeedUsers(needSql(options), feedListQuery(c.req.query()))));
  r.get("/feeds", async (c) => c.json(await listFeeds(needSql(options), feedListQuery(c.req.query()))));

  r.delete("/feeds/:id", async (c) => {
    const sql = needSql(options);
    const id = Id.parse(c.req.param("id"));
    const [row] = await sql<
      { media_key: string }[]
    >`delete from app.feeds where id = ${id} returning media_key`;
    if (!row) throw new WharfError(404, "Cannot delete the feed as it does not exist");
    const deps = feed();
    if (deps) {
      await deps.s3.send(new DeleteObjectCommand({ Bucket: deps.cfg.FEED_MEDIA_BUCKET, Key: row.media_key }))
        .catch((e) =>
          deps.log.error("media delete failed; object left behind", { error: e, key: row.media_key })
        );
    }
    return c.body(null, 204);
  });

  const setDisabled = (disabled: boolean) => async (c: import("hono").Context<AppEnv>) => {
    const sql = needSql(options);
    const id = Id.parse(c.req.param("id"));
    const rows = await sql.begin(async (tx) => {
      const rows = await tx`
        update app.users set disabled_at = ${disabled ? sql`coalesce(disabled_at, now())` : null}
         where id = ${id} returning id::text, username, disabled_at`;
      if (rows.length && disabled) {
        await tx`update app.refresh_tokens set revoked_at = now() where user_id = ${id} and revoked_at is null`;
      }
      return rows;
    });
    if (!rows.length) throw new WharfError(404, "Cannot change the user as it does not exist");
    return c.json(rows[0]);
  };
  r.post("/users/:id/disable", setDisabled(true));
  r.post("/users/:id/enable", setDisabled(false));

  return r;
}
