/**
 * What the islands share: calls to the admin API with the session's CSRF token, and short polling for
 * live updates. (Short polling rather than SSE: it needs no long-lived connection per tab, survives
 * proxies that buffer, and a missed poll is simply the next one.)
 */
import { useEffect, useRef, useState } from "preact/hooks";

/** The CSRF token the server put in the page's `<meta name="csrf-token">`. */
export function csrfToken(): string {
  return document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? "";
}

/** The outcome of {@linkcode api}: the JSON body, or the server's error message. */
export type ApiResult<T> = { ok: true; status: number; data: T } | {
  ok: false;
  status: number;
  error: string;
  details?: unknown;
};

/** Sends a change to the server as JSON with the CSRF token; never throws. */
export async function api<T = unknown>(method: string, url: string, body?: unknown): Promise<ApiResult<T>> {
  try {
    const res = await fetch(url, {
      method,
      headers: {
        accept: "application/json",
        "x-csrf-token": csrfToken(),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (res.ok) return { ok: true, status: res.status, data: data as T };
    const e = (data as { error?: { message?: string; details?: unknown } })?.error;
    return { ok: false, status: res.status, error: e?.message ?? `HTTP ${res.status}`, details: e?.details };
  } catch (e) {
    return { ok: false, status: 0, error: `The server cannot be reached: ${(e as Error).message}` };
  }
}

/** Formats validation details (`[{ path, message }]`) after the message. */
export function errorText(r: { error: string; details?: unknown }): string {
  if (!Array.isArray(r.details)) return r.error;
  const parts = (r.details as { path?: string; message?: string }[])
    .map((d) => (d.path ? `${d.path}: ` : "") + (d.message ?? ""));
  return parts.length ? `${r.error}: ${parts.join("; ")}` : r.error;
}

/** What {@linkcode usePoll} reports. */
export interface Poll<T> {
  data: T;
  /** The last poll's error, cleared by the next success. */
  error?: string;
  /** When the data was last refreshed (ms), 0 before the first poll. */
  updatedAt: number;
  refresh(): void;
}

/**
 * Polls `url` every `intervalMs` while the page is visible, starting from the server-rendered
 * `initial`. A changed `url` (new filters) polls at once; no `url`, no polling.
 */
export function usePoll<T>(url: string | undefined, intervalMs: number, initial: T): Poll<T> {
  const [state, setState] = useState<{ data: T; error?: string; updatedAt: number }>({
    data: initial,
    updatedAt: 0,
  });
  const tick = useRef<() => void>(() => {});
  useEffect(() => {
    if (!url) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      clearTimeout(timer);
      if (stopped) return;
      if (document.visibilityState !== "hidden") {
        try {
          const res = await fetch(url, {
            headers: { accept: "application/json" },
            credentials: "same-origin",
          });
          if (!res.ok) {
            const b = await res.json().catch(() => ({}));
            throw new Error(b?.error?.message ?? `HTTP ${res.status}`);
          }
          const data = await res.json() as T;
          if (!stopped) setState({ data, updatedAt: Date.now() });
        } catch (e) {
          if (!stopped) setState((s) => ({ ...s, error: (e as Error).message }));
        }
      }
      if (!stopped) timer = setTimeout(run, intervalMs);
    };
    tick.current = run;
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [url, intervalMs]);
  return { ...state, refresh: () => tick.current() };
}

/** True once the island runs in the browser (false during server rendering). */
export function useHydrated(): boolean {
  const [h, setH] = useState(false);
  useEffect(() => setH(true), []);
  return h;
}
