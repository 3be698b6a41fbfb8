/**
 * The OpenAPI 3.1 document of the image-feed API, generated from the zod schemas the handlers validate
 * with (`z.toJSONSchema`), and a plain reference page that renders it on the server (no script).
 */
import { Hono } from "hono";
import { z } from "zod";
import {
  CreateFeedForm,
  ErrorBody,
  Feed,
  FeedPage,
  LoginBody,
  PatchFeedBody,
  RefreshBody,
  RegisterBody,
  Thumbnail,
  ThumbnailPage,
  ThumbnailStatus,
  Tokens,
  User,
} from "../../feed/schemas.ts";

const NAMED = {
  RegisterBody,
  LoginBody,
  RefreshBody,
  User,
  Tokens,
  ThumbnailStatus,
  Feed,
  FeedPage,
  CreateFeedForm,
  PatchFeedBody,
  Thumbnail,
  ThumbnailPage,
  Error: ErrorBody,
};

const ref = (name: keyof typeof NAMED) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: keyof typeof NAMED) => ({ "application/json": { schema: ref(name) } });
const err = (description: string) => ({ description, content: json("Error") });
const bearer = [{ bearer: [] }];
const pageParams = [
  { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 100, default: 20 } },
  {
    name: "cursor",
    in: "query",
    schema: { type: "string" },
    description: "next_cursor of the previous page",
  },
];
const idParam = [{ name: "id", in: "path", required: true, schema: { type: "string", pattern: "^\\d+$" } }];

let cached: Record<string, unknown> | undefined;

/** Builds (once) the OpenAPI document. */
export function openApiDocument(): Record<string, unknown> {
  if (cached) return cached;
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(NAMED)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    io: "input",
    unrepresentable: "any",
    uri: (id) => `#/components/schemas/${id}`,
  }) as { schemas: Record<string, Record<string, unknown>> };
  for (const s of Object.values(schemas)) {
    delete s.$schema;
    delete s.$id; // the component key names it; a fragment-only $id confuses some tools
  }
  cached = {
    openapi: "3.1.0",
    info: {
      title: "wharf image feed API",
      version: "1.0.0",
      description: "Users, feeds with images on S3, and thumbnails made by imgproc.",
    },
    components: {
      schemas,
      securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
    },
    paths: {
      "/api/users": {
        post: {
          summary: "Register a user",
          requestBody: { required: true, content: json("RegisterBody") },
          responses: {
            201: { description: "Registered", content: json("User") },
            400: err("Invalid"),
            409: err("Taken"),
          },
        },
      },
      "/api/users/login": {
        post: {
          summary: "Log in with a username or email and the password",
          requestBody: { required: true, content: json("LoginBody") },
          responses: {
            200: { description: "Tokens", content: json("Tokens") },
            401: err("Invalid credentials"),
            429: err("Too many attempts"),
          },
        },
      },
      "/api/users/refresh": {
        post: {
          summary: "Trade a refresh token for new tokens (the old one is used up)",
          requestBody: { required: true, content: json("RefreshBody") },
          responses: { 200: { description: "Tokens", content: json("Tokens") }, 401: err("Invalid token") },
        },
      },
      "/api/users/logout": {
        post: {
          summary: "Revoke every refresh token of the user",
          security: bearer,
          responses: { 200: { description: "Revoked" } },
        },
      },
      "/api/users/me": {
        get: {
          summary: "The current user",
          security: bearer,
          responses: { 200: { description: "User", content: json("User") }, 401: err("Not logged in") },
        },
      },
      "/api/feeds": {
        get: {
          summary: "List feeds, newest first",
          parameters: pageParams,
          responses: { 200: { description: "A page", content: json("FeedPage") }, 400: err("Bad cursor") },
        },
        post: {
          summary: "Create a feed from an image and a caption",
          security: bearer,
          requestBody: {
            required: true,
            content: { "multipart/form-data": { schema: ref("CreateFeedForm") } },
          },
          responses: {
            201: { description: "Created", content: json("Feed") },
            401: err("Not logged in"),
            413: err("Too large"),
            415: err("Not an image"),
          },
        },
      },
      "/api/feeds/{id}": {
        get: {
          summary: "One feed, with a signed URL of its image",
          parameters: idParam,
          responses: { 200: { description: "Feed", content: json("Feed") }, 404: err("No such feed") },
        },
        patch: {
          summary: "Change the caption (owner only)",
          security: bearer,
          parameters: idParam,
          requestBody: { required: true, content: json("PatchFeedBody") },
          responses: { 200: { description: "Feed", content: json("Feed") }, 403: err("Not the owner") },
        },
        delete: {
          summary: "Delete a feed and its image (owner only); imgproc removes the thumbnail",
          security: bearer,
          parameters: idParam,
          responses: { 204: { description: "Deleted" }, 403: err("Not the owner") },
        },
      },
      "/api/feeds/{id}/thumbnail": {
        get: {
          summary: "Redirect to the thumbnail, or 404 with its status while pending or failed",
          parameters: idParam,
          responses: { 302: { description: "Redirect to the image" }, 404: err("Not ready") },
        },
      },
      "/api/thumbnails": {
        get: {
          summary: "Every ready thumbnail, newest first",
          parameters: pageParams,
          responses: { 200: { description: "A page", content: json("ThumbnailPage") } },
        },
      },
    },
  };
  return cached;
}

const escape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** The reference page: every operation with its summary, and the schemas as JSON. */
export function referencePage(doc = openApiDocument()): string {
  const paths = doc.paths as Record<string, Record<string, { summary: string; responses: object }>>;
  const ops = Object.entries(paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([m, op]) =>
      `<tr><td><code>${m.toUpperCase()}</code></td><td><code>${escape(path)}</code></td>` +
      `<td>${escape(op.summary)}</td><td>${Object.keys(op.responses).join(", ")}</td></tr>`
    )
  );
  const schemas = (doc.components as { schemas: Record<string, unknown> }).schemas;
  return `<!doctype html><html><head><meta charset="utf-8"><title>wharf image feed API</title>
<style>body{font:15px system-ui;margin:2rem auto;max-width:70rem}td{padding:.3rem .6rem;border-bottom:1px solid #ddd}
pre{background:#f5f5f5;padding:1rem;overflow:auto}</style></head><body>
<h1>wharf image feed API</h1><p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a></p>
<table><tr><th>method</th><th>path</th><th>what</th><th>responses</th></tr>${ops.join("")}</table>
<h2>Schemas</h2>${
    Object.entries(schemas).map(([name, s]) =>
      `<h3 id="${escape(name)}">${escape(name)}</h3><pre>${escape(JSON.stringify(s, null, 2))}</pre>`
    ).join("")
  }</body></html>`;
}

/** `/api/openapi.json` and `/api/docs`. */
export function openApiRoutes(): Hono {
  const app = new Hono();
  app.get("/openapi.json", (c) => c.json(openApiDocument()));
  app.get("/docs", (c) => c.html(referencePage()));
  return app;
}
