import { useState } from "preact/hooks";
import { api, errorText, useHydrated } from "./_api.ts";

/** Props of {@linkcode ApiAction}. */
export interface ApiActionProps {
  label: string;
  method: "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  body?: unknown;
  /** Asked before sending (a confirmation step for destructive or wide changes). */
  confirm?: string;
  /** Where to go afterwards: a URL, or the current page reloaded (default). */
  then?: string;
  variant?: "danger" | "quiet";
  testid?: string;
}

/**
 * One button that sends one change to the admin API (with the CSRF token), shows the server's error
 * next to it, and reloads the page on success. Disabled until hydrated: changes need JavaScript, reading
 * does not.
 */
export function ApiAction(p: ApiActionProps) {
  const hydrated = useHydrated();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const run = async () => {
    if (p.confirm && !globalThis.confirm(p.confirm)) return;
    setBusy(true);
    setError(undefined);
    const r = await api(p.method, p.url, p.body);
    if (r.ok) {
      if (p.then) location.href = p.then;
      else location.reload();
      return;
    }
    setBusy(false);
    setError(errorText(r));
  };
  return (
    <span class="api-action">
      <button
        type="button"
        class={p.variant ?? ""}
        disabled={!hydrated || busy}
        onClick={run}
        data-testid={p.testid}
      >
        {busy ? "…" : p.label}
      </button>
      {error && <span class="error" role="alert">{error}</span>}
    </span>
  );
}
