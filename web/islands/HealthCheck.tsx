import { useState } from "preact/hooks";

/** Props of {@linkcode HealthCheck}. */
export interface HealthCheckProps {
  /** The endpoint to ask, such as `/healthz`. */
  url: string;
}

type Result = { state: "idle" } | { state: "checking" } | { state: "done"; ok: boolean; text: string };

/**
 * A button that asks the web process for its health and shows the answer: the smallest island that
 * proves server rendering and hydration work together.
 */
export function HealthCheck({ url }: HealthCheckProps) {
  const [result, setResult] = useState<Result>({ state: "idle" });
  const check = async () => {
    setResult({ state: "checking" });
    try {
      const res = await fetch(url, { headers: { accept: "application/json" } });
      const body = await res.json() as { status?: string; uptime_s?: number };
      setResult({
        state: "done",
        ok: res.ok,
        text: `${body.status ?? res.status}${body.uptime_s !== undefined ? ` · up ${body.uptime_s} s` : ""}`,
      });
    } catch (e) {
      setResult({ state: "done", ok: false, text: `unreachable: ${(e as Error).message}` });
    }
  };
  return (
    <div class="health-check">
      <button type="button" onClick={check} disabled={result.state === "checking"} data-testid="health-check">
        Check web health
      </button>
      <output
        aria-live="polite"
        data-testid="health-result"
        class={result.state === "done" && !result.ok ? "bad" : ""}
      >
        {result.state === "idle"
          ? "not checked yet"
          : result.state === "checking"
          ? "checking…"
          : result.text}
      </output>
    </div>
  );
}
