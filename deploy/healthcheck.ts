/**
 * The container health probe, compiled to its own small binary (`wharf-healthcheck`) because the image
 * has no shell and no curl: it asks the process's `/healthz` on the loopback and exits 0 when it
 * answers 2xx, 1 otherwise, with one line on stderr saying why.
 *
 * The URL is the first argument, else `HEALTHCHECK_URL`, else `http://127.0.0.1:<port>/healthz` with
 * the port from `OPS_PORT` (workers) or `WEB_PORT` (web) — the variables the process itself listens
 * by, so one `HEALTHCHECK` line serves every process of the image.
 */

/** The URL to probe, from the arguments and the environment. */
export function probeUrl(args: string[], env: Record<string, string | undefined>): string {
  if (args[0]) return args[0];
  if (env.HEALTHCHECK_URL) return env.HEALTHCHECK_URL;
  const port = env.OPS_PORT || env.WEB_PORT || env.GATEWAY_PORT || "8000";
  return `http://127.0.0.1:${port}/healthz`;
}

/** Asks `url` once; resolves to an exit code and a reason (never a body, which could be large). */
export async function probe(url: string, timeoutMs = 3_000): Promise<{ code: 0 | 1; reason: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
    await res.body?.cancel();
    return res.ok ? { code: 0, reason: `healthy (${res.status})` } : {
      code: 1,
      reason: `unhealthy: ${res.status}`,
    };
  } catch (e) {
    const reason = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${timeoutMs} ms`
      : (e as Error).message;
    return { code: 1, reason: `unreachable: ${reason}` };
  }
}

if (import.meta.main) {
  const url = probeUrl(Deno.args, Deno.env.toObject());
  const timeout = Number(Deno.env.get("HEALTHCHECK_TIMEOUT_MS") ?? 3_000);
  const { code, reason } = await probe(url, Number.isFinite(timeout) && timeout > 0 ? timeout : 3_000);
  if (code !== 0) console.error(`${new URL(url).pathname} ${reason}`);
  Deno.exit(code);
}
