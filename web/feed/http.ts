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
 * The client's address for rate limits. By default the socket's peer: `X-Forwarded-For` is not trusted,
 * since a client could rotate it to dodge the limit. Behind a proxy (the gateway, a load balancer) every
 * request comes from the proxy, so with `trustProxy` the last `X-Forwarded-For` entry is used: the address
 * the proxy itself saw, which the client cannot forge past it.
 */
export function clientAddress(c: Context, trustProxy = false): string {
  if (trustProxy) {
    const last = c.req.header("x-forwarded-for")?.split(",").pop()?.trim();
    if (last) return last;
  }
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
}
