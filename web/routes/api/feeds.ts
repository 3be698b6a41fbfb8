/**
 * `/api/feeds` and `/api/thumbnails`: feeds are public to read; creating needs a user, and only the
 * owner may modify or delete (403 for anyone else).
 *
 * An upload is checked before anything is stored: the body limit (413) while it streams, then the type
 * by magic bytes (415). The row is written first and the object second, so the object's creation event
 * can never reach imgproc before the feed it belongs to exists.
 */
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { WharfError } from "../../../shared/errors.ts";
import { requireUser } from "../../feed/auth.ts";
import { decodeCursor, encodeCursor } from "../../feed/cursor.ts";
import { type FeedDeps, tokenSettings } from "../../feed/deps.ts";
import { jsonBody } from "../../feed/http.ts";
import { PageCache } from "../../feed/page_cache.ts";
import { IMAGE_TYPES, sniffImageType } from "../../feed/media.ts";
import { FeedIdParam, PageQuery, PatchFeedBody } from "../../feed/schemas.ts";

type Env = { Variables: { userId: string; requestId: string } };

type Row = Record<string, unknown>;

function showFeed(r: Row) {
  return {
    id: String(r.id),
    user_id: String(r.user_id),
    username: r.username as string,
    caption: r.caption as string,
    content_type: r.content_type as string,
    size_bytes: Number(r.size_bytes),
    thumbnail_status: r.thumbnail_status as "pending" | "ready" | "failed",
    thumbnail_url: `/api/feeds/${r.id}/thumbnail`,
    created_at: (r.created_at as Date).toISOString(),
    updated_at: (r.updated_at as Date).toISOString(),
  };
}

function pageQuery(c: { req: { query(): Record<string, string> } }) {
  const q = PageQuery.parse(c.req.query());
  return { limit: q.limit, after: q.cursor === undefined ? undefined : decodeCursor(q.cursor) };
}

