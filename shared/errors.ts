/**
 * The one error type of wharf, and its mapping to an HTTP response.
 *
 * Code that knows *why* something failed throws a {@linkcode WharfError} with an HTTP status and a stable
 * machine-readable `code`; the web error handler and the workers' ops endpoints turn any thrown value into
 * the same JSON body with {@linkcode errorResponseBody}. Unknown errors become a 500 whose message does not
 * leak internals (the details go to the log, not the client).
 */
import { z } from "zod";
import { redactString } from "./log.ts";

/** Options for {@linkcode WharfError}. */
export interface WharfErrorOptions {
  /** A stable, machine-readable code such as `validation_failed` or `not_found`. */
  code?: string;
  /** Structured details safe to show the caller (field errors, the compiler's message…). */
  details?: unknown;
  /** The underlying error, kept for logs. */
  cause?: unknown;
}

const DEFAULT_CODES: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  422: "unprocessable",
  429: "too_many_requests",
  500: "internal",
  502: "bad_gateway",
  503: "unavailable",
};

/** An error with an HTTP status, a stable code, and details safe to return to the caller. */
export class WharfError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details?: unknown;

  constructor(status: number, message: string, options: WharfErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WharfError";
    this.status = status;
    this.code = options.code ?? DEFAULT_CODES[status] ?? "error";
    this.details = options.details;
  }
}

/** The JSON body every wharf HTTP error has. */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown; request_id?: string };
}

/** Turns zod issues into `[{ path: "a.b", message }]`, the shape clients get for validation errors. */
export function zodIssues(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
}

/**
 * Maps any thrown value to a status and a body. Status-carrying errors from other libraries (Hono's
 * `HTTPException`) keep their status; zod errors become 400 with the field issues.
 */
export function errorResponseBody(err: unknown, requestId?: string): { status: number; body: ErrorBody } {
  let status = 500;
  let code = "internal";
  let message = "Internal server error";
  let details: unknown;
  if (err instanceof WharfError) {
    ({ status, code, details } = err);
    message = err.message;
  } else if (err instanceof z.ZodError) {
    status = 400;
    code = "validation_failed";
    message = "Request validation failed";
    details = zodIssues(err);
  } else if (err instanceof Error && typeof (err as { status?: unknown }).status === "number") {
    status = (err as unknown as { status: number }).status;
    code = DEFAULT_CODES[status] ?? "error";
    message = err.message || code;
  }
  const body: ErrorBody = { error: { code, message: redactString(message) } };
  if (details !== undefined) body.error.details = details;
  if (requestId) body.error.request_id = requestId;
  return { status, body };
}
