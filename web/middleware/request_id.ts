import type { Context, Next } from "hono";

/** Options for {@linkcode requestId}. */
export interface RequestIdOptions {
  /** Header read from the client and written on the response (default `x-request-id`). */
  header?: string;
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every request an id: the client's `x-request-id` when it is short and plain (so ids carry
 * across a proxy), otherwise a new UUID. The id is on `c.get("requestId")`, in the response header,
 * and in every error body, so a user's report can be matched to a log line.
 */
export function requestId(options: RequestIdOptions = {}) {
  const header = options.header ?? "x-request-id";
  return async function requestIdMiddleware(c: Context, next: Next) {
    const incoming = c.req.header(header);
    const id = incoming && SAFE_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", id);
    c.header(header, id);
    await next();
  };
}