/** The feed routes, mounted at `/api` (they own `/feeds` and `/thumbnails`). */
export function feedsRoutes(deps: FeedDeps): Hono<Env> {
  const { sql, s3, cfg, log } = deps;
  const auth = requireUser({ sql, tokens: tokenSettings(cfg) });
  const app = new Hono<Env>();
  const pages = new PageCache(cfg.FEED_PAGE_CACHE_MS);
  pages.listen(sql, log);

  const signed = (bucket: string, key: string) =>
    getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: key }), {
      expiresIn: cfg.FEED_SIGNED_URL_TTL_S,
    });
  const thumbnailUrl = (key: string) =>
    cfg.FEED_THUMBNAILS_BASE_URL
      ? Promise.resolve(cfg.FEED_THUMBNAILS_BASE_URL.replace(/\/$/, "") + "/" + encodeURI(key))
      : signed(cfg.FEED_THUMBNAILS_BUCKET, key);

  const loadFeed = async (id: string) => {
    const [row] = await sql`
      select f.*, u.username from app.feeds f join app.users u on u.id = f.user_id where f.id = ${id}`;
    if (!row) throw new WharfError(404, `Feed ${id} does not exist`, { code: "feed_not_found" });
    return row;
  };
  const ownFeed = async (id: string, userId: string) => {
    const row = await loadFeed(id);
    if (String(row.user_id) !== userId) {
      throw new WharfError(403, "Only the owner may change this feed", { code: "not_owner" });
    }
    return row;
  };

  app.get("/feeds", async (c) => {
    const { limit, after } = pageQuery(c);
    const cacheKey = `${limit}:${after ?? ""}`;
    const hit = pages.get(cacheKey);
    if (hit !== undefined) return c.body(hit, 200, { "content-type": "application/json" });
    const generation = pages.generation();
    const rows = after === undefined
      ? await sql`
          select f.id, f.user_id, u.username, f.caption, f.content_type, f.size_bytes, f.thumbnail_status,
                 f.created_at, f.updated_at
            from app.feeds f join app.users u on u.id = f.user_id
           order by f.id desc limit ${limit + 1}`
      : await sql`
          select f.id, f.user_id, u.username, f.caption, f.content_type, f.size_bytes, f.thumbnail_status,
                 f.created_at, f.updated_at
            from app.feeds f join app.users u on u.id = f.user_id
           where f.id < ${after}
           order by f.id desc limit ${limit + 1}`;
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(showFeed);
    const body = JSON.stringify({
      items,
      next_cursor: more ? encodeCursor(items[items.length - 1].id) : null,
    });
    pages.set(cacheKey, body, generation);
    return c.body(body, 200, { "content-type": "application/json" });
  });

  app.post(
    "/feeds",
    auth,
    bodyLimit({
      // The multipart envelope (boundaries, the caption) on top of the file itself.
      maxSize: cfg.FEED_MAX_UPLOAD_BYTES + 64 * 1024,
      onError: () => {
        throw new WharfError(
          413,
          `Cannot accept the upload: the limit is ${cfg.FEED_MAX_UPLOAD_BYTES} bytes`,
        );
      },
    }),
    async (c) => {
      let form: Record<string, unknown>;
      try {
        form = await c.req.parseBody();
      } catch {
        throw new WharfError(400, "Cannot read the upload: send multipart/form-data with image and caption", {
          code: "invalid_form",
        });
      }
      const image = form.image;
      if (!(image instanceof File)) {
        throw new WharfError(400, "Cannot create a feed without an image file (form field image)", {
          code: "validation_failed",
        });
      }
      const caption = PatchFeedBody.shape.caption.parse(typeof form.caption === "string" ? form.caption : "");
      if (image.size > cfg.FEED_MAX_UPLOAD_BYTES) {
        throw new WharfError(
          413,
          `Cannot accept the upload: the limit is ${cfg.FEED_MAX_UPLOAD_BYTES} bytes`,
        );
      }
      const bytes = new Uint8Array(await image.arrayBuffer());
      const type = sniffImageType(bytes);
      if (!type) {
        throw new WharfError(415, "Cannot accept the upload: it is not a JPEG, PNG, WebP or GIF image", {
          code: "unsupported_media_type",
        });
      }
      const userId = c.get("userId");
      const key = `u/${userId}/${crypto.randomUUID()}.${IMAGE_TYPES[type]}`;
      const [row] = await sql`
        insert into app.feeds (user_id, caption, media_key, content_type, size_bytes)
        values (${userId}, ${caption}, ${key}, ${type}, ${bytes.length})
        returning id`;
      try {
        await s3.send(
          new PutObjectCommand({ Bucket: cfg.FEED_MEDIA_BUCKET, Key: key, Body: bytes, ContentType: type }),
        );
      } catch (e) {
        await sql`delete from app.feeds where id = ${row.id as string}`;
        log.error("media upload failed", { error: e, key });
        throw new WharfError(502, "Cannot store the image right now; try again", { code: "storage_failed" });
      }
      pages.clear();
      return c.json(showFeed(await loadFeed(String(row.id))), 201);
    },
  );

  app.get("/feeds/:id", async (c) => {
    const { id } = FeedIdParam.parse(c.req.param());
    const row = await loadFeed(id);
    return c.json({
      ...showFeed(row),
      image_url: await signed(cfg.FEED_MEDIA_BUCKET, row.media_key as string),
    });
  });

  app.patch("/feeds/:id", auth, async (c) => {
    const { id } = FeedIdParam.parse(c.req.param());
    const body = PatchFeedBody.parse(await jsonBody(c));
    await ownFeed(id, c.get("userId"));
    await sql`update app.feeds set caption = ${body.caption}, updated_at = now() where id = ${id}`;
    pages.clear();
    return c.json(showFeed(await loadFeed(id)));
  });

  app.delete("/feeds/:id", auth, async (c) => {
    const { id } = FeedIdParam.parse(c.req.param());
    const row = await ownFeed(id, c.get("userId"));
    await sql`delete from app.feeds where id = ${id}`;
    pages.clear();
    // The object's removal event makes imgproc delete the thumbnail.
    await s3.send(new DeleteObjectCommand({ Bucket: cfg.FEED_MEDIA_BUCKET, Key: row.media_key as string }))
      .catch((e) => log.error("media delete failed; object left behind", { error: e, key: row.media_key }));
    return c.body(null, 204);
  });

  app.get("/feeds/:id/thumbnail", async (c) => {
    const { id } = FeedIdParam.parse(c.req.param());
    const row = await loadFeed(id);
    if (row.thumbnail_status !== "ready" || !row.thumbnail_key) {
      throw new WharfError(404, `The thumbnail of feed ${id} is ${row.thumbnail_status}`, {
        code: "thumbnail_not_ready",
        details: { thumbnail_status: row.thumbnail_status },
      });
    }
    return c.redirect(await thumbnailUrl(row.thumbnail_key as string), 302);
  });

  app.get("/thumbnails", async (c) => {
    const { limit, after } = pageQuery(c);
    const rows = after === undefined
      ? await sql`select id, thumbnail_key from app.feeds where thumbnail_status = 'ready'
                   order by id desc limit ${limit + 1}`
      : await sql`select id, thumbnail_key from app.feeds where thumbnail_status = 'ready' and id < ${after}
                   order by id desc limit ${limit + 1}`;
    const more = rows.length > limit;
    const page = rows.slice(0, limit);
    const items = await Promise.all(page.map(async (r) => ({
      feed_id: String(r.id),
      url: await thumbnailUrl(r.thumbnail_key as string),
    })));
    return c.json({ items, next_cursor: more ? encodeCursor(String(page[page.length - 1].id)) : null });
  });

  return app;
}
