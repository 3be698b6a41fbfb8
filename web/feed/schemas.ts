/**
 * The zod schemas of the image-feed API: they validate requests and are the source of the OpenAPI
 * document (`z.toJSONSchema`), so the document cannot drift from what the handlers accept.
 */
import { z } from "zod";

/** `POST /api/users`. */
export const RegisterBody = z.object({
  email: z.email().max(254).transform((e) => e.toLowerCase()),
  username: z.string().regex(/^[A-Za-z0-9_.-]{3,32}$/, "3 to 32 letters, digits, dot, dash or underscore"),
  password: z.string().min(10, "at least 10 characters").max(1024),
}).meta({ id: "RegisterBody" });

/** `POST /api/users/login`: a username or an email, and the password. */
export const LoginBody = z.object({
  username: z.string().min(1).max(254).optional(),
  email: z.string().min(1).max(254).optional(),
  password: z.string().min(1).max(1024),
}).refine((b) => Boolean(b.username) !== Boolean(b.email), {
  message: "give either username or email",
}).meta({ id: "LoginBody" });

/** `POST /api/users/refresh` and `/logout`. */
export const RefreshBody = z.object({ refresh_token: z.string().min(20).max(200) }).meta({
  id: "RefreshBody",
});

/** A user as the API shows it (never the hash). */
export const User = z.object({
  id: z.string(),
  email: z.string(),
  username: z.string(),
  created_at: z.string(),
}).meta({ id: "User" });

/** The login and refresh answer. */
export const Tokens = z.object({
  access_token: z.string(),
  refresh_token: z.string(),
  token_type: z.literal("Bearer"),
  expires_in: z.number().int(),
}).meta({ id: "Tokens" });

/** A thumbnail's state. */
export const ThumbnailStatus = z.enum(["pending", "ready", "failed"]).meta({ id: "ThumbnailStatus" });

/** A feed as the API shows it. */
export const Feed = z.object({
  id: z.string(),
  user_id: z.string(),
  username: z.string(),
  caption: z.string(),
  content_type: z.string(),
  size_bytes: z.number().int(),
  thumbnail_status: ThumbnailStatus,
  thumbnail_url: z.string().describe("The thumbnail endpoint (a redirect to the image once ready)"),
  image_url: z.string().optional().describe("A signed URL of the original image (single feed only)"),
  created_at: z.string(),
  updated_at: z.string(),
}).meta({ id: "Feed" });

/** `POST /api/feeds` (multipart). */
export const CreateFeedForm = z.object({
  caption: z.string().max(2200).default(""),
  image: z.any().describe("The image file: JPEG, PNG, WebP or GIF (decided by its bytes)"),
}).meta({ id: "CreateFeedForm" });

/** `PATCH /api/feeds/:id`. */
export const PatchFeedBody = z.object({ caption: z.string().max(2200) }).strict().meta({
  id: "PatchFeedBody",
});

/** A feed id in a path. */
export const FeedIdParam = z.object({ id: z.string().regex(/^\d{1,18}$/, "must be a feed id") });

/** `?limit=&cursor=` of the list endpoints. */
export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(100).optional(),
});

/** A page of feeds. */
export const FeedPage = z.object({ items: z.array(Feed), next_cursor: z.string().nullable() }).meta({
  id: "FeedPage",
});

/** A thumbnail in `GET /api/thumbnails`. */
export const Thumbnail = z.object({
  feed_id: z.string(),
  url: z.string(),
}).meta({ id: "Thumbnail" });

/** A page of thumbnails. */
export const ThumbnailPage = z.object({ items: z.array(Thumbnail), next_cursor: z.string().nullable() }).meta(
  {
    id: "ThumbnailPage",
  },
);

/** The error body every endpoint uses. */
export const ErrorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.unknown().optional(),
    request_id: z.string().optional(),
  }),
}).meta({ id: "Error" });
