/** Small request helpers shared by the feed routes. */
import type { Context } from "hono";
import { getConnInfo } from "hono/deno";
import { WharfError } from "../../shared/errors.ts";

/** The request's JSON body, or a 400 that says it is not JSON. */
export async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new WharfError(400, "Cannot read the request body: it is not valid JSON", { code: "invalid_json" });
  }
}

/**
 * The client's address for rate limits: the socket's peer. `X-Forwarded-For` is not trusted (a client
 * could rotate it to dodge the limit). Behind the gateway every request has the gateway's address, and
 * the limit still holds per user name.
 */
export function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
}
