/** Test helper for the admin API: the web app on a test database, and a caller holding the admin token. */
import type { Sql } from "../../../../shared/db.ts";
import { createLogger } from "../../../../shared/log.ts";
import { createApp } from "../../../app.tsx";

/**
 * The app (admin token `tok`) and `call(method, path, body)` under `base`: a body is sent as JSON, or
 * as is when it is a string; the answer comes back parsed (null for 204).
 */
export function adminClient(sql: Sql, base = "/api/admin") {
  const app = createApp({ sql, adminToken: "tok", log: createLogger("web", { level: "error" }) });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await app.request(`${base}${path}`, {
      method,
      headers: { authorization: "Bearer tok", "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  };
  return { app, call };
}
